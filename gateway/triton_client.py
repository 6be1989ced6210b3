"""Non-blocking Triton client for the three ensembles (tritonclient.grpc.aio).

Every call records latency and errors, and turns gRPC failures into typed API
errors: input the model refuses -> 400, unreachable -> 503, deadline -> 504, anything
else -> 502. A caller that gets cancelled (client disconnect) cancels its RPC with it.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferResult
from tritonclient.utils import InferenceServerException

from canary_qwen.special_tokens import NON_TEXT_IDS
from gateway.errors import APIError, BadRequestError, UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from gateway.metrics import GatewayMetrics
from gateway.settings import TritonSettings
from gateway.triton_replicas import Replica, ReplicaPool, status_of

log = logging.getLogger(__name__)

# UNAVAILABLE also covers a full Triton queue ("Exceeds maximum queue size").
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "StatusCode.RESOURCE_EXHAUSTED"}
_RETRY_AFTER = {"Retry-After": "1"}
# A call refused with this status is tried once more on another replica (a dead or full server).
_RETRYABLE = "StatusCode.UNAVAILABLE"
_TIMEOUT = {"StatusCode.DEADLINE_EXCEEDED"}
# Less deadline than this left: answer 504 without calling Triton (see TritonClient._remaining_s).
_MIN_CALL_S = 0.05
_INVALID = {"StatusCode.INVALID_ARGUMENT"}
# Triton's ensemble prefixes the failing step's message with "in ensemble 'NAME', ".
_INPUT_ERROR_TAG = re.compile(r"(?:in ensemble '[^']*', )?\[(?P<code>[a-z_]+)\] (?P<reason>.*)", re.DOTALL)


@dataclass
class TokenTally:
    """Generated tokens of one streamed request, counted as responses arrive."""

    count: int = 0


@dataclass(frozen=True)
class AsrResult:
    text: str
    token_ids: list[int]


def _message_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.details() or ""
    if isinstance(exc, InferenceServerException):
        return exc.message() or ""
    return str(exc)


def to_api_error(exc: BaseException, model: str) -> APIError:
    """Map a Triton/gRPC failure to the error the client sees."""
    status = status_of(exc)
    message = _message_of(exc)
    # The python models tag bad input `[code] message` (a stream's error has no status).
    tagged = _INPUT_ERROR_TAG.fullmatch(message)
    if tagged or status in _INVALID:
        code = tagged.group("code") if tagged else "invalid_argument"
        reason = tagged.group("reason") if tagged else message
        return BadRequestError(f"the model refused the request: {reason}", code=code)
    if status in _TIMEOUT:
        return UpstreamTimeoutError(f"Triton did not answer {model} in time")
    if status in _UNAVAILABLE:
        return UpstreamUnavailableError("Triton is unavailable or overloaded", headers=_RETRY_AFTER)
    return UpstreamError(f"Triton failed on {model}: {message}")


def _tensor(name: str, array: np.ndarray, datatype: str) -> InferInput:
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def audio_inputs(samples: np.ndarray, max_new_tokens: int) -> list[InferInput]:
    audio = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    return [
        _tensor("AUDIO", audio, "FP32"),
        _tensor("MAX_NEW_TOKENS", np.array([[max_new_tokens]], dtype=np.int32), "INT32"),
    ]


def chat_inputs(
    messages: Sequence[dict[str, str]], max_new_tokens: int, enable_thinking: bool, stream: bool
) -> list[InferInput]:
    payload = json.dumps(list(messages), ensure_ascii=False).encode("utf-8")
    return [
        _tensor("MESSAGES", np.array([[payload]], dtype=np.object_), "BYTES"),
        _tensor("MAX_NEW_TOKENS", np.array([[max_new_tokens]], dtype=np.int32), "INT32"),
        _tensor("ENABLE_THINKING", np.array([[enable_thinking]], dtype=np.bool_), "BOOL"),
        _tensor("STREAM", np.array([[stream]], dtype=np.bool_), "BOOL"),
    ]


def text_bytes(result: InferResult) -> bytes:
    """The TEXT output of one response as raw bytes (b'' when absent)."""
    array = result.as_numpy("TEXT")
    if array is None or array.size == 0:
        return b""
    value = array.reshape(-1)[0]
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def token_ids(result: InferResult) -> list[int]:
    """Generated ids of the (single) sequence, without padding or the end id."""
    ids = result.as_numpy("OUTPUT_IDS")
    if ids is None:
        return []
    flat = ids.reshape(-1) if ids.ndim < 3 else ids[0, 0]
    return [int(i) for i in flat if i >= 0 and i not in NON_TEXT_IDS]


def _is_final(result: InferResult) -> bool:
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


class TritonClient:
    """Calls to Triton over its replicas (gateway.triton_replicas): round-robin, and a call
    refused as UNAVAILABLE is tried once more on another replica."""

    def __init__(self, settings: TritonSettings, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._pool = ReplicaPool(
            settings, metrics, [settings.asr_model, settings.asr_stream_model, settings.chat_model]
        )

    @property
    def pool(self) -> ReplicaPool:
        return self._pool

    async def close(self) -> None:
        await self._pool.close()

    async def models_ready(self, models: Sequence[str]) -> tuple[bool, str]:
        """(ready, reason): at least one replica ready with every model loaded."""
        return await self._pool.check(models)

    async def model_parameters(self, model: str) -> dict[str, str]:
        """A loaded model's config `parameters` (what the export recorded there, gateway/model_facts.py),
        from one replica (all of them serve the same repository)."""
        replica = await self._replica(model, set())
        response = await replica.client.get_model_config(model, client_timeout=self._settings.connect_timeout_s)
        return {key: value.string_value for key, value in response.config.parameters.items()}

    async def _replica(self, model: str, tried: set[str]) -> Replica:
        replica = await self._pool.pick(exclude=tried)
        if replica is None:
            self._metrics.triton_errors.labels(model=model, status="no_replica").inc()
            raise UpstreamUnavailableError("no Triton replica is reachable", headers=_RETRY_AFTER)
        return replica

    def _retry_elsewhere(self, exc: BaseException, replica: Replica, tried: set[str], model: str) -> bool:
        """Whether a failed attempt goes to another replica; marks an unavailable one out."""
        if status_of(exc) != _RETRYABLE:
            return False
        self._pool.mark_failed(replica, f"a call failed: {_message_of(exc) or _RETRYABLE}")
        tried.add(replica.address)
        if len(tried) > 1 or not any(r.address not in tried for r in self._pool.replicas):
            return False
        self._metrics.triton_retries.labels(model=model).inc()
        log.warning("Triton replica %s unavailable for %s; retrying on another replica", replica.address, model)
        return True

    def _remaining_s(self, started: float, model: str) -> float:
        """What is left of one call's deadline (a retry does not extend it). A call with almost
        nothing left is not sent: it could only time out, and a gRPC call cancelled right after
        it arrives can crash tritonserver before 24.12 (server#7368), the embedded 2.51 included."""
        remaining = self._settings.infer_timeout_s - (time.perf_counter() - started)
        if remaining < _MIN_CALL_S:
            raise UpstreamTimeoutError(f"Triton did not answer {model} in time")
        return remaining

    async def _infer(self, model: str, inputs: list[InferInput]) -> InferResult:
        started = time.perf_counter()
        tried: set[str] = set()
        try:
            while True:
                replica = await self._replica(model, tried)
                timeout_s = self._remaining_s(started, model)
                try:
                    with self._pool.track(replica, model):
                        return await replica.client.infer(model, inputs, client_timeout=timeout_s)
                except (InferenceServerException, grpc.aio.AioRpcError) as exc:
                    if self._retry_elsewhere(exc, replica, tried, model):
                        continue
                    self._metrics.triton_errors.labels(model=model, status=status_of(exc) or "error").inc()
                    raise to_api_error(exc, model) from exc
        finally:
            self._metrics.triton_latency.labels(model=model).observe(time.perf_counter() - started)

    async def transcribe(self, samples: np.ndarray, max_new_tokens: int) -> AsrResult:
        result = await self._infer(self._settings.asr_model, audio_inputs(samples, max_new_tokens))
        return AsrResult(
            text=text_bytes(result).decode("utf-8", errors="replace"), token_ids=token_ids(result)
        )

    async def chat_prompt_tokens(
        self, messages: Sequence[dict[str, str]], max_new_tokens: int, enable_thinking: bool
    ) -> int:
        """Tokens of the prompt the chat ensemble builds for these messages, from the
        ensemble's own first step (same tokenizer and template), for `usage`."""
        inputs = chat_inputs(messages, max_new_tokens, enable_thinking, False)[:3]  # without STREAM
        result = await self._infer(self._settings.chat_prompt_model, inputs)
        lengths = result.as_numpy("input_lengths")
        if lengths is None or lengths.size != 1:
            raise UpstreamError(f"{self._settings.chat_prompt_model} returned no input_lengths")
        return int(lengths.reshape(-1)[0])

    def transcribe_stream(self, samples: np.ndarray, max_new_tokens: int) -> AsyncIterator[str]:
        model = self._settings.asr_stream_model
        return self._stream(model, audio_inputs(samples, max_new_tokens))

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        max_new_tokens: int,
        enable_thinking: bool,
        tally: TokenTally | None = None,
    ) -> AsyncIterator[str]:
        model = self._settings.chat_model
        return self._stream(model, chat_inputs(messages, max_new_tokens, enable_thinking, True), tally)

    async def _stream(
        self, model: str, inputs: list[InferInput], tally: TokenTally | None = None
    ) -> AsyncIterator[str]:
        """Text pieces of one decoupled request, decoded incrementally (UTF-8 safe).

        One gRPC stream per request: the request side closes after the single
        request, and Triton ends the stream once the final response is sent. A stream
        refused before its first response is retried on another replica; one that has
        already answered never is (its text may be out to the client).
        """

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs}

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        started = time.perf_counter()
        tried: set[str] = set()
        answered = False
        try:
            while True:
                replica = await self._replica(model, tried)
                responses = replica.client.stream_infer(requests(), stream_timeout=self._remaining_s(started, model))
                try:
                    with self._pool.track(replica, model):
                        async for result, error in responses:
                            if error is not None:
                                raise error
                            assert result is not None
                            answered = True
                            if tally is not None:  # each streamed response carries only its new tokens
                                tally.count += len(token_ids(result))
                            text = decoder.decode(text_bytes(result))
                            if text:
                                yield text
                            if _is_final(result):
                                break
                except (InferenceServerException, grpc.aio.AioRpcError) as exc:
                    if not answered and self._retry_elsewhere(exc, replica, tried, model):
                        continue
                    raise
                finally:
                    responses.cancel()
                break
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        except (InferenceServerException, grpc.aio.AioRpcError) as exc:
            self._metrics.triton_errors.labels(model=model, status=status_of(exc) or "error").inc()
            raise to_api_error(exc, model) from exc
        finally:
            self._metrics.triton_latency.labels(model=model).observe(time.perf_counter() - started)
