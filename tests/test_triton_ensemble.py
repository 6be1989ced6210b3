"""The cpu-tier ensembles on a real tritonserver, through real tritonclient gRPC and HTTP clients.

Ground truth is NeMo's own SALM on the same tiny checkpoint (`reference`). The tiny model's text
is random-weight noise: what is checked is that Triton produces exactly NeMo's tokens.
"""

from __future__ import annotations

import queue
import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from transformers import AutoTokenizer
from tritonclient.utils import InferenceServerException

from canary_qwen.prompt import chat_prompt_ids, messages_json, qa_messages
from canary_qwen.tokenizer import IM_END_ID
from tests.fixtures.audio import Utterance
from tests.fixtures.audio.speech import read_audio
from tests.fixtures.words import MAX_TEST_WER_MANY, assert_words

MAX_NEW_TOKENS = 24
SAMPLE_RATE = 16000
BATCHED_MODELS = ("preprocessor", "encoder", "adapter")


@pytest.fixture(scope="module")
def speech(utterances: list[Utterance]) -> list[np.ndarray]:
    audios = []
    for utterance in utterances[:4]:
        samples, rate = read_audio(utterance.path)
        assert rate == SAMPLE_RATE and samples.ndim == 1
        audios.append(samples.astype(np.float32))
    return audios


@pytest.fixture(scope="module")
def mixed_lengths(speech: list[np.ndarray]) -> list[np.ndarray]:
    """16 clips from 0.3 s to the longest utterance: whole utterances and their heads."""
    shortest = SAMPLE_RATE * 3 // 10
    return [audio[: max(shortest, int(audio.size * share))] for audio in speech for share in (1.0, 0.7, 0.45, 0.2)]


@pytest.fixture(scope="module")
def expected(reference: Any, speech: list[np.ndarray]) -> list[tuple[str, list[int]]]:
    return [reference.transcribe(audio, MAX_NEW_TOKENS) for audio in speech]


@pytest.fixture(scope="module")
def grpc(triton_server: Any) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


def _audio_inputs(module: Any, audio: np.ndarray, max_new_tokens: int = MAX_NEW_TOKENS, dtype: str = "FP32") -> list[Any]:
    data = audio.reshape(1, -1)
    tensor = module.InferInput("AUDIO", list(data.shape), dtype)
    tensor.set_data_from_numpy(data)
    budget = module.InferInput("MAX_NEW_TOKENS", [1, 1], "INT32")
    budget.set_data_from_numpy(np.array([[max_new_tokens]], dtype=np.int32))
    return [tensor, budget]


def _ids(result: Any) -> list[int]:
    ids = result.as_numpy("OUTPUT_IDS")
    assert ids.shape[:2] == (1, 1)
    return ids[0, 0].tolist()


def _text(result: Any) -> bytes:
    text = result.as_numpy("TEXT")
    return b"" if text is None else bytes(text.reshape(-1)[0])


def _stream_ids(results: list[Any]) -> list[int]:
    """A stream's ids in order; the final response is empty or, when Triton's ensemble merges
    the end flag into the last step's output, holds the last chunk."""
    return [i for r in results if r.as_numpy("OUTPUT_IDS") is not None for i in _ids(r)]


def _metrics(triton_server: Any) -> dict[tuple[str, str], float]:
    """{(metric, model): value} for Triton's per-model counters."""
    body = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    values = {}
    for match in re.finditer(r'^(nv_inference_\w+)\{model="(\w+)",version="1"\} (\S+)$', body, re.M):
        values[(match[1], match[2])] = float(match[3])
    return values


def test_grpc_and_http_give_the_reference_tokens(
    triton_server: Any,
    grpc: grpcclient.InferenceServerClient,
    speech: list[np.ndarray],
    expected: list[tuple[str, list[int]]],
) -> None:
    http = httpclient.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    try:
        for audio, (text, ids) in zip(speech, expected):
            assert ids, "the reference generated nothing: the comparison would be empty"
            over_grpc = grpc.infer("canary_qwen", _audio_inputs(grpcclient, audio))
            over_http = http.infer("canary_qwen", _audio_inputs(httpclient, audio))
            assert _ids(over_grpc) == ids
            assert _ids(over_http) == ids
            assert _text(over_grpc) == _text(over_http) == text.encode("utf-8")
    finally:
        http.close()


def test_transcripts_hold_the_spoken_words(
    grpc: grpcclient.InferenceServerClient, speech: list[np.ndarray], utterances: list[Utterance]
) -> None:
    heard = [_text(grpc.infer("canary_qwen", _audio_inputs(grpcclient, audio))).decode() for audio in speech]
    said = " ".join(u.text for u in utterances[: len(speech)])
    assert_words(said, " ".join(heard), MAX_TEST_WER_MANY)  # one WER over all the sentences


def test_concurrent_requests_match_one_at_a_time_and_are_batched(
    triton_server: Any, grpc: grpcclient.InferenceServerClient, mixed_lengths: list[np.ndarray]
) -> None:
    one_at_a_time = [_ids(grpc.infer("canary_qwen", _audio_inputs(grpcclient, audio))) for audio in mixed_lengths]
    before = _metrics(triton_server)

    def call(audio: np.ndarray) -> list[int]:
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            return _ids(client.infer("canary_qwen", _audio_inputs(grpcclient, audio)))
        finally:
            client.close()

    with ThreadPoolExecutor(len(mixed_lengths)) as pool:
        together = list(pool.map(call, mixed_lengths))
    after = _metrics(triton_server)
    assert together == one_at_a_time
    for model in BATCHED_MODELS:
        count = after[("nv_inference_count", model)] - before[("nv_inference_count", model)]
        executions = after[("nv_inference_exec_count", model)] - before[("nv_inference_exec_count", model)]
        assert count == len(mixed_lengths)
        assert executions < count, f"{model}: {count} requests in {executions} executions, no batching"


class _Stream:
    """Collects one decoupled gRPC stream's responses."""

    def __init__(self) -> None:
        self.responses: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def __call__(self, result: Any, error: Any) -> None:
        self.responses.put((result, error))

    def collect(self, timeout: float = 120) -> list[Any]:
        results = []
        while True:
            result, error = self.responses.get(timeout=timeout)
            if error is not None:
                raise error
            results.append(result)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return results


def _stream(triton_server: Any, model: str, inputs: list[Any]) -> list[Any]:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    stream = _Stream()
    try:
        client.start_stream(callback=stream)
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        return stream.collect()
    finally:
        client.stop_stream()
        client.close()


def test_streaming_fragments_concatenate_to_the_full_text(
    triton_server: Any, grpc: grpcclient.InferenceServerClient, speech: list[np.ndarray]
) -> None:
    audio = speech[2]
    whole = grpc.infer("canary_qwen", _audio_inputs(grpcclient, audio))
    responses = _stream(triton_server, "canary_qwen_stream", _audio_inputs(grpcclient, audio))
    partials = [r for r in responses if r.as_numpy("TEXT") is not None]
    assert len(partials) >= 3, "tokens arrive as several partial responses"
    assert all(len(_ids(r)) == 1 for r in partials), "one token per response on the cpu tier"
    assert b"".join(_text(r) for r in responses) == _text(whole)
    assert _stream_ids(responses) == _ids(whole)


def _chat_inputs(messages: bytes, stream: bool, max_new_tokens: int = MAX_NEW_TOKENS) -> list[Any]:
    values = {
        "MESSAGES": (np.array([[messages]], dtype=np.object_), "BYTES"),
        "MAX_NEW_TOKENS": (np.array([[max_new_tokens]], dtype=np.int32), "INT32"),
        "ENABLE_THINKING": (np.array([[True]]), "BOOL"),  # NeMo's qwen format leaves thinking on
        "STREAM": (np.array([[stream]]), "BOOL"),
    }
    inputs = []
    for name, (value, dtype) in values.items():
        tensor = grpcclient.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _llm_inputs(prompt: np.ndarray) -> list[Any]:
    values = {
        "input_ids": prompt,
        "input_lengths": np.array([[prompt.shape[1]]], dtype=np.int32),
        "request_output_len": np.array([[MAX_NEW_TOKENS]], dtype=np.int32),
        "end_id": np.array([[IM_END_ID]], dtype=np.int32),
    }
    inputs = []
    for name, value in values.items():
        tensor = grpcclient.InferInput(name, list(value.shape), "INT32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def test_llm_mode_answers_with_the_base_model(triton_server: Any, reference: Any, artifacts_dir: Path) -> None:
    question, transcript = "Summarize this in one sentence.", "The meeting moved to Tuesday afternoon."
    [(_, ids)] = reference.answer_batch([(question, transcript)], MAX_NEW_TOKENS)
    assert ids
    # The text Qwen3's own tokenizer gives those ids: it keeps <think> and </think> (not special),
    # which NeMo's ids_to_text drops; the gateway strips think blocks itself.
    tokenizer = AutoTokenizer.from_pretrained(str(artifacts_dir / "llm_base"))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    messages = messages_json(qa_messages(question, transcript))
    whole = _stream(triton_server, "canary_qwen_chat", _chat_inputs(messages, stream=False))
    assert len([r for r in whole if r.as_numpy("TEXT") is not None]) == 1, "STREAM false: one answer"
    assert _stream_ids(whole) == ids
    assert b"".join(_text(r) for r in whole) == text.encode("utf-8")
    streamed = _stream(triton_server, "canary_qwen_chat", _chat_inputs(messages, stream=True))
    assert len([r for r in streamed if r.as_numpy("TEXT") is not None]) > 2
    assert b"".join(_text(r) for r in streamed) == text.encode("utf-8")
    # The check can tell LoRA on from off: the ASR weights (`llm`) answer the same prompt differently.
    prompt = np.array([chat_prompt_ids(tokenizer, qa_messages(question, transcript), True)], dtype=np.int32)
    with_lora = grpcclient.InferenceServerClient(triton_server.grpc_url).infer("llm", _llm_inputs(prompt))
    assert with_lora.as_numpy("output_ids")[0, 0].tolist() != ids


def test_bad_requests_fail_alone(
    triton_server: Any,
    grpc: grpcclient.InferenceServerClient,
    speech: list[np.ndarray],
    expected: list[tuple[str, list[int]]],
) -> None:
    too_long = np.zeros(SAMPLE_RATE * 41, dtype=np.float32)
    bad = {
        "empty": (_audio_inputs(grpcclient, np.zeros(0, dtype=np.float32)), "empty"),
        "too long": (_audio_inputs(grpcclient, too_long), "maximum is 40 s"),
        "not finite": (_audio_inputs(grpcclient, np.full(8000, np.nan, dtype=np.float32)), "NaN"),
        "wrong dtype": (_audio_inputs(grpcclient, speech[0].astype(np.float64), dtype="FP64"), "FP64"),
        "no budget": (_audio_inputs(grpcclient, speech[0], max_new_tokens=0), "MAX_NEW_TOKENS"),
    }
    good = [_audio_inputs(grpcclient, audio) for audio in speech]
    done: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
    before = _metrics(triton_server)
    # Fired at once (async), so the preprocessor's dynamic batcher sees good and bad together.
    for key, (inputs, _) in bad.items():
        grpc.async_infer("canary_qwen", inputs, callback=lambda result, error, key=key: done.put((key, result, error)))
    for i, inputs in enumerate(good):
        grpc.async_infer("canary_qwen", inputs, callback=lambda result, error, i=i: done.put((f"good{i}", result, error)))
    outcomes = {}
    for _ in range(len(bad) + len(good)):
        key, result, error = done.get(timeout=120)
        outcomes[key] = (result, error)
    for key, (_, pattern) in bad.items():
        result, error = outcomes[key]
        assert result is None and isinstance(error, InferenceServerException), key
        assert re.search(pattern, error.message()), f"{key}: {error.message()}"
    for i, (_, ids) in enumerate(expected):
        result, error = outcomes[f"good{i}"]
        assert error is None, error
        assert _ids(result) == ids
    after = _metrics(triton_server)
    # Every request but the wrong dtype (refused by Triton itself) reached the preprocessor, in batches.
    reached = len(good) + len(bad) - 1
    runs = after[("nv_inference_exec_count", "preprocessor")] - before[("nv_inference_exec_count", "preprocessor")]
    assert runs < reached, f"{reached} requests in {runs} preprocessor runs: nothing was batched"
