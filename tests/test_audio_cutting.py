"""Cutting long audio at pauses: real recordings with known pauses, plus the pure planner."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.audio import CutOptions, Piece, SileroVad, SpeechSegment, decode_audio, split_on_pauses
from gateway.audio.cutting import plan_cuts
from gateway.audio.vad import SpeechProbability
from tests.fixtures.audio import LongRecording
from tests.fixtures.audio.speech import read_audio, spoken_speech

RATE = 16000
WINDOW_S = 40.0
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def _check_pieces_against_recording(pieces: list[Piece], recording: LongRecording, samples: np.ndarray) -> None:
    assert pieces
    for previous, piece in zip(pieces, pieces[1:]):
        assert previous.end <= piece.start  # ordered, never overlapping
    for piece in pieces:
        assert 0 < piece.end - piece.start <= WINDOW_S * RATE
        assert piece.start_s == piece.start / RATE and piece.end_s == piece.end / RATE  # exact offsets
        assert np.shares_memory(piece.samples, samples)  # a view: no copies of long audio
        np.testing.assert_array_equal(piece.samples, samples[piece.start : piece.end])
    # Every cut falls in a known pause: no spoken segment straddles a piece boundary.
    for segment in recording.segments:
        for piece in pieces:
            for boundary in (piece.start_s, piece.end_s):
                assert not segment.start_s < boundary < segment.end_s, (boundary, segment)
    # Nothing lost: each spoken segment lies whole inside one piece.
    for segment in recording.segments:
        assert any(p.start_s <= segment.start_s and segment.end_s <= p.end_s for p in pieces), segment
    covered = sum(p.end_s - p.start_s for p in pieces)
    assert covered >= recording.speech_seconds()
    assert covered <= recording.duration_s


def test_ten_minute_recording_is_cut_at_its_pauses(long_recording, vad: SileroVad) -> None:
    recording = long_recording(10)
    samples = decode_audio(recording.path.read_bytes(), max_seconds=7200).samples
    started = time.process_time()
    pieces = split_on_pauses(samples, RATE, WINDOW_S, vad=vad)
    cpu_s = time.process_time() - started
    _check_pieces_against_recording(pieces, recording, samples)
    assert len(pieces) >= recording.duration_s / WINDOW_S
    # Pieces use the window well (cut at pauses near its end, not at the first pause).
    assert np.mean([p.end_s - p.start_s for p in pieces[:-1]]) > 0.5 * WINDOW_S
    assert cpu_s < 10, cpu_s
    print(f"\n10-minute cut: {len(pieces)} pieces in {cpu_s:.2f} CPU s")


def test_short_window_still_cuts_only_in_pauses(long_recording, vad: SileroVad) -> None:
    recording = long_recording(10)
    samples = decode_audio(recording.path.read_bytes(), max_seconds=7200).samples[: 120 * RATE]
    pieces = split_on_pauses(samples, RATE, 12.0, vad=vad)  # utterances are up to 5.6 s
    assert all(p.end - p.start <= 12 * RATE for p in pieces)
    inside = [s for s in recording.segments if s.end_s <= 120]
    for segment in inside:
        assert any(p.start_s <= segment.start_s and segment.end_s <= p.end_s for p in pieces), segment


def test_silence_and_noise_give_no_pieces(vad: SileroVad) -> None:
    assert split_on_pauses(np.zeros(90 * RATE, dtype=np.float32), RATE, WINDOW_S, vad=vad) == []
    noise = (np.random.default_rng(1).standard_normal(60 * RATE) * 0.1).astype(np.float32)
    assert split_on_pauses(noise, RATE, WINDOW_S, vad=vad) == []
    assert split_on_pauses(np.zeros(0, dtype=np.float32), RATE, WINDOW_S, vad=vad) == []


def test_speech_without_pauses_is_cut_in_a_quiet_moment(utterances, vad: SileroVad) -> None:
    """Back-to-back speech longer than the window: cut where it is least like speech (quieter
    than the speech around), never over the window."""
    clips = []
    for utterance in utterances[1:]:
        clips.append(spoken_speech(utterance.path))
    speech = np.concatenate(clips * 3)  # ~50 s with no pause longer than a comma
    pieces = split_on_pauses(speech, RATE, 20.0, vad=vad)
    assert len(pieces) >= 3
    assert all(p.end - p.start <= 20 * RATE for p in pieces)
    for piece, following in zip(pieces, pieces[1:]):
        if piece.end == following.start:  # a cut inside continuous speech
            around = speech[piece.end - 160 : piece.end + 160]
            assert np.sqrt(np.mean(around**2)) < np.sqrt(np.mean(speech**2)), piece.end_s


def test_sixty_minute_cut_time_and_memory(long_recording) -> None:
    """One core, bounded memory: run in a fresh process to measure its own peak RSS."""
    window_s = WINDOW_S
    recording = long_recording(60)
    script = f"""
import gc, json, time, tracemalloc
from gateway.audio import decode_audio, split_on_pauses

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

data = open({str(recording.path)!r}, "rb").read()
t0 = time.process_time()
audio = decode_audio(data, max_seconds=7200)
t1 = time.process_time()
decode_peak = rss_mb("VmHWM")
del data
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # restart the peak-RSS (VmHWM) count
rss_before = rss_mb("VmRSS")
tracemalloc.start()
t2 = time.process_time()
pieces = split_on_pauses(audio.samples, 16000, {window_s})
t3 = time.process_time()
traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps({{"audio_s": audio.duration_s, "decode_cpu_s": round(t1 - t0, 2),
    "cut_cpu_s": round(t3 - t2, 2), "pieces": len(pieces),
    "samples_mb": round(audio.samples.nbytes / 2**20), "decode_peak_rss_mb": round(decode_peak),
    "cut_extra_peak_rss_mb": round(rss_mb("VmHWM") - rss_before, 1),
    "cut_traced_peak_mb": round(traced_peak, 1),
    "max_piece_s": max(p.end_s - p.start_s for p in pieces)}}))
"""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_s"] = round(time.monotonic() - started, 1)
    print(f"\n60-minute recording: {report}")
    assert report["max_piece_s"] <= window_s
    assert report["pieces"] >= 3600 / window_s
    assert report["cut_cpu_s"] < 60  # seconds to tens of seconds on one core
    # The cut holds views, not copies of the 220 MB of samples.
    assert report["cut_extra_peak_rss_mb"] < 100
    assert report["cut_traced_peak_mb"] < 50


# The planner alone, on hand-made speech segments (pure logic, no model).


def _plan(spans: list[tuple[float, float]], window_s: float, total_s: float, **options: float) -> list[tuple[float, float]]:
    audio = np.zeros(int(total_s * RATE), dtype=np.float32)
    segments = [SpeechSegment(int(a * RATE), int(b * RATE)) for a, b in spans]
    cuts = plan_cuts(audio, segments, RATE, window_s, CutOptions(**options))
    return [(a / RATE, b / RATE) for a, b in cuts]


def test_plan_cuts_at_the_longest_late_pause() -> None:
    # Pauses at 8-8.2 (short), 12-13 (long), 17-17.3 (short); window 20 s.
    spans = [(0, 8), (8.2, 12), (13, 17), (17.3, 25)]
    pieces = _plan(spans, 20.0, 30.0, edge_pad_s=0.0)
    assert pieces == [(0, 12.5), (12.5, 25)]


def test_plan_takes_the_latest_pause_when_none_is_late() -> None:
    spans = [(0, 3), (3.2, 19.5), (20, 30)]  # the only late pause is after 19.5
    assert _plan(spans, 20.0, 30.0, edge_pad_s=0.0)[0] == (0, 19.75)


def test_plan_drops_long_silences_and_keeps_offsets() -> None:
    spans = [(1, 4), (10, 12), (12.5, 14)]
    assert _plan(spans, 40.0, 20.0, max_pause_s=3.0, edge_pad_s=0.0) == [(1, 4), (10, 14)]
    # Around a dropped pause a little silence stays on both sides (late/early detection).
    assert _plan(spans, 40.0, 20.0, max_pause_s=3.0, edge_pad_s=0.3) == [(0.7, 4.3), (9.7, 14.3)]
    assert _plan([(0.1, 3), (3.4 + 3.1, 8)], 40.0, 8.1, max_pause_s=3.0) == [(0, 3.3), (6.2, 8.1)]


def test_plan_cuts_continuous_speech_within_the_window() -> None:
    pieces = _plan([(0, 95)], 40.0, 100.0, edge_pad_s=0.0)
    assert pieces[0][0] == 0 and pieces[-1][1] == 95
    assert all(b - a <= 40 for a, b in pieces)
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))  # nothing lost between


def test_a_cut_inside_speech_takes_the_moment_least_like_speech() -> None:
    """Run-on speech longer than the window: the cut falls in the last `fallback_search_s`, in
    silent 40 ms if there are any (quiet, and the VAD's probability under its line for speech
    ending), else where the VAD is least sure of speech; never by energy alone, which in
    fluent speech is often a stop's closure inside a word."""
    audio = np.full(30 * RATE, 0.3, dtype=np.float32)
    frame = 512
    speech = SpeechProbability(np.ones(-(-audio.size // frame), dtype=np.float32), frame)
    options = CutOptions(edge_pad_s=0.0, fallback_search_s=5.0)
    speech.values[int(17.5 * RATE) // frame] = 0.1  # the VAD doubts one frame
    audio[int(16.0 * RATE) : int(16.03 * RATE)] = 0.01  # 30 ms far quieter, but not silent
    first_cut = plan_cuts(audio, [SpeechSegment(0, audio.size)], RATE, 20.0, options, speech)[0][1] / RATE
    assert abs(first_cut - 17.5) <= frame / RATE
    audio[int(19.0 * RATE) : int(19.06 * RATE)] = 0.0  # 60 ms of digital silence the VAD hears as speech
    first_cut = plan_cuts(audio, [SpeechSegment(0, audio.size)], RATE, 20.0, options, speech)[0][1] / RATE
    assert abs(first_cut - 17.5) <= frame / RATE
    speech.values[int(19.0 * RATE) // frame : int(19.06 * RATE) // frame + 1] = 0.3  # under neg_threshold 0.35
    first_cut = plan_cuts(audio, [SpeechSegment(0, audio.size)], RATE, 20.0, options, speech)[0][1] / RATE
    assert abs(first_cut - 19.03) <= 0.011  # silent 60 ms win over the deeper doubt
    # Without the VAD's probabilities: the quietest window.
    audio[int(19.0 * RATE) : int(19.06 * RATE)] = 0.3
    first_cut = plan_cuts(audio, [SpeechSegment(0, audio.size)], RATE, 20.0, options)[0][1] / RATE
    assert abs(first_cut - 16.02) <= 0.011


def test_plan_without_speech_is_empty() -> None:
    assert _plan([], 40.0, 10.0) == []


def test_a_pause_of_exactly_max_pause_ends_a_piece() -> None:
    """"At least `max_pause_s`" ends a piece (the settings' word for it), so a pause the VAD's
    frames make exactly that long does."""
    assert _plan([(0, 2), (2.5, 4)], 40.0, 5.0, max_pause_s=0.5, edge_pad_s=0.0) == [(0, 2), (2.5, 4)]
    assert _plan([(0, 2), (2.4, 4)], 40.0, 5.0, max_pause_s=0.5, edge_pad_s=0.0) == [(0, 4)]


def test_a_window_too_short_to_cut_into_is_refused() -> None:
    with pytest.raises(ValueError, match="too short"):
        _plan([(0, 1)], 1e-5, 2.0)


def test_short_speech_is_one_whole_piece_after_a_prefix_check(utterances, vad: SileroVad) -> None:
    """Audio that fits one window and speaks early: one piece, the whole clip, and the VAD
    scores only the prefix (the gateway's common case, where VAD was most of its CPU)."""
    samples, _ = read_audio(max(utterances, key=lambda u: u.duration_s).path)
    quick_started = time.process_time()
    pieces = split_on_pauses(samples, RATE, WINDOW_S, vad=vad)
    quick_cpu = time.process_time() - quick_started
    assert [(p.start, p.end) for p in pieces] == [(0, samples.size)]
    assert np.shares_memory(pieces[0].samples, samples)
    assert vad.speech_in_prefix(samples, RATE, 2.0)
    full_started = time.process_time()
    full = split_on_pauses(samples, RATE, WINDOW_S, vad=vad, options=CutOptions(quick_check_s=0.0))
    full_cpu = time.process_time() - full_started
    assert len(full) == 1 and 0 <= full[0].start < full[0].end <= samples.size  # same speech, trimmed edges
    print(f"\n{samples.size / RATE:.1f} s clip: prefix check {quick_cpu * 1000:.0f} ms CPU, "
          f"whole-clip VAD {full_cpu * 1000:.0f} ms")


def test_speech_after_the_prefix_is_still_found(utterances, vad: SileroVad) -> None:
    """Silence first: the prefix check finds nothing, the whole-clip VAD still finds the speech."""
    speech, _ = read_audio(utterances[0].path)
    samples = np.concatenate([np.zeros(5 * RATE, dtype=np.float32), speech])
    assert not vad.speech_in_prefix(samples, RATE, 2.0)
    pieces = split_on_pauses(samples, RATE, WINDOW_S, vad=vad)
    assert len(pieces) == 1 and pieces[0].start >= 4 * RATE


def test_a_model_that_wants_a_piece_per_utterance_gets_short_audio_cut_too(utterances, vad: SileroVad) -> None:
    """Two sentences 0.5 s apart fit one window: kept whole by default, but with the demo model's
    `piece_pause_s` each sentence is its own piece, cut in the pause."""
    from export.demo import DEMO_PIECE_PAUSE_S
    from gateway.chunking import model_pieces

    first, second = spoken_speech(utterances[0].path), spoken_speech(utterances[1].path)
    pause = np.zeros(RATE // 2, dtype=np.float32)
    samples = np.concatenate([first, pause, second])
    assert samples.size < WINDOW_S * RATE
    assert len(split_on_pauses(samples, RATE, WINDOW_S, vad=vad, options=model_pieces(None))) == 1
    pieces = split_on_pauses(samples, RATE, WINDOW_S, vad=vad, options=model_pieces(DEMO_PIECE_PAUSE_S))
    assert len(pieces) == 2
    gap = (first.size, first.size + pause.size)  # the pause, in samples of `samples`
    assert gap[0] <= pieces[0].end <= pieces[1].start <= gap[1]
