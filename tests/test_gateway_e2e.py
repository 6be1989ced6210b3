"""End to end: the official openai SDK -> gateway (uvicorn) -> real tritonserver
running the cpu-tier ensembles of the tiny checkpoint.

The tiny checkpoint has random weights, so its text is noise: these tests check
everything but the words (formats, parsers, timestamps, durations, ordering,
streaming protocol, consistency between endpoints, errors, metrics)."""

from __future__ import annotations

import base64
import html
import io
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import srt
import webvtt

from tests.fixtures.audio import EncodeAudio, HostileInput, LongRecording, Utterance
from tests.fixtures.gateway import GATEWAY_API_KEY, MODEL_ID, GatewayProcess, run_gateway, wait_ready
from tests.fixtures.words import MAX_TEST_WER_MANY, assert_words

AUTH = {"Authorization": f"Bearer {GATEWAY_API_KEY}"}
CUE_SECONDS = 7.0
# Container/codec padding (AAC priming, MP3 frames) moves durations a little.
DURATION_TOLERANCE_S = 0.15


@pytest.fixture(scope="module")
def utterance(utterances: list[Utterance]) -> Utterance:
    return utterances[1]  # "Never be afraid to tell the world who you are." (a few seconds)


@pytest.fixture(scope="module")
def lean_gateway(triton_server, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A gateway generating 3 tokens per piece: for tests of inputs and timing, not of text
    length (timed formats cost one model call per cue; the noise would run to 256 tokens)."""
    env = {"GATEWAY_TRITON__URL": triton_server.grpc_url, "GATEWAY_AUTH__API_KEYS": f'["{GATEWAY_API_KEY}"]',
           "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": "3"}
    with run_gateway(env, tmp_path_factory.mktemp("lean-gateway") / "gateway.log") as gateway:
        wait_ready(gateway.base_url)
        yield gateway


@pytest.fixture(scope="module")
def lean_client(lean_gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{lean_gateway.base_url}/v1", api_key=GATEWAY_API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def reference_text(openai_client: openai.OpenAI, utterance: Utterance) -> str:
    return openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID).text


def test_models_listed(openai_client: openai.OpenAI) -> None:
    assert [m.id for m in openai_client.models.list().data] == [MODEL_ID]
    assert openai_client.models.retrieve(MODEL_ID).id == MODEL_ID


# ------------------------------------------------------------------ response formats


def test_json(openai_client: openai.OpenAI, utterance: Utterance, reference_text: str) -> None:
    result = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID, response_format="json",
                                                       language="en", temperature=0)
    assert isinstance(result, openai.types.audio.Transcription)
    assert result.text == reference_text  # greedy decoding is deterministic
    assert result.text == result.text.strip()
    assert_words(utterance.text, result.text)


def test_text(openai_client: openai.OpenAI, utterance: Utterance, reference_text: str) -> None:
    result = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID, response_format="text")
    assert isinstance(result, str)
    assert result.strip() == reference_text


def test_verbose_json(openai_client: openai.OpenAI, utterance: Utterance, reference_text: str) -> None:
    result = openai_client.audio.transcriptions.create(
        file=utterance.path, model=MODEL_ID, response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert result.duration == pytest.approx(utterance.duration_s, abs=0.01)
    assert result.language == "english"
    segments = result.segments or []
    # Timed formats are cut into caption-sized spans, each transcribed alone (so the
    # text may differ from json's one-piece text); the text is their join.
    assert result.text == " ".join(s.text for s in segments)
    for seg in segments:
        assert 0 <= seg.start < seg.end <= result.duration


def test_srt_parses(openai_client: openai.OpenAI, utterance: Utterance) -> None:
    verbose = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID,
                                                        response_format="verbose_json")
    body = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID, response_format="srt")
    cues = list(srt.parse(body))
    segments = verbose.segments or []
    # The cues hold the segments' text in order (a word longer than a line is broken: no whitespace compared).
    assert "".join("".join(c.content.split()) for c in cues) == "".join("".join(s.text.split()) for s in segments)
    # each cue inside one segment; the first and last cues start and end with the speech
    for cue in cues:
        assert any(s.start - 1e-3 <= cue.start.total_seconds() < cue.end.total_seconds() <= s.end + 1e-3
                   for s in segments)
    assert cues[0].start.total_seconds() == pytest.approx(segments[0].start, abs=0.001)
    assert cues[-1].end.total_seconds() == pytest.approx(segments[-1].end, abs=0.001)


def test_vtt_parses(openai_client: openai.OpenAI, utterance: Utterance) -> None:
    srt_body = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID, response_format="srt")
    body = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID, response_format="vtt")
    assert body.startswith("WEBVTT")
    captions = webvtt.from_buffer(io.StringIO(body))
    cues = list(srt.parse(srt_body))
    assert len(captions) == len(cues)
    for caption, cue in zip(captions, cues, strict=True):
        assert html.unescape(caption.text) == cue.content
        assert caption.start_time.in_milliseconds() / 1000 == pytest.approx(cue.start.total_seconds(), abs=0.001)
        assert caption.end_time.in_milliseconds() / 1000 == pytest.approx(cue.end.total_seconds(), abs=0.001)


# ------------------------------------------------------------------ streaming


def test_streaming_events(openai_client: openai.OpenAI, utterance: Utterance, reference_text: str) -> None:
    stream = openai_client.audio.transcriptions.create(file=utterance.path, model=MODEL_ID, stream=True)
    events = list(stream)
    assert events, "no events"
    *deltas, done = events
    assert done.type == "transcript.text.done"
    assert all(e.type == "transcript.text.delta" for e in deltas)
    assert "".join(e.delta for e in deltas) == done.text
    assert done.text == reference_text  # same greedy decode through the streaming ensemble


def test_streaming_text_format_and_sse_framing(gateway_server: str, utterance: Utterance) -> None:
    with utterance.path.open("rb") as f, httpx.stream(
        "POST", f"{gateway_server}/v1/audio/transcriptions", headers=AUTH, timeout=120,
        data={"model": MODEL_ID, "stream": "true", "response_format": "text"}, files={"file": f},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    blocks = [b for b in raw.split("\n\n") if b]
    assert all(b.startswith("data: {") for b in blocks)
    assert '"transcript.text.done"' in blocks[-1]


# ------------------------------------------------------------------ inputs


@pytest.mark.parametrize(
    ("fmt", "rate", "channels"),
    [("wav", 44100, 2), ("flac", 22050, 1), ("mp3", 44100, 2), ("ogg", 48000, 1),
     ("opus", 48000, 2), ("webm", 48000, 1), ("m4a", 44100, 2), ("mp4", 32000, 1)],
)
def test_every_input_format(openai_client: openai.OpenAI, encode_audio: EncodeAudio, utterance: Utterance,
                            fmt: str, rate: int, channels: int) -> None:
    path = encode_audio(utterance.path, fmt, rate=rate, channels=channels)
    result = openai_client.audio.transcriptions.create(file=path, model=MODEL_ID, response_format="verbose_json")
    assert result.duration == pytest.approx(utterance.duration_s, abs=DURATION_TOLERANCE_S)
    for seg in result.segments or []:
        assert 0 <= seg.start < seg.end <= result.duration + 1e-3
    assert_words(utterance.text, result.text)


def test_hostile_inputs(lean_gateway: GatewayProcess, hostile_inputs: list[HostileInput]) -> None:
    failures = []
    for item in hostile_inputs:
        response = httpx.post(
            f"{lean_gateway.base_url}/v1/audio/transcriptions", headers=AUTH, timeout=120,
            data={"model": MODEL_ID, "response_format": "verbose_json"},
            files={"file": (item.filename, item.data, item.content_type)},
        )
        if response.status_code != item.status:
            failures.append(f"{item.name}: {response.status_code} != {item.status}: {response.text[:200]}")
            continue
        body = response.json()
        if item.status != 200:
            assert set(body["error"]) == {"message", "type", "param", "code"}
            continue
        if item.duration_s is not None and not abs(body["duration"] - item.duration_s) <= 0.2:
            failures.append(f"{item.name}: duration {body['duration']} != {item.duration_s}")
        if item.speech is False and (body["text"] or body["segments"]):
            failures.append(f"{item.name}: no speech, yet text {body['text'][:80]!r}")
    assert not failures, "\n".join(failures)


def test_ten_minute_recording(lean_client: openai.OpenAI, long_recording: Callable[[float], LongRecording]) -> None:
    recording = long_recording(10)
    started = time.monotonic()
    result = lean_client.audio.transcriptions.create(file=recording.path, model=MODEL_ID,
                                                       response_format="verbose_json")
    elapsed = time.monotonic() - started
    assert result.duration == pytest.approx(recording.duration_s, abs=0.01)
    segments = result.segments or []
    assert [s.id for s in segments] == list(range(len(segments)))
    previous_end = 0.0
    for seg in segments:
        assert previous_end <= seg.start < seg.end <= result.duration
        assert seg.end - seg.start <= CUE_SECONDS + 1e-3  # verbose_json segments are caption-sized
        previous_end = seg.end
    # The pieces cover every spoken utterance (none lost, none truncated): each
    # utterance lies inside one segment or across consecutive ones.
    covered = [(s.start, s.end) for s in segments]
    for spoken in recording.segments:
        inside = sum(min(e, spoken.end_s) - max(b, spoken.start_s) for b, e in covered if b < spoken.end_s and e > spoken.start_s)
        assert inside >= 0.9 * (spoken.end_s - spoken.start_s), f"utterance at {spoken.start_s:.1f} s lost"
    assert " ".join(s.text for s in segments) == result.text
    print(f"10-minute recording: {len(segments)} segments in {elapsed:.1f} s")


def test_long_recording_keeps_every_word(openai_client: openai.OpenAI,
                                         held_out_recording: Callable[[float], LongRecording]) -> None:
    """Pieces cut at pauses and joined again: no word lost or repeated at a cut."""
    recording = held_out_recording(2.5)
    assert len({s.text for s in recording.segments}) == len(recording.segments)  # none said twice
    result = openai_client.audio.transcriptions.create(file=recording.path, model=MODEL_ID, response_format="json")
    assert_words(" ".join(s.text for s in recording.segments), result.text, MAX_TEST_WER_MANY)


# ------------------------------------------------------------------ chat


def _audio_message(path: Path, question: str, as_url: bool = False) -> list[dict]:
    data = base64.b64encode(path.read_bytes()).decode()
    part = ({"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{data}"}} if as_url
            else {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
    return [{"role": "user", "content": [{"type": "text", "text": question}, part]}]


def test_chat_with_audio(openai_client: openai.OpenAI, utterance: Utterance) -> None:
    messages = _audio_message(utterance.path, "Summarize the recording in one sentence.")
    completion = openai_client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24)
    assert completion.object == "chat.completion"
    assert completion.model == MODEL_ID
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert "<think>" not in choice.message.content and "</think>" not in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    again = openai_client.chat.completions.create(
        model=MODEL_ID, messages=_audio_message(utterance.path, "Summarize the recording in one sentence.", True),
        max_tokens=24,
    )
    assert again.choices[0].message.content == choice.message.content  # data URL = input_audio


def test_chat_with_audio_streamed(openai_client: openai.OpenAI, utterance: Utterance) -> None:
    messages = _audio_message(utterance.path, "What is said?")
    full = openai_client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24)
    chunks = list(openai_client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def test_chat_token_budget_gives_length(openai_client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    short = openai_client.chat.completions.create(model=MODEL_ID, messages=messages, max_completion_tokens=2)
    assert short.choices[0].finish_reason == "length"
    chunks = list(openai_client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=2, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_stream_ends_with_done(gateway_server: str) -> None:
    body = {"model": MODEL_ID, "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{gateway_server}/v1/chat/completions", headers=AUTH, json=body,
                      timeout=120) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    blocks = [b for b in raw.split("\n\n") if b]
    assert blocks[-1] == "data: [DONE]"
    assert all(b.startswith("data: {") for b in blocks[:-1])


def test_text_only_chat_and_thinking_switch(openai_client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    plain = openai_client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=16)
    assert "<think>" not in (plain.choices[0].message.content or "")
    thinking = openai_client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=16, extra_body={"chat_template_kwargs": {"enable_thinking": True}}
    )
    assert isinstance(thinking.choices[0].message.content, str)


# ------------------------------------------------------------------ failures against a live Triton


def _in_flight(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    match = re.search(r"^gateway_requests_in_flight ([0-9.e+]+)$", text, re.M)
    assert match
    return float(match.group(1))


def test_client_disconnect_cancels_work(gateway_process: GatewayProcess,
                                        long_recording: Callable[[float], LongRecording]) -> None:
    recording = long_recording(10)
    base = gateway_process.base_url

    def doomed() -> None:
        with recording.path.open("rb") as f, pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/audio/transcriptions", headers=AUTH, data={"model": MODEL_ID},
                       files={"file": f}, timeout=httpx.Timeout(60, read=1.5))

    thread = threading.Thread(target=doomed)
    thread.start()
    thread.join()
    deadline = time.monotonic() + 5
    while _in_flight(base) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _in_flight(base) == 0
    assert "client disconnected" in gateway_process.log_text()


# ------------------------------------------------------------------ metrics, and still ready


def test_metrics_after_traffic(gateway_server: str) -> None:
    text = httpx.get(f"{gateway_server}/metrics").text
    assert re.search(r'gateway_requests_total\{method="POST",route="/v1/audio/transcriptions",status="200"\} [1-9]', text)
    assert re.search(r'gateway_requests_total\{method="POST",route="/v1/audio/transcriptions",status="4\d\d"\} [1-9]', text)
    assert re.search(r'gateway_audio_seconds_total\{route="/v1/audio/transcriptions"\} [1-9]', text)
    assert re.search(r"gateway_pieces_per_request_count [1-9]", text)
    assert re.search(r"gateway_real_time_factor_count [1-9]", text)
    assert re.search(r'gateway_triton_request_duration_seconds_count\{model="canary_qwen"\} [1-9]', text)
    assert re.search(r'gateway_triton_request_duration_seconds_count\{model="canary_qwen_chat"\} [1-9]', text)
    assert re.search(r'gateway_request_duration_seconds_bucket\{le="\+Inf",method="POST",route="/v1/chat/completions"\} [1-9]', text)


def test_still_ready_after_everything(gateway_server: str) -> None:
    response = httpx.get(f"{gateway_server}/health/ready")
    assert response.status_code == 200, response.text
