"""Caption-sized pieces: speech cut at pauses into spans of at most `max_cue_s`, each
trimmed to the speech it holds.

The model gives no word timestamps, so a transcript cannot be placed inside the audio it
came from. Caption timing is therefore made honest by cutting first: every cue is its own
short span of audio, transcribed on its own, so its text is the transcript of exactly the
span its start and end name. Rules:

1. Cues come from the same pause planner as long pieces (`plan_cuts`), with a window of
   `max_cue_s` and with every pause of at least `pause_s` ending a cue.
2. Each cue is trimmed to its detected speech, then tightened to where the sound is: the
   VAD's segments carry `VadOptions.speech_pad_s` and end a little late (its hysteresis),
   so within `tighten_s` of each edge, 10 ms blocks quieter than `quiet_db` under the
   cue's loudest block are dropped, keeping `keep_s` of margin. The VAD can also start late
   on a soft onset (espeak-ng's "Th", 110 ms of it at a twentieth of the peak, 2026-12-06),
   so each edge also moves out over adjacent blocks that are not quiet, again with `keep_s`
   of margin, never past the middle of the pause to a neighbour. Then `edge_pad_s` of the
   surrounding silence is added back within the same bound. A cue's start and end are where
   its speech starts and ends, not the middle of a pause.
3. A cue whose text turns out too long for two subtitle lines is cut again (`split_cue`)
   into parts of at least `min_part_s`, and each part is transcribed again. It is cut at its
   longest inner pause; where the VAD found none, only at 40 ms that are `silent_db` under
   the cue's loudest 10 ms block, the one the VAD deems least like speech
   (`cutting.least_speech_like`); where no 40 ms are that quiet, it is not cut and keeps its
   long text. The quietest moment of fluent speech is often inside a word (a stop's
   closure): the benchmark's long recording, 2026-12-07, cut there 20 times in 61 cues, and
   each part then transcribes half a word. This rule cut inside a word once in 43 cuts and
   left 18 cues whole.

CPU-bound and blocking (VAD over the whole file): async callers run `speech_map` and
`plan_cues` in a worker thread; `split_cue` only reads one short cue's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gateway.audio.cutting import CutOptions, Piece, block_energy, energy_block, least_speech_like, plan_cuts
from gateway.audio.vad import SileroVad, SpeechProbability, SpeechSegment, VadOptions, shared_vad



@dataclass(frozen=True)
class CueCutOptions:
    """How caption cues are cut; the defaults follow common subtitle guidelines."""

    vad: VadOptions = field(default_factory=VadOptions)
    max_cue_s: float = 7.0  # longest cue
    # A pause between detected speech at least this long ends a cue. Detected speech is
    # padded, so 0.3 s here is a silence of about 0.5 s in the audio.
    pause_s: float = 0.3
    edge_pad_s: float = 0.0  # silence added around the (tightened) speech
    min_part_s: float = 1.0  # a cue is cut again only into parts at least this long
    tighten_s: float = 0.3  # how far in from each detected edge quiet audio may be dropped
    quiet_db: float = 35.0  # blocks this far under the cue's loudest are quiet
    keep_s: float = 0.05  # margin kept before the first and after the last loud block
    silent_db: float = CutOptions.silent_db  # a cue without a pause is cut again only where 40 ms are this quiet


@dataclass(frozen=True)
class SpeechMap:
    """Audio and where its speech is (samples of `audio`)."""

    audio: np.ndarray
    sample_rate: int
    segments: list[SpeechSegment]
    probability: SpeechProbability  # the VAD's, from the pass that found `segments`


def speech_map(
    samples: np.ndarray, sample_rate: int, options: CueCutOptions, *, vad: SileroVad | None = None
) -> SpeechMap:
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    speech, segments = (vad or shared_vad()).speech_scores(audio, sample_rate, options.vad)
    return SpeechMap(audio, sample_rate, segments, speech)


def plan_cues(speech: SpeechMap, options: CueCutOptions) -> list[Piece]:
    """Cue-sized pieces in order, each trimmed to its speech (module doc, rules 1-2)."""
    if not speech.segments:
        return []
    cut = CutOptions(
        vad=options.vad,
        max_pause_s=options.pause_s,
        edge_pad_s=0.0,
        fallback_search_s=min(2.0, options.max_cue_s / 2),
        silent_db=options.silent_db,
    )
    bounds = plan_cuts(speech.audio, speech.segments, speech.sample_rate, options.max_cue_s, cut, speech.probability)
    trimmed = [
        _tightened(speech.audio, span, speech.sample_rate, options)
        for start, end in bounds
        if (span := _speech_span(speech.segments, start, end)) is not None
    ]
    pad = int(options.edge_pad_s * speech.sample_rate)
    pieces = []
    for index, (start, end) in enumerate(trimmed):
        low = 0 if index == 0 else (trimmed[index - 1][1] + start) // 2
        high = speech.audio.size if index == len(trimmed) - 1 else (end + trimmed[index + 1][0]) // 2
        start, end = _widened(speech.audio, (start, end), (low, high), speech.sample_rate, options)
        pieces.append(_piece(speech, max(low, start - pad), min(high, end + pad)))
    return pieces


def split_cue(speech: SpeechMap, piece: Piece, options: CueCutOptions) -> tuple[Piece, Piece] | None:
    """`piece` cut in two (module doc, rule 3); None when it is too short to cut or has no
    pause and no quiet moment to cut at."""
    rate = speech.sample_rate
    min_part = int(options.min_part_s * rate)
    if piece.end - piece.start < 2 * min_part:
        return None
    earliest, latest = piece.start + min_part, piece.end - min_part
    inner = [s for s in speech.segments if s.end > piece.start and s.start < piece.end]
    gaps = [
        (after.start - before.end, before.end, after.start)
        for before, after in zip(inner, inner[1:])
        if earliest <= (before.end + after.start) // 2 <= latest
    ]
    if gaps:
        _, left_end, right_start = max(gaps)
    else:
        cut = least_speech_like(
            speech.audio, (piece.start, piece.end), (earliest, latest), rate, options.silent_db, speech.probability,
            silent_only=True,
        )
        if cut is None:
            return None
        left_end = right_start = cut
    left = _tightened(speech.audio, (piece.start, left_end), speech.sample_rate, options)
    right = _tightened(speech.audio, (right_start, piece.end), speech.sample_rate, options)
    return _piece(speech, *left), _piece(speech, *right)


def _speech_span(segments: list[SpeechSegment], start: int, end: int) -> tuple[int, int] | None:
    """[start, end) narrowed to the first and last speech inside it; None without speech."""
    inside = [s for s in segments if s.end > start and s.start < end]
    if not inside:
        return None
    return max(start, inside[0].start), min(end, inside[-1].end)


def _tightened(audio: np.ndarray, span: tuple[int, int], sample_rate: int, options: CueCutOptions) -> tuple[int, int]:
    """`span` without the quiet audio at its edges (module doc, rule 2)."""
    start, end = span
    block = energy_block(sample_rate)
    energy = block_energy(audio, start, end, sample_rate)
    if energy.size < 3:
        return span
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-options.quiet_db / 10))
    reach, keep = int(options.tighten_s * sample_rate), int(options.keep_s * sample_rate)
    first, last = start + int(loud[0]) * block, start + (int(loud[-1]) + 1) * block
    new_start = max(start, first - keep) if first - start <= reach else start + reach - keep
    new_end = min(end, last + keep) if end - last <= reach else end - reach + keep
    return (new_start, new_end) if new_start < new_end else span


def _widened(
    audio: np.ndarray, span: tuple[int, int], bounds: tuple[int, int], sample_rate: int, options: CueCutOptions
) -> tuple[int, int]:
    """`span` moved out over the 10 ms blocks beside it that are not quiet (than its loudest
    block), then `keep_s` further, within `bounds` and `max_cue_s` (module doc, rule 2)."""
    start, end = span
    longest = int(options.max_cue_s * sample_rate)
    low = max(bounds[0], end - longest)
    block = energy_block(sample_rate)
    energy = block_energy(audio, start, end, sample_rate)
    if energy.size < 1:
        return span
    loudest = float(energy.max())
    quiet = loudest * 10 ** (-options.quiet_db / 10)
    keep = int(options.keep_s * sample_rate)
    new_start, new_end = start, end
    while new_start - block >= low and float(np.square(audio[new_start - block : new_start]).mean()) >= quiet:
        new_start -= block
    new_start = max(low, new_start - keep) if new_start < start else start
    high = min(bounds[1], new_start + longest)
    while new_end + block <= high and float(np.square(audio[new_end : new_end + block]).mean()) >= quiet:
        new_end += block
    return new_start, min(high, new_end + keep) if new_end > end else end


def _piece(speech: SpeechMap, start: int, end: int) -> Piece:
    rate = speech.sample_rate
    return Piece(start_s=start / rate, end_s=end / rate, samples=speech.audio[start:end], start=start, end=end)
