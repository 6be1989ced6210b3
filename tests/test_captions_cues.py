"""Caption-grade timing: SRT/VTT cues and verbose_json segments of a recording whose
speech boundaries are known (espeak-ng clips trimmed to their audible extent, separated by
digital silence), through the real gateway and Triton, parsed with `srt` and `webvtt-py`.

The embedded model is untrained, so its text is noise: the checks are on timing, layout and
consistency. Two gateways on the session's Triton, both with a tiny token budget (cheap
calls): one with the default layout (the texts fit, so every cue edge must sit at a known
speech boundary), and one whose layout is one line of 10 characters (the texts overflow, so
cues are cut again in the audio; a part too short to cut again keeps more lines).
"""

from __future__ import annotations

import html
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import srt
import webvtt

from gateway.audio.cue_cutting import CueCutOptions, plan_cues, speech_map
from tests.fixtures.audio import SPEECH_RATE, Utterance
from tests.fixtures.audio.speech import read_audio, spoken_speech, write_wav
from tests.fixtures.gateway import GATEWAY_API_KEY, MODEL_ID, GatewayProcess, run_gateway, wait_ready

MAX_CUE_S = 7.0
LINE_CHARS, LINES = 42, 2
_AUDIBLE = 0.01  # a sample louder than this is sound (the noise's level is set against it)
EDGE_TOLERANCE_S = 0.2  # cue start/end vs the known start/end of the speech it holds
# Clips of the fixture corpus spoken back to back, and the silence after each group: "never be
# afraid ...", "it is better ...", "the trouble with computers ..." straight into "you got to
# be very careful ..." (about 10 s of speech without a pause, longer than a cue), "pass the word".
LAYOUT = (((1,), 0.8), ((2,), 1.5), ((4, 5), 0.7), ((0,), 0.5))


@dataclass(frozen=True)
class Recording:
    path: Path
    duration_s: float
    spans: tuple[tuple[float, float], ...]  # known speech (start, end), in order

    def pause_containing(self, t: float, tolerance: float = EDGE_TOLERANCE_S) -> tuple[float, float] | None:
        """The silence (with the tolerance taken off both sides) that `t` falls in, if any."""
        edges = [0.0, *[x for span in self.spans for x in span], self.duration_s]
        for start, end in zip(edges[::2], edges[1::2]):
            if start + tolerance < t < end - tolerance:
                return start, end
        return None


@pytest.fixture(scope="module")
def recording(utterances: list[Utterance], tmp_path_factory: pytest.TempPathFactory) -> Recording:
    pieces = [np.zeros(SPEECH_RATE // 2, dtype=np.float32)]  # 0.5 s of leading silence
    spans = []
    position = pieces[0].size
    for indices, pause_s in LAYOUT:
        clips = []
        for index in indices:
            clips.append(spoken_speech(utterances[index].path))
        clip = np.concatenate(clips)
        spans.append((position / SPEECH_RATE, (position + clip.size) / SPEECH_RATE))
        pieces += [clip, np.zeros(int(pause_s * SPEECH_RATE), dtype=np.float32)]
        position += clip.size + pieces[-1].size
    audio = np.concatenate(pieces)
    path = write_wav(tmp_path_factory.mktemp("captions") / "captions.wav", audio, SPEECH_RATE)
    return Recording(path, audio.size / SPEECH_RATE, tuple(spans))


TINY_LINE_CHARS = 10


def _gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory, **extra: str) -> Iterator[GatewayProcess]:
    env = {
        "GATEWAY_TRITON__URL": triton_server.grpc_url,
        "GATEWAY_AUTH__API_KEYS": f'["{GATEWAY_API_KEY}"]',
        "GATEWAY_MODEL__ASR_MAX_NEW_TOKENS": "3",
        **extra,
    }
    with run_gateway(env, tmp_path_factory.mktemp("captions-gw") / "gateway.log") as gateway:
        wait_ready(gateway.base_url)
        yield gateway


@pytest.fixture(scope="module")
def fitting_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose token budget keeps the noise text inside two lines."""
    yield from _gateway(triton_server, tmp_path_factory)


@pytest.fixture(scope="module")
def overflowing_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose cues hold one line of 10 characters: the noise overflows them."""
    yield from _gateway(triton_server, tmp_path_factory, GATEWAY_CAPTIONS__LINE_CHARS=str(TINY_LINE_CHARS),
                        GATEWAY_CAPTIONS__LINES="1")


def _client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=GATEWAY_API_KEY, max_retries=0, timeout=300)


@dataclass(frozen=True)
class ParsedCue:
    start: float
    end: float
    lines: list[str]


def _srt_cues(body: str) -> list[ParsedCue]:
    return [ParsedCue(c.start.total_seconds(), c.end.total_seconds(), c.content.split("\n")) for c in srt.parse(body)]


def _vtt_cues(body: str) -> list[ParsedCue]:
    assert body.startswith("WEBVTT")
    return [
        ParsedCue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000,
                  [html.unescape(line) for line in c.lines])
        for c in webvtt.from_buffer(io.StringIO(body))
    ]


def _check_layout(
    cues: list[ParsedCue], duration_s: float, lines: int | None = LINES, line_chars: int = LINE_CHARS
) -> None:
    """Cues in order, inside the recording, at most a cue long, lines of at most `line_chars`
    and at most `lines` of them (None: text that overflowed may keep more)."""
    assert cues, "no cues"
    previous_end = 0.0
    for cue in cues:
        assert previous_end - 1e-3 <= cue.start < cue.end <= duration_s + 1e-3
        assert cue.end - cue.start <= MAX_CUE_S + 1e-3
        assert 1 <= len(cue.lines) <= (lines or len(cue.lines)), cue.lines
        assert all(0 < len(line) <= line_chars for line in cue.lines), cue.lines
        previous_end = cue.end


def _timed(client: openai.OpenAI, recording: Recording, *, vtt: bool = True) -> tuple[list[ParsedCue], list[ParsedCue], Any]:
    srt_body = client.audio.transcriptions.create(file=recording.path, model=MODEL_ID, response_format="srt")
    vtt_body = client.audio.transcriptions.create(file=recording.path, model=MODEL_ID, response_format="vtt") if vtt \
        else "WEBVTT\n"
    verbose = client.audio.transcriptions.create(file=recording.path, model=MODEL_ID, response_format="verbose_json",
                                                 timestamp_granularities=["segment"])
    return _srt_cues(srt_body), _vtt_cues(vtt_body), verbose


def test_cues_cut_again_when_text_overflows(overflowing_gateway: GatewayProcess, recording: Recording) -> None:
    srt_cues, _, verbose = _timed(_client(overflowing_gateway), recording, vtt=False)
    _check_layout(srt_cues, recording.duration_s, lines=None, line_chars=TINY_LINE_CHARS)
    segments = verbose.segments or []
    assert [s.id for s in segments] == list(range(len(segments)))
    assert verbose.text == " ".join(s.text for s in segments)
    # The cues hold the segments' text in order; a word longer than a line is broken, so
    # compare without whitespace.
    assert "".join("".join(" ".join(c.lines).split()) for c in srt_cues) == "".join(
        "".join(s.text.split()) for s in segments
    )
    # Segments are audio spans, transcribed alone: no edge in the middle of a pause.
    for seg in segments:
        assert seg.end - seg.start <= MAX_CUE_S + 1e-3
        for edge in (seg.start, seg.end):
            assert recording.pause_containing(edge) is None, f"segment edge {edge:.2f} s inside a pause"
    # Each cue is one segment, over its span (text that still overflows keeps more lines), and
    # the audio was cut again: more segments than cues of the fitting layout would need.
    assert [(c.start, c.end) for c in srt_cues] == [
        (pytest.approx(s.start, abs=1e-3), pytest.approx(s.end, abs=1e-3)) for s in segments
    ]
    assert len(segments) > len(recording.spans) + 1
    assert min(s.end - s.start for s in segments) < 2.0  # parts of 1-2 s exist
    print(f"{len(segments)} segments, {len(srt_cues)} cues for {len(recording.spans)} utterances")


def test_cue_edges_sit_at_speech_boundaries(fitting_gateway: GatewayProcess, recording: Recording) -> None:
    srt_cues, vtt_cues, verbose = _timed(_client(fitting_gateway), recording)
    _check_layout(srt_cues, recording.duration_s)
    assert len(srt_cues) == len(vtt_cues) == len(verbose.segments or [])
    assert [(round(c.start, 3), round(c.end, 3), c.lines) for c in srt_cues] == [
        (round(c.start, 3), round(c.end, 3), c.lines) for c in vtt_cues
    ]
    long_spans = [span for span in recording.spans if span[1] - span[0] > MAX_CUE_S]
    assert long_spans, "the layout must hold one utterance longer than a cue"

    def near_boundary(t: float, index: int) -> bool:  # 0: a speech start, 1: a speech end
        return any(abs(t - span[index]) <= EDGE_TOLERANCE_S for span in recording.spans)

    def inside_long(t: float) -> bool:
        return any(a + EDGE_TOLERANCE_S < t < b - EDGE_TOLERANCE_S for a, b in long_spans)

    for cue in srt_cues:
        assert near_boundary(cue.start, 0) or inside_long(cue.start), f"cue start {cue.start:.2f} s"
        assert near_boundary(cue.end, 1) or inside_long(cue.end), f"cue end {cue.end:.2f} s"
    for start, end in recording.spans:  # every utterance starts and ends a cue
        assert any(abs(c.start - start) <= EDGE_TOLERANCE_S for c in srt_cues), f"no cue starts at {start:.2f} s"
        assert any(abs(c.end - end) <= EDGE_TOLERANCE_S for c in srt_cues), f"no cue ends at {end:.2f} s"


def test_json_keeps_long_pieces(fitting_gateway: GatewayProcess, recording: Recording, artifacts_dir: Path) -> None:
    """json/text are not cut for captions but as the model asks: the whole 20 s recording is one
    model call, or with the demo model's `piece_pause_s`, one per pause that long."""
    from canary_qwen.manifest import Manifest
    from gateway.audio import split_on_pauses
    from gateway.chunking import model_pieces
    from gateway.settings import LimitSettings

    pause_s = Manifest.load(artifacts_dir).piece_pause_s
    samples, rate = read_audio(recording.path)
    expected = len(split_on_pauses(samples, rate, LimitSettings().piece_seconds, options=model_pieces(pause_s)))
    assert expected == 1 if pause_s is None else expected >= len(recording.spans)
    client = _client(fitting_gateway)
    before = _asr_calls(fitting_gateway)
    client.audio.transcriptions.create(file=recording.path, model=MODEL_ID)
    json_calls = _asr_calls(fitting_gateway) - before
    client.audio.transcriptions.create(file=recording.path, model=MODEL_ID, response_format="srt")
    srt_calls = _asr_calls(fitting_gateway) - before - json_calls
    assert json_calls == expected
    assert srt_calls >= len(recording.spans) + 1


def _asr_calls(gateway: GatewayProcess) -> float:
    import httpx

    text = httpx.get(f"{gateway.base_url}/metrics").text
    for line in text.splitlines():
        if line.startswith('gateway_triton_request_duration_seconds_count{model="canary_qwen"}'):
            return float(line.split()[-1])
    return 0.0


def test_planned_cues_on_real_speech(recording: Recording) -> None:
    """The cue planner alone, on the same audio (VAD only, no servers)."""
    samples, rate = read_audio(recording.path)
    _check_planned(samples, rate, recording)


def test_planned_cues_on_real_speech_over_background_noise(recording: Recording, tmp_path: Path) -> None:
    """The same speech over sox's pink noise 20 dB under it: the noise is the recording's
    silence, so cues still start and end near the speech. Judged on the speech's peak alone,
    the noise was sound, and cues widened out to the middle of each pause (0.25-0.75 s from
    the speech here); now they stay within 0.25 s: pink noise swells for 30 ms and more over
    its own 95th percentile, and an edge can stop at such a swell."""
    samples, rate = read_audio(recording.path)
    noise_path = tmp_path / "pink.wav"
    subprocess.run(
        ["sox", "-R", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(noise_path),
         "synth", f"{samples.size / rate:.3f}", "pinknoise"],
        check=True,
    )  # fmt: skip
    noise, _ = read_audio(noise_path)
    noise = noise[: samples.size]
    sound = samples[np.abs(samples) > _AUDIBLE]
    noisy = samples + noise * np.sqrt(np.mean(sound**2) / 10 ** (20 / 10) / np.mean(noise**2))
    _check_planned(noisy.astype(np.float32), rate, recording, tolerance=0.3)


def _check_planned(samples: np.ndarray, rate: int, recording: Recording, tolerance: float = EDGE_TOLERANCE_S) -> None:
    options = CueCutOptions(max_cue_s=MAX_CUE_S)
    cues = plan_cues(speech_map(samples, rate, options), options)
    for cue in cues:
        assert cue.duration_s <= MAX_CUE_S
        for edge in (cue.start_s, cue.end_s):
            assert recording.pause_containing(edge, tolerance) is None, f"cue edge {edge:.2f} s out in a pause"
    for start, end in recording.spans:
        assert min(abs(c.start_s - start) for c in cues) <= tolerance
        assert min(abs(c.end_s - end) for c in cues) <= tolerance


# ------------------------------------------------------------------ bench cues: the pure figures


def test_bench_cue_figures() -> None:
    from bench.cues import Cue, CuesSettings, Utterance, in_pause, timing_figures, word_figures

    utterances = [Utterance(1.0, 3.0, "one two"), Utterance(4.0, 12.0, "three four five")]
    settings = CuesSettings(_cli_parse_args=[])  # type: ignore[call-arg]
    good = [Cue(0.95, 3.1, ("one two",)), Cue(3.9, 8.0, ("three",)), Cue(8.0, 12.05, ("four", "five"))]
    figures = timing_figures(good, utterances, 13.0, settings)
    assert figures["start_error_ms_max"] == pytest.approx(100.0) and figures["end_error_ms_max"] == pytest.approx(100.0)
    assert figures["cue_edges_inside_pauses"] == 0 and figures["cues_within_limits"] == 1.0
    assert figures["cue_edges_at_boundaries"] == pytest.approx(4 / 6, abs=1e-3)  # the two at 8.0: in speech
    bad = [Cue(0.5, 3.5, ("one two",)), Cue(3.5, 12.0, ("x" * 50,))]
    figures = timing_figures(bad, utterances, 13.0, settings)
    assert figures["cue_edges_inside_pauses"] == 3  # 0.5 (lead silence) and both edges at 3.5
    assert figures["cues_within_limits"] == 0.5 and figures["cue_max_s"] == 8.5
    assert in_pause(3.5, utterances, 13.0, 0.2) and not in_pause(3.15, utterances, 13.0, 0.2)
    assert word_figures(good, utterances, False) == {"words_per_cue_mean": pytest.approx(5 / 3, abs=0.01), "wer": None}
    assert word_figures(good, utterances, True)["wer"] == 0.0


def test_bench_layout_knows_its_boundaries(utterances: list[Utterance]) -> None:
    from bench.corpus import Clip
    from bench.cues import lay_out

    clips = []
    for item in utterances[:3]:
        samples, _ = read_audio(item.path)
        clips.append(Clip(item.path.stem, item.text, samples, b"", item.path))
    audio, spoken = lay_out(clips, rounds=2)
    assert len(spoken) == 6
    for u in spoken:
        start, end = round(u.start_s * SPEECH_RATE), round(u.end_s * SPEECH_RATE)
        assert abs(audio[start]) > 0.01 and abs(audio[end - 1]) > 0.01
        assert not np.any(np.abs(audio[start - 100 : start]) > 0) and not np.any(np.abs(audio[end : end + 100]) > 0)
