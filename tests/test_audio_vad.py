"""Silero VAD over onnxruntime: speech vs silence vs noise, and the batched scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.audio import SileroVad, VadOptions, decode_audio, has_speech
from gateway.audio.vad import LONE_WORD_AUDIO_S, segments_from_probabilities
from tests.fixtures.audio import Utterance
from tests.fixtures.audio.speech import read_audio, speech_extent, synthesize

RATE = 16000


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def test_speech_is_found(utterances: list[Utterance], vad: SileroVad) -> None:
    for utterance in utterances:
        samples, _ = read_audio(utterance.path)
        segments = vad.speech_segments(samples, RATE)
        assert segments, utterance.text
        spoken = sum(s.end - s.start for s in segments) / RATE
        assert spoken > 0.5 * utterance.duration_s, utterance.text


def test_silence_and_noise_are_not_speech(vad: SileroVad) -> None:
    rng = np.random.default_rng(3)
    assert not has_speech(np.zeros(10 * RATE, dtype=np.float32), RATE, vad=vad)
    assert not has_speech(np.zeros(0, dtype=np.float32), RATE, vad=vad)
    for level in (0.01, 0.1, 0.5):
        noise = (rng.standard_normal(10 * RATE) * level).clip(-1, 1).astype(np.float32)
        assert not has_speech(noise, RATE, vad=vad), level
    hum = (0.3 * np.sin(2 * np.pi * 50 * np.arange(5 * RATE) / RATE)).astype(np.float32)
    assert not has_speech(hum, RATE, vad=vad)


def test_speech_inside_noise_is_located(utterances: list[Utterance], vad: SileroVad) -> None:
    speech, _ = read_audio(utterances[3].path)
    rng = np.random.default_rng(5)
    signal = (rng.standard_normal(12 * RATE) * 0.005).astype(np.float32)
    signal[4 * RATE : 4 * RATE + speech.size] += speech
    segments = vad.speech_segments(signal, RATE)
    assert segments
    assert segments[0].start >= 4 * RATE - int(0.3 * RATE)
    assert segments[-1].end <= 4 * RATE + speech.size + int(0.3 * RATE)


def test_batched_scoring_matches_sequential(long_recording, vad: SileroVad) -> None:
    """Warm-started streams in one batch decide like one stream run from the start.

    The recurrent state has a long memory, so probabilities are not bit-identical; the
    decisions and the segment boundaries must agree.
    """
    recording = long_recording(10)
    samples = decode_audio(recording.path.read_bytes(), max_seconds=7200).samples[: 180 * RATE]
    sequential = SileroVad(batch_rows=1)
    p_seq = sequential.frame_probabilities(samples, RATE)
    p_bat = vad.frame_probabilities(samples, RATE)
    assert p_seq.shape == p_bat.shape == (-(-samples.size // 512),)
    assert np.mean((p_seq > 0.5) != (p_bat > 0.5)) < 0.005
    seq_segments = sequential.speech_segments(samples, RATE)
    bat_segments = vad.speech_segments(samples, RATE)
    tolerance = 0.25 * RATE
    matched = [
        a for a in seq_segments
        if any(abs(a.start - b.start) <= tolerance or abs(a.end - b.end) <= tolerance for b in bat_segments)
    ]  # fmt: skip
    assert len(matched) == len(seq_segments)
    assert abs(len(seq_segments) - len(bat_segments)) <= 1
    spoken_seq = sum(s.end - s.start for s in seq_segments)
    spoken_bat = sum(s.end - s.start for s in bat_segments)
    assert spoken_bat == pytest.approx(spoken_seq, rel=0.02)


def test_8khz_audio_is_supported(utterances: list[Utterance], vad: SileroVad) -> None:
    samples, _ = read_audio(utterances[2].path)
    assert vad.speech_segments(samples[::2].copy(), 8000)
    with pytest.raises(ValueError):
        vad.frame_probabilities(samples, 22050)


# Pure logic of the speech decision (hysteresis), on hand-made probabilities.
FRAME = 512


def _segments(probs: list[float], **options: float) -> list[tuple[int, int]]:
    opts = VadOptions(min_speech_s=0.0, speech_pad_s=0.0, **options)
    found = segments_from_probabilities(np.array(probs, dtype=np.float32), FRAME, RATE, len(probs) * FRAME, opts)
    return [(s.start // FRAME, s.end // FRAME) for s in found]


def test_hysteresis_enters_high_and_leaves_low() -> None:
    # 0.4 is above neg_threshold: it does not end speech, and does not start it.
    assert _segments([0.1, 0.6, 0.4, 0.4, 0.6, 0.1, 0.1, 0.1, 0.4, 0.1]) == [(1, 5)]


def test_short_dips_do_not_end_speech() -> None:
    probs = [0.9] * 5 + [0.1] * 2 + [0.9] * 5 + [0.1] * 6
    assert _segments(probs, min_silence_s=0.1) == [(0, 12)]  # 0.1 s is 3+ frames
    assert _segments(probs, min_silence_s=0.05) == [(0, 5), (7, 12)]


def test_a_lone_short_word_is_speech_but_not_beside_longer_speech() -> None:
    """A short word ("hi": 6 frames) is speech where it stands alone: in a short recording, or
    0.2 s clear of any other burst in a long one (a "Yes." in a meeting, once dropped unheard);
    0.16 s from longer speech it is dropped like a breath, and a click (2 frames) always is."""
    opts = VadOptions(min_speech_s=0.25, speech_pad_s=0.0)  # 0.25 s is 8 frames

    def found(*runs: tuple[float, int]) -> list[tuple[int, int]]:
        probs = np.concatenate([np.full(count, value, dtype=np.float32) for value, count in runs])
        return [(s.start // FRAME, s.end // FRAME)
                for s in segments_from_probabilities(probs, FRAME, RATE, probs.size * FRAME, opts)]

    long = int(LONE_WORD_AUDIO_S * RATE / FRAME)  # frames of silence that make a recording long
    assert found((0.0, 10), (0.95, 6), (0.0, 20)) == [(10, 16)]
    assert found((0.0, 10), (0.95, 6), (0.0, long), (0.95, 20), (0.0, 20)) == [(10, 16), (16 + long, 36 + long)]
    assert found((0.0, 10), (0.95, 20), (0.0, 7), (0.95, 6), (0.0, long)) == [(10, 30), (37, 43)]  # 0.22 s clear
    assert found((0.0, 10), (0.95, 6), (0.0, 5), (0.95, 20), (0.0, 20)) == [(21, 41)]
    assert found((0.0, 10), (0.95, 6), (0.0, 5), (0.95, 20), (0.0, long)) == [(21, 41)]
    assert found((0.0, 10), (0.95, 2), (0.0, 20)) == []
    assert found((0.0, long), (0.95, 2), (0.0, long), (0.95, 20), (0.0, 20)) == [(2 * long + 2, 2 * long + 22)]


def test_a_spoken_short_word_makes_a_piece_and_a_cue(audio_dir: Path, vad: SileroVad) -> None:
    """"Hi." said briskly (0.33 s of audio, 0.22 s of it speech): once an empty transcript."""
    from gateway.audio.cue_cutting import CueCutOptions, plan_cues, speech_map
    from gateway.audio.cutting import split_on_pauses

    samples, rate = read_audio(synthesize("Hi.", audio_dir, words_per_minute=260))
    bursts = vad.speech_segments(samples, rate, VadOptions(min_speech_s=0.0, speech_pad_s=0.0))
    assert len(bursts) == 1 and bursts[0].end - bursts[0].start < VadOptions().min_speech_s * rate
    assert len(split_on_pauses(samples, rate, 40.0, vad=vad)) == 1
    assert len(plan_cues(speech_map(samples, rate, CueCutOptions(), vad=vad), CueCutOptions())) == 1


@pytest.mark.parametrize(("before_s", "after_s"), [(1.0, 1.0), (0.35, 1.0)])
def test_a_spoken_short_word_between_pauses_is_in_a_piece(
    audio_dir: Path, vad: SileroVad, before_s: float, after_s: float
) -> None:
    """"Go." said briskly (Silero: 0.22 s of speech) after a sentence, in a recording cut at
    every pause (the demo model's `piece_pause_s`): the pause's silence is dropped, and the
    word went with it (1 s after the sentence) or most of it (0.35 s after: 22 % heard) until
    lone words counted in long audio too."""
    from gateway.audio.cutting import split_on_pauses
    from gateway.chunking import model_pieces

    sentence, rate = read_audio(synthesize("The weather was cold and grey all morning.", audio_dir))
    sentence = sentence[slice(*speech_extent(sentence, rate))]
    word, _ = read_audio(synthesize("Go.", audio_dir, words_per_minute=220))
    word = word[slice(*speech_extent(word, rate))]
    before, after = (np.zeros(int(s * rate), dtype=np.float32) for s in (before_s, after_s))
    audio = np.concatenate([sentence, before, word, after, sentence])
    at = sentence.size + before.size
    pieces = split_on_pauses(audio, rate, 40.0, vad=vad, options=model_pieces(0.15))
    assert any(p.start <= at and p.end >= at + word.size for p in pieces), [(p.start_s, p.end_s) for p in pieces]


def test_short_bursts_are_dropped_and_padding_merges() -> None:
    probs = np.array([0.0] * 10 + [0.9] * 2 + [0.0] * 40 + [0.9] * 20 + [0.0] * 10, dtype=np.float32)
    opts = VadOptions(min_speech_s=0.25, speech_pad_s=0.0)
    found = segments_from_probabilities(probs, FRAME, RATE, probs.size * FRAME, opts)
    assert [(s.start // FRAME, s.end // FRAME) for s in found] == [(52, 72)]
    padded = segments_from_probabilities(
        np.array([0.9] * 10 + [0.0] * 4 + [0.9] * 10, dtype=np.float32), FRAME, RATE, 24 * FRAME,
        VadOptions(min_speech_s=0.0, speech_pad_s=0.1),
    )
    assert len(padded) == 1 and padded[0].start == 0 and padded[0].end == 24 * FRAME
