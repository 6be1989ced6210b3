"""OpenAI's audio surface that the gateway honours, tried with the official `openai` SDK
against the real gateway and Triton: chat `usage` and `refusal`, `stream_options.include_usage`,
`chunking_strategy` (auto / server_vad), and OpenAI's 400 `audio_too_short`."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from canary_qwen.prompt import chat_prompt_ids, parse_messages
from tests.fixtures.audio import SPEECH_RATE, Utterance
from tests.fixtures.audio.speech import spoken_speech, write_wav
from tests.fixtures.gateway import GATEWAY_API_KEY, MODEL_ID, GatewayProcess, run_gateway, wait_ready

AUTH = {"Authorization": f"Bearer {GATEWAY_API_KEY}"}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def lean_gateway(triton_server, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The real gateway with a 3-token budget per audio piece (the noise would run to 256)."""
    env = {"GATEWAY_TRITON__URL": triton_server.grpc_url, "GATEWAY_AUTH__API_KEYS": f'["{GATEWAY_API_KEY}"]',
           "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": "3"}
    with run_gateway(env, tmp_path_factory.mktemp("surface-gateway") / "gateway.log") as gateway:
        wait_ready(gateway.base_url)
        yield gateway


@pytest.fixture(scope="module")
def gateway_server(lean_gateway: GatewayProcess) -> str:
    return lean_gateway.base_url


@pytest.fixture(scope="module")
def openai_client(gateway_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_server}/v1", api_key=GATEWAY_API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def prompt_tokenizer(model_repository_dir: Path):  # type: ignore[no-untyped-def]
    """The tokenizer the chat ensemble's first step loads (its own copy in the repository)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_repository_dir / "chat_prompt_builder" / "1" / "tokenizer"))


# ------------------------------------------------------------------ chat usage and refusal


def test_chat_reports_usage_and_null_refusal(openai_client: openai.OpenAI, prompt_tokenizer) -> None:  # type: ignore[no-untyped-def]
    completion = openai_client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=5)
    usage = completion.usage
    assert usage is not None
    expected_prompt = len(chat_prompt_ids(prompt_tokenizer, parse_messages(json.dumps(MESSAGES)), False))
    assert usage.prompt_tokens == expected_prompt
    assert 1 <= usage.completion_tokens <= 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.choices[0].message.refusal is None
    if completion.choices[0].finish_reason == "length":
        assert usage.completion_tokens == 5
    longer = openai_client.chat.completions.create(
        model=MODEL_ID, max_tokens=2,
        messages=[*MESSAGES[:1], {"role": "user", "content": "Name three colours, then three animals, please."}],
    )
    assert longer.usage is not None and longer.usage.prompt_tokens > usage.prompt_tokens


def test_chat_body_has_refusal_key(gateway_server: str) -> None:
    body = httpx.post(f"{gateway_server}/v1/chat/completions", headers=AUTH, timeout=120,
                      json={"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 2}).json()
    message = body["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None  # required by OpenAI's schema
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_streamed_usage_with_include_usage(openai_client: openai.OpenAI) -> None:
    whole = openai_client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=6)
    chunks = list(openai_client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True},
    ))
    *content, last = chunks
    assert last.choices == [] and last.usage is not None and whole.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # the same greedy answer
    assert all(c.usage is None and len(c.choices) == 1 for c in content)
    assert content[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert "".join(c.choices[0].delta.content or "" for c in content) == whole.choices[0].message.content


def test_stream_without_include_usage_sends_no_usage_key(gateway_server: str) -> None:
    body = {"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{gateway_server}/v1/chat/completions", headers=AUTH, json=body,
                      timeout=120) as response:
        raw = response.read().decode()
    events = [json.loads(b[len("data: "):]) for b in raw.split("\n\n") if b.startswith("data: {")]
    assert events and all("usage" not in e for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}


# ------------------------------------------------------------------ chunking_strategy


@pytest.fixture(scope="module")
def padded_clip(utterances: list[Utterance], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An utterance after 1.5 s of silence, and where its speech starts."""
    lead = np.zeros(int(1.5 * SPEECH_RATE), dtype=np.float32)
    audio = np.concatenate([lead, spoken_speech(utterances[2].path), np.zeros(SPEECH_RATE, dtype=np.float32)])
    return write_wav(tmp_path_factory.mktemp("chunking") / "padded.wav", audio, SPEECH_RATE), 1.5


def test_chunking_strategy_auto_and_server_vad(openai_client: openai.OpenAI, padded_clip: tuple[Path, float]) -> None:
    path, speech_start = padded_clip
    auto = openai_client.audio.transcriptions.create(file=path, model=MODEL_ID, chunking_strategy="auto")
    default = openai_client.audio.transcriptions.create(file=path, model=MODEL_ID)
    assert auto.text == default.text
    strategy = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
    vad = openai_client.audio.transcriptions.create(file=path, model=MODEL_ID, chunking_strategy=strategy)
    assert isinstance(vad.text, str)
    # prefix_padding_ms moves where the first timed segment starts (into the leading silence)
    plain = openai_client.audio.transcriptions.create(file=path, model=MODEL_ID, response_format="verbose_json")
    padded = openai_client.audio.transcriptions.create(
        file=path, model=MODEL_ID, response_format="verbose_json",
        chunking_strategy={"type": "server_vad", "prefix_padding_ms": 600},
    )
    first_plain, first_padded = (plain.segments or [])[0], (padded.segments or [])[0]
    assert abs(first_plain.start - speech_start) <= 0.2
    assert first_padded.start == pytest.approx(first_plain.start - 0.6, abs=0.05)


@pytest.mark.parametrize(
    ("strategy", "param"),
    [
        ({"type": "server_vad", "threshold": 1.5}, "chunking_strategy[threshold]"),
        ({"type": "server_vad", "silence_duration_ms": -5}, "chunking_strategy[silence_duration_ms]"),
        ({"type": "server_vad", "prefix_padding_ms": 100_000}, "chunking_strategy[prefix_padding_ms]"),
        ({"type": "client_vad"}, "chunking_strategy[type]"),
        ({"type": "server_vad", "mystery": 1}, "chunking_strategy[mystery]"),
        ("manual", "chunking_strategy"),
    ],
)
def test_bad_chunking_strategy_is_a_clear_400(openai_client: openai.OpenAI, utterances: list[Utterance],
                                              strategy: object, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.audio.transcriptions.create(file=utterances[0].path, model=MODEL_ID,
                                                  chunking_strategy=strategy)  # type: ignore[arg-type]
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param, error
    assert "chunking_strategy" in error["message"]


# ------------------------------------------------------------------ audio_too_short


def _wav_bytes(samples: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.full(samples, 0.1, dtype=np.float32), SPEECH_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_audio_under_a_tenth_of_a_second_is_refused(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.audio.transcriptions.create(file=("tiny.wav", _wav_bytes(8), "audio/wav"), model=MODEL_ID)
    error = info.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"], error["type"]) == ("audio_too_short", "file", "invalid_request_error")
    assert "0.1 seconds" in error["message"]
    short_part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(_wav_bytes(800)).decode(),
                                                          "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as chat_info:
        openai_client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": [short_part]}])
    assert isinstance(chat_info.value.body, dict) and chat_info.value.body["code"] == "audio_too_short"
    assert chat_info.value.body["param"] == "messages.0.content.0"
    # exactly 0.1 s is long enough
    result = openai_client.audio.transcriptions.create(file=("ok.wav", _wav_bytes(1600), "audio/wav"), model=MODEL_ID)
    assert isinstance(result.text, str)
