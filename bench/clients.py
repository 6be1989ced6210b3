"""The two request paths under test: the gateway over HTTP, the Triton ensemble over gRPC."""

from __future__ import annotations

import numpy as np
import httpx
from tritonclient.grpc import InferInput
from tritonclient.grpc.aio import InferenceServerClient

from bench.corpus import Clip
from canary_qwen.manifest import SERVED_MODEL_ID as MODEL_ID
from gateway.settings import ModelSettings

ENSEMBLE = "canary_qwen"


class GatewayClient:
    """POST /v1/audio/transcriptions (multipart, response_format json), as the OpenAI SDK does."""

    def __init__(self, base_url: str, concurrency: int, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    async def transcribe(self, filename: str, data: bytes, content_type: str) -> str:
        response = await self._client.post(
            "/v1/audio/transcriptions",
            files={"file": (filename, data, content_type)},
            data={"model": MODEL_ID, "response_format": "json"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:500]}")
        return str(response.json()["text"])

    async def clip(self, clip: Clip) -> int:
        await self.transcribe(f"{clip.name}.wav", clip.wav_bytes, "audio/wav")
        return 0  # the OpenAI response carries no token count

    async def aclose(self) -> None:
        await self._client.aclose()


class TritonEnsembleClient:
    """The `canary_qwen` ensemble straight over gRPC (tritonclient aio), same samples as the gateway."""

    def __init__(self, grpc_url: str, model: ModelSettings, timeout_s: float) -> None:
        self._client = InferenceServerClient(url=grpc_url)
        self._model = model  # the budget the gateway would ask for the same clip
        self._timeout_s = timeout_s

    async def clip(self, clip: Clip) -> int:
        audio = np.ascontiguousarray(clip.samples, dtype=np.float32).reshape(1, -1)
        inputs = [InferInput("AUDIO", list(audio.shape), "FP32"), InferInput("MAX_NEW_TOKENS", [1, 1], "INT32")]
        inputs[0].set_data_from_numpy(audio)
        inputs[1].set_data_from_numpy(np.array([[self._model.asr_budget(audio.size)]], dtype=np.int32))
        result = await self._client.infer(ENSEMBLE, inputs, client_timeout=self._timeout_s)
        ids = result.as_numpy("OUTPUT_IDS")
        return 0 if ids is None else int(np.count_nonzero(ids >= 0))

    async def aclose(self) -> None:
        await self._client.close()
