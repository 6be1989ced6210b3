"""Pure logic of the realtime package: event parsing, turn detection, session state, audio input.

No Triton: real Silero VAD (onnxruntime) on real espeak-ng speech, synthetic probabilities
for the hysteresis corner cases; per-item failures through the app under uvicorn in this
process, Triton's answers scripted.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.vad import SileroVad, VadOptions, shared_vad
from gateway.realtime import protocol
from gateway.realtime.audio_input import PcmResampler, decode_base64_pcm16
from gateway.realtime.protocol import ProtocolError, ServerVad, SessionConfig
from gateway.realtime.session import SampleLog, Session, Utterance
from gateway.realtime.turns import SpeechEnd, SpeechStart, StreamingVad, TurnDetector
from tests.fixtures.audio.speech import read_audio, speech_extent, synthesize
from tests.fixtures.realtime import SpokenScript

MODEL = "canary-qwen-2.5b"


# ----------------------------------------------------------------------------- turn detection


def detector(**overrides: int | float) -> TurnDetector:
    options: dict[str, int | float] = {"threshold": 0.5, "silence_frames": 5, "min_speech_frames": 6,
                                       "max_speech_frames": 1000, "lone_word_frames": 3}
    options.update(overrides)
    return TurnDetector(**options)  # type: ignore[arg-type]


def probs(*runs: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(count, value, dtype=np.float32) for value, count in runs])


def test_turn_starts_once_confirmed_and_ends_after_the_silence() -> None:
    turns = detector().push(probs((0.0, 10), (0.9, 20), (0.0, 10)))
    assert turns == [SpeechStart(10), SpeechEnd(30)]


def test_short_burst_and_short_dip_do_not_make_turns() -> None:
    assert detector().push(probs((0.0, 5), (0.9, 2), (0.0, 10))) == []  # shorter than a lone word
    # A dip shorter than the silence does not end the turn.
    assert detector().push(probs((0.9, 10), (0.0, 4), (0.9, 10), (0.0, 6))) == [SpeechStart(0), SpeechEnd(24)]


def test_a_lone_short_word_is_a_turn_once_the_silence_ends_it() -> None:
    """Under min speech but a lone word's length: nothing while it may still be a click in
    speech to come, then the whole turn when the silence has ended it."""
    turns = detector()
    assert turns.push(probs((0.0, 5), (0.9, 4), (0.0, 4))) == []
    assert not turns.speaking
    assert turns.push(probs((0.0, 1))) == [SpeechStart(5), SpeechEnd(9)]
    assert turns.start is None and not turns.speaking
    # The same burst is no turn at all when it is shorter than a lone word's minimum.
    assert detector(lone_word_frames=5).push(probs((0.0, 5), (0.9, 4), (0.0, 10))) == []


def test_hysteresis_keeps_speech_between_the_thresholds() -> None:
    # 0.4 is below the start threshold but above the exit one (0.35): still speech.
    assert detector().push(probs((0.9, 5), (0.4, 20), (0.1, 5))) == [SpeechStart(0), SpeechEnd(25)]


def test_events_do_not_depend_on_how_frames_are_split() -> None:
    signal = probs((0.0, 7), (0.8, 13), (0.2, 9), (0.9, 30), (0.0, 12))
    whole = detector().push(signal)
    split = detector()
    pieces = [split.push(signal[i : i + 3]) for i in range(0, signal.size, 3)]
    assert [turn for piece in pieces for turn in piece] == whole


def test_the_detector_ends_speech_where_the_file_path_does() -> None:
    """The same hysteresis as the file path's VAD at any threshold (the re-cut of a turn uses it)."""
    for threshold in (0.5, 0.3, 0.1):
        assert detector(threshold=threshold).exit_threshold == VadOptions().at_threshold(threshold).neg_threshold
    assert VadOptions().at_threshold(0.5) == VadOptions()


def test_longest_utterance_is_cut_and_speech_goes_on() -> None:
    turns = detector(max_speech_frames=10).push(probs((0.9, 25), (0.0, 5)))
    assert turns == [SpeechStart(0), SpeechEnd(10, forced=True), SpeechStart(10),
                     SpeechEnd(20, forced=True), SpeechStart(20), SpeechEnd(25)]


def test_speech_just_past_the_cut_is_a_turn_however_short() -> None:
    """Cut mid-speech: the rest is announced at once, so 2 frames of it are still committed."""
    turns = detector(max_speech_frames=10).push(probs((0.9, 12), (0.0, 10)))
    assert turns == [SpeechStart(0), SpeechEnd(10, forced=True), SpeechStart(10), SpeechEnd(12)]


def test_a_cut_in_the_silence_after_speech_commits_no_silent_turn() -> None:
    """The window runs out while the turn waits out its silence (longer than the window): the
    cut ends the turn, and the silence after it is not announced as speech, then cut again at
    every window for ever."""
    turns = detector(max_speech_frames=10, silence_frames=16).push(probs((0.9, 8), (0.0, 60)))
    assert turns == [SpeechStart(0), SpeechEnd(10, forced=True)]
    after = detector(max_speech_frames=10, silence_frames=16)
    # Speech after the silence is a turn again (cut by the window too, as the silence is longer).
    assert after.push(probs((0.9, 8), (0.0, 30), (0.9, 6), (0.0, 40))) == [
        SpeechStart(0), SpeechEnd(10, forced=True), SpeechStart(38), SpeechEnd(48, forced=True)]
    assert not after.speaking and after.start is None


# ----------------------------------------------------------------------------- audio input


def test_streaming_vad_scores_exactly_like_the_file_path(realtime_script: SpokenScript) -> None:
    vad = shared_vad()
    audio = realtime_script.samples_16k
    stream = StreamingVad(vad, 16000)
    streamed = np.concatenate([stream.feed(audio[i : i + 1234]) for i in range(0, audio.size, 1234)])
    whole = SileroVad().frame_probabilities(audio[: streamed.size * 512], 16000)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_resampler_streams_24k_to_16k_without_losing_samples() -> None:
    rate = 24000
    t = np.arange(rate * 2) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
    resampler = PcmResampler(rate, 16000)
    out = np.concatenate([resampler.convert(pcm[i : i + 2400]) for i in range(0, pcm.size, 2400)]
                         + [resampler.flush()])
    assert abs(out.size - 32000) <= 2
    spectrum = np.abs(np.fft.rfft(out[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2  # 1 Hz bins over 1 s
    assert PcmResampler(16000, 16000).convert(np.array([16384, -32768], "<i2")).tolist() == [0.5, -1.0]


@pytest.mark.parametrize("audio, code", [("%%%", "invalid_value"), ("", "invalid_value"),
                                          (base64.b64encode(b"abc").decode(), "invalid_value")])
def test_bad_appends_are_protocol_errors(audio: str, code: str) -> None:
    with pytest.raises(ProtocolError) as error:
        decode_base64_pcm16(audio, "evt")
    assert (error.value.code, error.value.param, error.value.event_id) == (code, "audio", "evt")


# ----------------------------------------------------------------------------- protocol


def update(session: dict, kind: str = "session.update") -> SessionConfig:
    return protocol.apply_update(SessionConfig(model=MODEL), {"type": kind, "session": session}, MODEL)


def test_updates_are_partial_in_both_dialects() -> None:
    config = update({"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
    assert config == SessionConfig(sample_rate=16000, model=MODEL)
    config = update({"type": "transcription", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "silence_duration_ms": 800}}}})
    assert config.turn_detection == ServerVad(silence_duration_ms=800)
    # The SDK's conversation-only fields are taken, and change nothing here.
    quiet = update({"type": "transcription", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "create_response": False, "interrupt_response": False, "idle_timeout_ms": 6000}}}})
    assert quiet.turn_detection == ServerVad()
    assert update({"turn_detection": None}, "transcription_session.update").turn_detection is None
    beta = update({"input_audio_format": "pcm16", "input_audio_transcription": {"model": MODEL, "language": "en"}},
                  "transcription_session.update")
    assert (beta.sample_rate, beta.language) == (24000, "en")


def test_session_bodies_in_both_dialects() -> None:
    config = SessionConfig(model=MODEL, turn_detection=None)
    ga = protocol.session_body("sess_1", config, beta=False)
    assert ga["type"] == "transcription" and ga["audio"]["input"]["turn_detection"] is None
    assert protocol.session_body("sess_1", config, beta=True)["input_audio_format"] == "pcm16"


def test_unknown_event_types_list_the_supported_ones() -> None:
    with pytest.raises(ProtocolError) as error:
        protocol.parse_client_event('{"type": "response.create", "event_id": "e1"}')
    assert "input_audio_buffer.append" in error.value.message and error.value.event_id == "e1"


# ----------------------------------------------------------------------------- session


def feed(session: Session, pcm: np.ndarray, chunk: int = 1600) -> tuple[list[dict], list[Utterance]]:
    events: list[dict] = []
    utterances: list[Utterance] = []
    for start in range(0, pcm.size, chunk):
        samples, scores = session.analyse(pcm[start : start + chunk])
        produced, committed = session.ingest(samples, scores, 0.0)
        events += produced
        utterances += committed
    return events, utterances


def run_session(session: Session, pcm: np.ndarray, chunk: int) -> list[dict]:
    return feed(session, pcm, chunk)[0]


def test_server_vad_session_commits_each_sentence(realtime_script: SpokenScript) -> None:
    session = Session(SessionConfig(model=MODEL), shared_vad(), 16000, 40.0)
    events = run_session(session, realtime_script.pcm16(24000), 2400)
    kinds = [e["type"] for e in events]
    assert kinds == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed"] * len(realtime_script.segments)
    starts = [e["audio_start_ms"] / 1000 for e in events if e["type"].endswith("speech_started")]
    for segment, start in zip(realtime_script.segments, starts, strict=True):
        assert segment.start_s - 0.45 <= start <= segment.start_s + 0.15


@pytest.mark.parametrize(("word", "voice", "rate"), [
    ("Go.", "en-us", 220), ("No.", "en-us", 220), ("Stop.", "en-gb", 160), ("Sure.", "en-gb", 220)])
def test_a_lone_short_word_is_committed(audio_dir: Path, word: str, voice: str, rate: int) -> None:
    """Words Silero hears for 0.19-0.23 s, under min speech: these were dropped unheard."""
    samples, sample_rate = read_audio(synthesize(word, audio_dir, voice=voice, words_per_minute=rate))
    start, end = speech_extent(samples, sample_rate)
    silence = np.zeros(sample_rate, dtype=np.float32)
    pcm = (np.concatenate([silence, samples, silence, silence]) * 32767).astype(np.int16)
    session = Session(SessionConfig(model=MODEL, sample_rate=sample_rate), shared_vad(), sample_rate, 40.0)
    events, utterances = feed(session, pcm)
    assert [e["type"] for e in events] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                                           "input_audio_buffer.committed"]
    (utterance,) = utterances
    assert utterance.start <= silence.size + start and utterance.end >= silence.size + end


def test_retained_audio_stays_bounded_in_a_long_session(realtime_script: SpokenScript) -> None:
    """Memory flat with session length: only the prefix (idle) or the current utterance is kept."""
    session = Session(SessionConfig(model=MODEL), shared_vad(), 16000, 40.0)
    pcm = realtime_script.pcm16(16000)
    peak = 0
    for _ in range(6):
        for start in range(0, pcm.size, 1600):
            samples, scores = session.analyse(pcm[start : start + 1600])
            session.ingest(samples, scores, 0.0)
            peak = max(peak, session.uncommitted_samples)
    longest = max(s.end_s - s.start_s for s in realtime_script.segments)
    assert peak <= (longest + 1.5) * 16000


def test_manual_commit_and_clear(realtime_script: SpokenScript) -> None:
    session = Session(SessionConfig(model=MODEL, sample_rate=16000, turn_detection=None), shared_vad(), 16000, 40.0)
    assert run_session(session, realtime_script.pcm16(16000)[:16000], 1600) == []
    events, utterance = session.commit(1.0, None)
    assert (utterance.start_ms, utterance.end_ms, utterance.previous_item_id) == (0, 1000, None)
    assert events[0]["type"] == "input_audio_buffer.committed"
    run_session(session, np.zeros(8000, "<i2"), 1600)
    assert session.clear()[0]["type"] == "input_audio_buffer.cleared" and session.uncommitted_samples == 0
    with pytest.raises(ProtocolError) as error:
        session.commit(2.0, "e2")
    assert error.value.code == "input_audio_buffer_commit_empty"
    run_session(session, np.zeros(3200, "<i2"), 1600)
    _, second = session.commit(3.0, None)
    assert (second.start_ms, second.end_ms, second.previous_item_id) == (1500, 1700, utterance.item_id)


def _first_sentence(script: SpokenScript) -> tuple[np.ndarray, int, float, float]:
    """The script at 16 kHz, a sample in the middle of its first sentence, and where it is spoken."""
    first = script.segments[0]
    return script.pcm16(16000), int((first.start_s + first.end_s) / 2 * 16000), first.start_s, first.end_s


def test_new_turn_settings_mid_speech_keep_the_turn(realtime_script: SpokenScript) -> None:
    """A session.update that changes server_vad's settings while someone speaks: the turn goes
    on under the new ones, one item from its start to its end (none started and never committed)."""
    pcm, middle, start_s, end_s = _first_sentence(realtime_script)
    session = Session(SessionConfig(model=MODEL, sample_rate=16000), shared_vad(), 16000, 40.0)
    before, _ = feed(session, pcm[:middle])
    assert session.update(replace(session.config, turn_detection=ServerVad(silence_duration_ms=800)), 0.0) == ([], [])
    after, utterances = feed(session, pcm[middle:])
    started = [e["item_id"] for e in before + after if e["type"].endswith("speech_started")]
    assert started == [u.item_id for u in utterances] and len(utterances) == len(realtime_script.segments)
    assert utterances[0].start_ms / 1000 <= start_s and utterances[0].end_ms / 1000 >= end_s


def test_each_utterance_carries_the_threshold_that_found_it(realtime_script: SpokenScript) -> None:
    """A turn is cut again at pauses where its own detector heard speech, whatever the session's
    settings are by the time it is transcribed; a client's commit carries none."""
    session = Session(SessionConfig(model=MODEL, sample_rate=16000, turn_detection=ServerVad(threshold=0.4)),
                      shared_vad(), 16000, 40.0)
    _, utterances = feed(session, realtime_script.pcm16(16000))
    assert utterances and {u.vad_threshold for u in utterances} == {0.4}
    session.update(replace(session.config, turn_detection=None), 0.0)
    feed(session, realtime_script.pcm16(16000)[:8000])
    assert session.commit(0.0, None)[1].vad_threshold is None


def test_turn_detection_off_mid_speech_leaves_the_turn_to_the_clients_commit(realtime_script: SpokenScript) -> None:
    pcm, middle, start_s, _ = _first_sentence(realtime_script)
    session = Session(SessionConfig(model=MODEL, sample_rate=16000), shared_vad(), 16000, 40.0)
    before, _ = feed(session, pcm[:middle])
    assert session.update(replace(session.config, turn_detection=None), 0.0) == ([], [])
    assert feed(session, pcm[middle:]) == ([], [])
    events, utterance = session.commit(0.0, None)
    started = [e["item_id"] for e in before if e["type"].endswith("speech_started")]
    assert started == [utterance.item_id] == [events[0]["item_id"]]
    assert utterance.start_ms / 1000 <= start_s and utterance.end == pcm.size


def test_turn_detection_on_commits_what_the_client_had_appended(realtime_script: SpokenScript) -> None:
    pcm, middle, start_s, _ = _first_sentence(realtime_script)
    session = Session(SessionConfig(model=MODEL, sample_rate=16000, turn_detection=None), shared_vad(), 16000, 40.0)
    feed(session, pcm[:middle])
    events, utterances = session.update(replace(session.config, turn_detection=ServerVad()), 0.0)
    assert [e["type"] for e in events] == ["input_audio_buffer.committed"]
    assert [(u.start, u.end) for u in utterances] == [(0, middle)]
    _, later = feed(session, pcm[middle:])
    assert later and later[0].start >= middle and later[0].previous_item_id == utterances[0].item_id
    # Less than a commit's minimum is not committed (a client could not commit it either).
    quiet = Session(SessionConfig(model=MODEL, sample_rate=16000, turn_detection=None), shared_vad(), 16000, 40.0)
    feed(quiet, pcm[:800])
    assert quiet.update(replace(quiet.config, turn_detection=ServerVad()), 0.0) == ([], [])


def test_sample_log_keeps_no_dead_buffer_alive() -> None:
    """What is left after a discard must not pin the whole buffer it was sliced from (a 40 s
    utterance's 2.5 MB, held for as long as the next utterance lasts)."""
    log = SampleLog()
    for _ in range(100):
        log.append(np.ones(1000, dtype=np.float32))
    log.slice(0, 10)  # joins the chunks into one buffer
    log.discard_before(99_700)
    kept = log._chunks
    assert log.size == 300 and sum(c.size for c in kept) == 300
    assert all(c.base is None or c.base.nbytes <= 2 * c.nbytes for c in kept)


def test_sample_log_slices_across_chunks_and_discards() -> None:
    log = SampleLog()
    for value in range(5):
        log.append(np.full(10, value, dtype=np.float32))
    assert log.slice(8, 12).tolist() == [0, 0, 1, 1]
    log.discard_before(25)
    assert (log.base, log.size) == (25, 25)
    assert log.slice(0, 31).tolist() == [2] * 5 + [3]


# ----------------------------------------------------------------------------- per-item failures


class _ScriptedTriton:
    """Each utterance's transcription in turn: text, an upstream error, or a gateway bug; it
    notes the samples of every call."""

    def __init__(self, script: list[str | Exception]) -> None:
        self.script = script
        self.calls: list[int] = []

    async def _texts(self, outcome: str | Exception) -> AsyncIterator[str]:
        if isinstance(outcome, Exception):
            raise outcome
        yield outcome

    def transcribe_stream(self, samples: np.ndarray, max_new_tokens: int) -> AsyncIterator[str]:
        self.calls.append(samples.size)
        return self._texts(self.script.pop(0))


class _NoPiecePause:
    async def piece_pause_s(self) -> float | None:
        return None


@contextmanager
def _manual_session(triton: _ScriptedTriton) -> Iterator[Any]:
    """A realtime session in manual mode at 16 kHz on the app under uvicorn in this process."""
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI
    from websockets.sync.client import connect

    from gateway.metrics import GatewayMetrics
    from gateway.realtime.connection import RealtimeService
    from gateway.realtime.routes import router
    from gateway.settings import Settings
    from tests.fixtures.ports import free_port

    app = FastAPI()
    app.include_router(router)
    app.state.realtime = RealtimeService(Settings(), triton, GatewayMetrics(), _NoPiecePause())  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with connect(f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription", open_timeout=10,
                     max_size=None) as ws:
            ws.recv(timeout=10)
            ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}}}))
            ws.recv(timeout=10)
            yield ws
    finally:
        server.should_exit = True
        thread.join(30)


def _outcomes(ws: Any, count: int) -> list[tuple[int, str]]:
    """(commit index, transcript or error code) of the next `count` results."""
    items: list[str] = []
    outcomes: list[tuple[int, str]] = []
    while len(outcomes) < count:
        event = json.loads(ws.recv(timeout=30))
        if event["type"] == "input_audio_buffer.committed":
            items.append(event["item_id"])
        elif event["type"].endswith(".completed"):
            outcomes.append((items.index(event["item_id"]), event["transcript"]))
        elif event["type"].endswith(".failed"):
            outcomes.append((items.index(event["item_id"]), event["error"]["code"]))
    return outcomes


def _append(ws: Any, pcm: np.ndarray) -> None:
    for start in range(0, pcm.size, 16000 * 10):  # appends of 10 s, under the message limit
        ws.send(json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm[start : start + 16000 * 10].tobytes()).decode()}))


def test_an_item_that_fails_in_any_way_gets_its_failed_event_in_order() -> None:
    """One error event per failed item, in commit order, the session going on: for an upstream
    error and for a gateway bug alike (a bug's item once got no event at all)."""
    from gateway.errors import UpstreamError

    triton = _ScriptedTriton(["one", UpstreamError("upstream down"), KeyError("a bug"), "four"])
    tone = (np.sin(np.arange(8000) / 5) * 8000).astype("<i2")
    with _manual_session(triton) as ws:
        for _ in range(4):
            _append(ws, tone)
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        outcomes = _outcomes(ws, 4)
    assert outcomes == [(0, "one"), (1, "upstream_error"), (2, "internal_error"), (3, "four")]


def test_a_turn_longer_than_a_piece_with_no_speech_found_is_still_transcribed() -> None:
    """A committed turn over `piece_seconds` is cut at its pauses; where the VAD finds no speech
    to cut at (a quiet speaker, a low client threshold), it goes in the model's longest pieces:
    it once came back empty, the model never asked."""
    triton = _ScriptedTriton(["a", "b"])
    hum = (np.sin(np.arange(45 * 16000) / 40) * 300).astype("<i2")  # 45 s, no speech to Silero
    with _manual_session(triton) as ws:
        _append(ws, hum)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        outcomes = _outcomes(ws, 1)
    assert outcomes == [(0, "a b")] and triton.calls == [45 * 16000 // 2] * 2  # even pieces, none tiny
