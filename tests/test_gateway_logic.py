"""Unit tests of the gateway's pure logic (no servers)."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import io
import math

import numpy as np
import pytest
import srt
import webvtt
from fastapi import UploadFile
from pydantic import SecretStr

from canary_qwen.mel import SAMPLE_RATE
from gateway.audio import CutOptions, Piece
from gateway.audio.vad import SpeechProbability
from gateway.auth import bearer_token, key_matches
from gateway.errors import BadRequestError, UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError
from gateway.protocol import ResponseFormat, ServerVadChunking, TranscriptionForm, TranscriptionSegment
from gateway.readiness import ReadinessProbe
from gateway.settings import CaptionSettings, Settings
from gateway.audio import SpeechSegment
from gateway.audio.cue_cutting import CueCutOptions, SpeechMap, heard, neighbour_bounds, plan_cues, split_cue
from gateway.audio.cutting import background_of
from gateway.chunking import Chunking, chunking_options, model_pieces, parse_chunking
from gateway.subtitles import CueLayout, cues_from_segments, fits, to_srt, to_vtt, wrap
from gateway.text_join import DeltaJoiner, join_pieces
from gateway.thinking import ThinkingFilter, strip_thinking
from gateway.transcription import cue_cut_options, segments_from, validate_form
from gateway.triton_client import to_api_error

MODEL = "canary-qwen-2.5b"


def _form(**fields: object) -> TranscriptionForm:
    upload = UploadFile(io.BytesIO(b"x"), filename="a.wav")
    return TranscriptionForm.model_validate({"file": upload, "model": MODEL, **fields})


# ------------------------------------------------------------------ text joining


def test_join_pieces_spaces_and_drops_empty() -> None:
    assert join_pieces([" Hello there. ", "", "  ", "General Kenobi."]) == "Hello there. General Kenobi."
    assert join_pieces([]) == ""


@pytest.mark.parametrize(
    "pieces",
    [
        [[" Hello", " world", " "], ["", " Second", " piece."]],
        [["  "], [" a", "b ", " c"], [], ["d"]],
        [[" x ", " ", "y"], [" z  "]],
    ],
)
def test_delta_joiner_matches_join_pieces(pieces: list[list[str]]) -> None:
    joiner = DeltaJoiner()
    deltas: list[str] = []
    for fragments in pieces:
        joiner.start_piece()
        deltas += [joiner.feed(f) for f in fragments]
    assert "".join(deltas) == join_pieces("".join(f) for f in pieces)


# ------------------------------------------------------------------ thinking


def test_strip_thinking_removes_blocks() -> None:
    assert strip_thinking("<think>\nhmm\n</think>\n\nThe answer.") == "The answer."
    assert strip_thinking("No thoughts.") == "No thoughts."
    assert strip_thinking("<think>never closed") == ""


@pytest.mark.parametrize("cut", range(1, 30))
def test_thinking_filter_matches_strip_whatever_the_fragmenting(cut: int) -> None:
    text = "<think>\nplan: <b>x</b>\n</think>\n\nVisible <think>hidden</think>answer <thin"
    fragments = [text[i : i + cut] for i in range(0, len(text), cut)]
    filt = ThinkingFilter()
    out = "".join(filt.feed(f) for f in fragments) + filt.flush()
    assert out == strip_thinking(text)


# ------------------------------------------------------------------ subtitles


LAYOUT = CueLayout(line_chars=42, lines=2)


def _segment(start: float, end: float, text: str) -> TranscriptionSegment:
    return TranscriptionSegment(id=0, seek=0, start=start, end=end, text=text, tokens=[])


def _segments() -> list[TranscriptionSegment]:
    return [_segment(0.25, 3.5, "First line."), _segment(3661.004, 3670.0, "Second\n\nline <b> & more.")]


def test_srt_parses_with_srt_package() -> None:
    subs = list(srt.parse(to_srt(cues_from_segments(_segments(), LAYOUT))))
    assert [s.content for s in subs] == ["First line.", "Second line <b> & more."]
    assert subs[0].start.total_seconds() == pytest.approx(0.25)
    assert subs[1].start.total_seconds() == pytest.approx(3661.004)
    assert subs[1].end.total_seconds() == pytest.approx(3670.0)


def test_vtt_parses_with_webvtt_and_escapes_markup() -> None:
    body = to_vtt(cues_from_segments(_segments(), LAYOUT))
    assert "&lt;b&gt; &amp; more" in body
    captions = webvtt.from_buffer(io.StringIO(body))
    assert [html.unescape(c.text) for c in captions] == ["First line.", "Second line <b> & more."]
    assert captions[1].start == "01:01:01.004"


def test_wrap_keeps_words_and_limits_width() -> None:
    text = "the quick brown fox jumps over the lazy dog " * 3 + "x" * 50
    lines = wrap(text, 42)
    assert all(0 < len(line) <= 42 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert wrap("  ", 42) == []


def test_a_cue_holds_two_balanced_lines() -> None:
    text = "Speech recognition turns spoken language into written text."
    (cue,) = cues_from_segments([_segment(1.0, 4.0, text)], LAYOUT)
    assert len(cue.lines) == 2 and all(len(line) <= 42 for line in cue.lines)
    assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 10
    assert cue.text == text and (cue.start, cue.end) == (1.0, 4.0)
    assert fits(text, LAYOUT) and not fits(text * 2, LAYOUT)


def test_an_overflowing_segment_stays_one_cue_over_its_own_span() -> None:
    """Text that could not be cut to fit keeps its segment's true start and end, in more lines:
    no cue edge is an estimate."""
    text = " ".join(f"word{i}" for i in range(60))
    short = "Pass the word."
    cues = cues_from_segments([_segment(10.0, 16.0, text), _segment(16.5, 17.5, short)], LAYOUT)
    assert [(c.start, c.end) for c in cues] == [(10.0, 16.0), (16.5, 17.5)]
    assert len(cues[0].lines) > LAYOUT.lines and all(len(line) <= LAYOUT.line_chars for line in cues[0].lines)
    assert cues[0].text == text and cues[1].lines == (short,)
    assert "\n".join(cues[0].lines) in to_srt(cues) and "\n".join(cues[0].lines) in to_vtt(cues)


# ------------------------------------------------------------------ caption cue cutting (pure planner)


def _speech(spans_s: list[tuple[float, float]], total_s: float, rate: int = 16000) -> SpeechMap:
    audio = np.zeros(int(total_s * rate), dtype=np.float32)
    for start, end in spans_s:
        audio[int(start * rate) : int(end * rate)] = 0.3  # loud where the "speech" is
    segments = [SpeechSegment(int(a * rate), int(b * rate)) for a, b in spans_s]
    frame = 512  # the VAD deems every frame speech
    probability = SpeechProbability(np.ones(-(-audio.size // frame), dtype=np.float32), frame)
    return SpeechMap(audio, rate, segments, probability, background_of(audio, segments, rate))


def _over_background(speech: SpeechMap, level: float) -> SpeechMap:
    """`speech` with steady noise of RMS `level` everywhere (seeded), the background measured again."""
    audio = speech.audio + level * np.random.default_rng(0).standard_normal(speech.audio.size).astype(np.float32)
    return dataclasses.replace(speech, audio=audio, background=background_of(audio, speech.segments, speech.sample_rate))


def test_cues_end_at_pauses_and_hold_only_speech() -> None:
    spans = [(0.5, 2.0), (2.2, 4.0), (5.0, 8.0), (8.3, 11.0), (11.2, 14.5)]
    speech = _speech(spans, 16.0)
    cues = plan_cues(speech, CueCutOptions(max_cue_s=7.0, pause_s=0.5))
    edges = {round(s, 3) for span in spans for s in span}
    for piece in cues:
        assert piece.duration_s <= 7.0
        assert round(piece.start_s, 3) in edges and round(piece.end_s, 3) in edges  # speech edges, not mid-pause
        assert piece.samples.size == piece.end - piece.start
    # the 1 s pause at 4.0-5.0 always ends a cue; the 0.2-0.3 s ones only where the window is full
    assert any(round(p.end_s, 3) == 4.0 for p in cues) and any(round(p.start_s, 3) == 5.0 for p in cues)
    assert [(round(p.start_s, 3), round(p.end_s, 3)) for p in cues] == [(0.5, 4.0), (5.0, 11.0), (11.2, 14.5)]


def test_cue_padding_stays_inside_the_pause() -> None:
    speech = _speech([(1.0, 2.0), (2.6, 4.0)], 5.0)
    cues = plan_cues(speech, CueCutOptions(pause_s=0.5, edge_pad_s=0.5))
    assert [(round(p.start_s, 3), round(p.end_s, 3)) for p in cues] == [(0.5, 2.3), (2.3, 4.5)]


def test_cues_reach_back_over_a_soft_onset_the_vad_missed() -> None:
    """A word that starts soft (0.12 s at a twentieth of the peak) before the VAD's segment: the
    cue starts before it, with `keep_s` of margin, but never past the middle of the pause."""
    rate, keep = 16000, CueCutOptions().keep_s
    speech = _speech([(1.0, 2.0), (2.5, 3.5)], 4.0)
    speech.audio[int(0.88 * rate) : int(1.0 * rate)] = 0.015  # "Th": sound, not yet speech to the VAD
    speech.audio[int(2.0 * rate) : int(2.4 * rate)] = 0.015  # a soft tail running on towards the next
    first, second = plan_cues(speech, CueCutOptions(pause_s=0.2))
    assert first.start_s == pytest.approx(0.88 - keep, abs=0.011)
    assert first.end_s == pytest.approx(2.25, abs=0.011) and second.start_s == pytest.approx(2.5, abs=0.011)
    # Steady noise as loud as that onset is the recording's background, its silence: the cue
    # does not widen over it; judged on the peak alone (no background measured), the noise
    # would be sound, and the cue widens, though no further than `max_cue_s`.
    noisy = _speech([(1.0, 7.8)], 12.0)
    noisy.audio[noisy.audio == 0] = 0.015
    noisy = dataclasses.replace(noisy, background=background_of(noisy.audio, noisy.segments, rate))
    assert noisy.background == pytest.approx(0.015**2, rel=1e-3)
    (only,) = plan_cues(noisy, CueCutOptions(max_cue_s=7.0))
    assert (only.start_s, only.end_s) == pytest.approx((1.0, 7.8), abs=1e-3)
    (only,) = plan_cues(dataclasses.replace(noisy, background=0.0), CueCutOptions(max_cue_s=7.0))
    assert only.start_s < 1.0 and only.duration_s == pytest.approx(7.0, abs=1e-3)


def test_split_cue_prefers_an_inner_pause_then_a_quiet_moment_then_none() -> None:
    rate = 16000
    speech = _speech([(0.0, 2.5), (2.8, 6.0)], 6.0)
    whole = plan_cues(speech, CueCutOptions(pause_s=0.5))[0]
    left, right = split_cue(speech, whole, CueCutOptions(min_part_s=1.0)) or (None, None)
    assert left is not None and right is not None
    assert (round(left.end_s, 3), round(right.start_s, 3)) == (2.5, 2.8)
    # Speech with no pause and nothing quieter than 3 dB under its peak is not cut at all.
    continuous = _speech([(0.0, 6.0)], 6.0)
    continuous.audio[int(3.9 * rate) : int(3.92 * rate)] = 0.0  # 20 ms of silence: half of 40 ms
    one = plan_cues(continuous, CueCutOptions())[0]
    assert split_cue(continuous, one, CueCutOptions(min_part_s=1.0)) is None
    # Two silent 60 ms: the cut is the middle of the one the VAD deems less like speech; silence
    # the VAD hears as speech (a probability over its neg_threshold) is no place to cut.
    frame = continuous.probability.frame
    continuous.audio[int(2.0 * rate) : int(2.06 * rate)] = 0.0
    continuous.audio[int(4.5 * rate) : int(4.56 * rate)] = 0.0
    assert split_cue(continuous, one, CueCutOptions(min_part_s=1.0)) is None
    continuous.probability.values[int(2.0 * rate) // frame : int(2.06 * rate) // frame + 1] = 0.3
    continuous.probability.values[int(4.5 * rate) // frame : int(4.56 * rate) // frame + 1] = 0.3
    continuous.probability.values[int(4.53 * rate) // frame] = 0.2
    parts = split_cue(continuous, one, CueCutOptions(min_part_s=1.0))
    assert parts is not None and parts[0].end == parts[1].start
    assert abs(parts[0].end_s - 4.53) <= 0.011
    # Equally unlike speech: the quieter wins.
    continuous.probability.values[int(4.53 * rate) // frame] = 0.3
    continuous.audio[int(2.0 * rate) : int(2.06 * rate)] = 0.3 * 10 ** (-70 / 20)
    parts = split_cue(continuous, one, CueCutOptions(min_part_s=1.0))
    assert parts is not None and abs(parts[0].end_s - 4.53) <= 0.011
    continuous.audio[int(2.0 * rate) : int(2.06 * rate)] = 0.0
    # Under 50 dB quieter than the peak is not quiet enough; parts shorter than min_part_s never.
    continuous.audio[int(4.5 * rate) : int(4.56 * rate)] = 0.3 * 10 ** (-45 / 20)
    parts = split_cue(continuous, one, CueCutOptions(min_part_s=1.0))
    assert parts is not None and abs(parts[0].end_s - 2.03) <= 0.011
    assert split_cue(continuous, one, CueCutOptions(min_part_s=2.5)) is None
    short = plan_cues(_speech([(0.0, 1.5)], 2.0), CueCutOptions())[0]
    assert split_cue(_speech([(0.0, 1.5)], 2.0), short, CueCutOptions(min_part_s=1.0)) is None


def test_caption_settings_default_to_the_cue_cutters_defaults() -> None:
    assert cue_cut_options(CaptionSettings()) == CueCutOptions()
    # Windows too short to cut speech into are refused at start-up, as the cutter refuses them.
    from gateway.audio.cutting import MIN_PIECE_S

    with pytest.raises(ValueError):
        CaptionSettings(max_cue_s=MIN_PIECE_S * 0.99)
    with pytest.raises(ValueError):
        Settings(limits={"piece_seconds": MIN_PIECE_S * 0.99})  # type: ignore[arg-type]
    assert CaptionSettings(max_cue_s=MIN_PIECE_S).max_cue_s == MIN_PIECE_S


def test_padding_never_stretches_a_cue_past_its_longest() -> None:
    """A client's prefix padding (`edge_pad_s`) is shared out of what `max_cue_s` leaves: 6.8 s of
    speech padded by 0.3 s a side is a 7 s cue, not 7.4 s."""
    speech = _speech([(1.0, 7.8), (10.0, 11.0)], 12.0)
    first, second = plan_cues(speech, CueCutOptions(max_cue_s=7.0, edge_pad_s=0.3))
    assert (first.start_s, first.end_s) == pytest.approx((0.9, 7.9), abs=1e-3)
    assert (second.start_s, second.end_s) == pytest.approx((9.7, 11.3), abs=1e-3)


def test_split_cue_never_cuts_off_a_part_under_min_part_s() -> None:
    """A pause whose middle is far enough from both ends but whose edge is not (a long pause near
    one end) would leave a part under `min_part_s` (before its quiet edges are trimmed): the
    cut takes the shorter pause that leaves both parts long enough, or none."""
    speech = _speech([(0.0, 0.4), (1.8, 3.0), (3.4, 5.0)], 5.0)
    whole = plan_cues(speech, CueCutOptions(pause_s=3.0))[0]
    assert (whole.start_s, whole.end_s) == pytest.approx((0.0, 5.0), abs=1e-3)
    parts = split_cue(speech, whole, CueCutOptions(min_part_s=1.0))
    assert parts is not None
    assert (parts[0].end_s, parts[1].start_s) == pytest.approx((3.0, 3.4), abs=1e-3)
    lone = _speech([(0.0, 0.4), (2.4, 5.0)], 5.0)
    assert split_cue(lone, plan_cues(lone, CueCutOptions(pause_s=3.0))[0], CueCutOptions(min_part_s=1.0)) is None


def test_the_model_hears_a_cue_with_some_of_its_pause() -> None:
    """Each cue's audio for the model reaches up to `model_pad_s` into the pauses around it, never
    into a neighbouring cue; its times stay its speech's."""
    rate = 16000
    speech = _speech([(1.0, 2.0), (2.2, 3.0), (4.0, 5.0)], 5.2)
    cues = plan_cues(speech, CueCutOptions(pause_s=0.1))
    assert [(round(c.start_s, 2), round(c.end_s, 2)) for c in cues] == [(1.0, 2.0), (2.2, 3.0), (4.0, 5.0)]
    bounds = neighbour_bounds(cues, speech.audio.size)
    assert bounds == [(0, cues[1].start), (cues[0].end, cues[2].start), (cues[1].end, speech.audio.size)]
    padded = CueCutOptions(model_pad_s=0.3)
    spans = [heard(speech, cue, b, padded) for cue, b in zip(cues, bounds)]
    assert [round(h.size / rate, 2) for h in spans] == [1.3 + 0.2, 0.2 + 0.8 + 0.3, 0.3 + 1.0 + 0.2]
    assert np.shares_memory(spans[0], speech.audio)  # a view, not a copy
    unpadded = [heard(speech, cue, b, CueCutOptions(model_pad_s=0.0)) for cue, b in zip(cues, bounds)]
    assert all(np.array_equal(h, cue.samples) for h, cue in zip(unpadded, cues))


def test_split_cue_finds_silence_over_a_recordings_background() -> None:
    """Over noise 30 dB under the speech, nothing is 50 dB under the peak; a gap between words
    that holds only the background is silent all the same, and the cue is cut there. A
    background that is not measured (too little audio outside speech) leaves the peak rule."""
    rate = 16000
    clean = _speech([(0.5, 6.5)], 7.0)
    clean.audio[int(3.6 * rate) : int(3.66 * rate)] = 0.0  # 60 ms between words
    noisy = _over_background(clean, 0.3 * 10 ** (-30 / 20))
    assert 10 * np.log10(0.3**2 / noisy.background) == pytest.approx(30, abs=0.5)
    gap = slice(int(3.6 * rate) // noisy.probability.frame, int(3.66 * rate) // noisy.probability.frame + 1)
    one = plan_cues(noisy, CueCutOptions())[0]
    assert split_cue(noisy, one, CueCutOptions(min_part_s=1.0)) is None  # the VAD hears speech there
    noisy.probability.values[gap] = 0.2
    parts = split_cue(noisy, one, CueCutOptions(min_part_s=1.0))
    assert parts is not None and abs(parts[0].end_s - 3.63) <= 0.011
    assert split_cue(dataclasses.replace(noisy, background=0.0), one, CueCutOptions(min_part_s=1.0)) is None
    assert background_of(noisy.audio[: 6 * rate], [SpeechSegment(int(0.15 * rate), 6 * rate)], rate) == 0.0
    # Run-on speech leaves only slivers between segments, and those hold speech: not measured.
    slivers = [SpeechSegment(int(0.2 * rate), 3 * rate), SpeechSegment(int(3.03 * rate), int(6.8 * rate))]
    assert background_of(noisy.audio, slivers, rate) == 0.0
    assert background_of(noisy.audio, [], rate) == 0.0


# ------------------------------------------------------------------ chunking_strategy


def test_chunking_strategy_forms() -> None:
    assert parse_chunking(_form()) is None
    assert parse_chunking(_form(chunking_strategy="auto")) is None
    sdk = parse_chunking(_form(**{"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.6",
                                  "chunking_strategy[silence_duration_ms]": "800"}))
    as_json = parse_chunking(_form(chunking_strategy='{"type": "server_vad", "threshold": 0.6, '
                                                     '"silence_duration_ms": 800}'))
    assert sdk == as_json == ServerVadChunking(type="server_vad", threshold=0.6, silence_duration_ms=800)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"chunking_strategy": "manual"}, "chunking_strategy"),
        ({"chunking_strategy": "[1, 2]"}, "chunking_strategy"),
        ({"chunking_strategy": '{"type": "server_vad", "threshold": 3}'}, "chunking_strategy"),
        ({"chunking_strategy": '{"type": "server_vad", "extra": 1}'}, "chunking_strategy"),
        ({"chunking_strategy[type]": "client_vad"}, "chunking_strategy[type]"),
        ({"chunking_strategy[threshold]": "0.5"}, "chunking_strategy[type]"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "nan"},
         "chunking_strategy[threshold]"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[prefix_padding_ms]": "-1"},
         "chunking_strategy[prefix_padding_ms]"),
        ({"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "0.5"},
         "chunking_strategy[silence_duration_ms]"),
        ({"chunking_strategy": "auto", "chunking_strategy[type]": "server_vad"}, "chunking_strategy"),
    ],
)
def test_bad_chunking_strategy_is_400(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_chunking(_form(**fields))
    assert info.value.param == param
    assert "chunking_strategy" in info.value.message


def test_server_vad_maps_onto_the_cutting() -> None:
    defaults = CueCutOptions()
    same = chunking_options(ServerVadChunking(type="server_vad"), defaults)
    assert same == chunking_options(None, defaults)
    tuned = chunking_options(
        ServerVadChunking(type="server_vad", threshold=0.7, prefix_padding_ms=200, silence_duration_ms=50), defaults
    )
    for vad in (tuned.pieces.vad, tuned.cues.vad):
        assert vad.threshold == 0.7 and vad.neg_threshold == pytest.approx(0.55) and vad.min_silence_s == 0.05
    assert (tuned.pieces.max_pause_s, tuned.pieces.edge_pad_s) == (0.05, 0.2)
    assert (tuned.cues.pause_s, tuned.cues.edge_pad_s) == (0.05, 0.2)


def test_the_models_piece_pause_is_the_pieces_default() -> None:
    """A model with `piece_pause_s` (the demo's) ends a piece at every such pause, short audio too;
    a request's server_vad still tunes it, and caption cues keep their own options."""
    assert model_pieces(None) == CutOptions()
    demo = model_pieces(0.3)
    assert (demo.max_pause_s, demo.quick_check_s) == (0.3, 0.0)
    assert model_pieces(0.05).vad.min_silence_s == 0.05  # the VAD must see such a pause at all
    cues = CueCutOptions()
    assert chunking_options(None, cues, demo) == Chunking(pieces=demo, cues=cues)
    tuned = chunking_options(ServerVadChunking(type="server_vad", silence_duration_ms=800), cues, demo)
    assert (tuned.pieces.max_pause_s, tuned.pieces.quick_check_s) == (0.8, 0.0)
    assert tuned.cues == dataclasses.replace(cues, pause_s=0.8)


# ------------------------------------------------------------------ request validation


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "whisper-1"}, "model"),
        ({"language": "de"}, "language"),
        ({"prompt": "Names: Kenobi"}, "prompt"),
        ({"temperature": 0.7}, "temperature"),
        ({"timestamp_granularities[]": ["word"], "response_format": "verbose_json"}, "timestamp_granularities[]"),
        ({"timestamp_granularities[]": ["segment"], "response_format": "json"}, "timestamp_granularities[]"),
        ({"include[]": ["logprobs"]}, "include[]"),
        ({"stream": True, "response_format": "srt"}, "stream"),
    ],
)
def test_unhonourable_values_are_rejected(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        validate_form(_form(**fields), MODEL)
    assert info.value.param == param


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"language": "en", "temperature": 0.0, "chunking_strategy": "auto"},
        {"timestamp_granularities[]": ["segment"], "response_format": "verbose_json"},
        {"stream": True, "response_format": "text"},
    ],
)
def test_honourable_values_pass(fields: dict[str, object]) -> None:
    validate_form(_form(**fields), MODEL)


def test_segments_keep_true_offsets_and_skip_empty_pieces() -> None:
    pieces = [
        Piece(start_s=1.5, end_s=30.0, samples=np.zeros(1, np.float32), start=24000, end=480000),
        Piece(start_s=31.0, end_s=40.0, samples=np.zeros(1, np.float32), start=496000, end=640000),
        Piece(start_s=45.25, end_s=80.0, samples=np.zeros(1, np.float32), start=724000, end=1280000),
    ]
    segments = segments_from(pieces, [" one ", "  ", "three"], [[7], [], [8, 9]])
    assert [(s.id, s.start, s.end, s.text, s.tokens) for s in segments] == [
        (0, 1.5, 30.0, "one", [7]), (1, 45.25, 80.0, "three", [8, 9])]


# ------------------------------------------------------------------ auth, settings, readiness


def test_bearer_parsing_and_key_match() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
    keys = [b"k1", b"k2"]
    assert key_matches("k2", keys)
    assert not key_matches("k3", keys)
    assert not key_matches("", keys)


@pytest.fixture(autouse=True)
def _clean_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    monkeypatch.setenv("GATEWAY_TRITON__URL", "triton:8001")
    monkeypatch.setenv("GATEWAY_AUTH__API_KEYS", '["secret-1"]')
    monkeypatch.setenv("GATEWAY_LIMITS__MAX_UPLOAD_BYTES", "1000")
    settings = Settings()
    assert settings.port == 9999 and settings.host == "127.0.0.1"
    assert settings.triton.url == "triton:8001"
    assert settings.limits.max_upload_bytes == 1000
    assert settings.auth.api_keys == [SecretStr("secret-1")]
    assert "secret-1" not in repr(settings)


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.port == 8080
    assert settings.triton.url == "127.0.0.1:8001"
    assert settings.model.id == MODEL
    assert settings.limits.max_upload_bytes == 25 * 1024 * 1024
    assert settings.limits.max_audio_seconds == 7200
    assert settings.limits.piece_seconds == 40
    assert settings.cors.allow_origins == []


def test_asr_budget_grows_with_the_audio_up_to_the_cap() -> None:
    model = Settings().model
    assert model.asr_budget(0) == model.asr_base_new_tokens
    assert model.asr_budget(2 * SAMPLE_RATE) == model.asr_base_new_tokens + math.ceil(2 * model.asr_tokens_per_second)
    assert model.asr_budget(2 * SAMPLE_RATE + SAMPLE_RATE // 10) > model.asr_budget(2 * SAMPLE_RATE)
    assert model.asr_budget(40 * SAMPLE_RATE) == model.asr_max_new_tokens


def test_readiness_is_cached_then_rechecked() -> None:
    now = [0.0]
    answers = [(True, "ready"), (False, "Triton unreachable")]
    calls: list[tuple[str, ...]] = []

    async def check(models: tuple[str, ...]) -> tuple[bool, str]:
        calls.append(tuple(models))
        return answers[len(calls) - 1]

    async def scenario() -> None:
        probe = ReadinessProbe(check, ["a", "b"], cache_s=1.0, clock=lambda: now[0])
        assert (await probe.get()).ready
        now[0] = 0.5
        assert (await probe.get()).ready  # cached
        now[0] = 1.5
        state = await probe.get()
        assert not state.ready and "unreachable" in state.reason

    asyncio.run(scenario())
    assert calls == [("a", "b"), ("a", "b")]


def test_response_format_values_match_openai() -> None:
    assert {f.value for f in ResponseFormat} == {"json", "text", "srt", "vtt", "verbose_json"}


@pytest.mark.parametrize(
    "message, status, expected, code",
    [
        # A streamed error: no status, the python model's tag decides.
        ("in ensemble 'canary_qwen_chat', [context_length_exceeded] the prompt is 5013 tokens; the maximum is 4096",
         None, BadRequestError, "context_length_exceeded"),
        ("in ensemble 'canary_qwen', [invalid_argument] AUDIO is empty", None, BadRequestError, "invalid_argument"),
        ("AUDIO is empty", "StatusCode.INVALID_ARGUMENT", BadRequestError, "invalid_argument"),
        ("scripted model failure", "StatusCode.INTERNAL", UpstreamError, "upstream_error"),
        ("scripted model failure", None, UpstreamError, "upstream_error"),
        ("in ensemble 'canary_qwen', index [3] out of range", None, UpstreamError, "upstream_error"),  # no tag
        ("connection refused", "StatusCode.UNAVAILABLE", UpstreamUnavailableError, None),
        ("deadline", "StatusCode.DEADLINE_EXCEEDED", UpstreamTimeoutError, None),
    ],
)
def test_triton_failures_map_to_client_or_server_errors(
    message: str, status: str | None, expected: type, code: str | None
) -> None:
    from tritonclient.utils import InferenceServerException

    error = to_api_error(InferenceServerException(msg=message, status=status), "canary_qwen")
    assert type(error) is expected
    if code is not None:
        assert error.code == code
    if expected is BadRequestError:
        assert "[" not in error.message and error.message.endswith(message.split("] ")[-1])


def test_single_valued_fields_sent_twice_are_refused() -> None:
    from starlette.datastructures import FormData

    from gateway.transcription import reject_repeated_fields

    reject_repeated_fields(FormData([("model", "m"), ("timestamp_granularities[]", "segment"),
                                     ("timestamp_granularities[]", "word")]))  # arrays may repeat
    with pytest.raises(BadRequestError) as caught:
        reject_repeated_fields(FormData([("model", "m"), ("model", "n")]))
    assert caught.value.param == "model" and caught.value.code == "duplicate_parameter"
