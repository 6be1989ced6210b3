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
   so within `tighten_s` of each edge, quiet 10 ms blocks are dropped, keeping `keep_s` of
   margin. The VAD can also start late on a soft onset (espeak-ng's "Th", 110 ms of it at a
   twentieth of the peak, 2026-12-06), so each edge also moves out over adjacent sound,
   again with `keep_s` of margin, never past the middle of the pause to a neighbour. Then
   `edge_pad_s` of the surrounding silence is added back within the same bound. A cue's
   start and end are where its speech starts and ends, not the middle of a pause.
   Quiet is `quiet_db` under the cue's loudest block or no louder than the recording's
   background (`cutting.Silence`), and sound is a run of `_SOUND_BLOCKS` blocks that are
   not quiet: half of a background's blocks are louder than its median, and pink noise
   swells for tens of ms. Judged on the peak alone, noise 15-25 dB under the speech was
   sound, and cues widened to the middle of every pause (bench wer's recording over pink
   noise, 2026-12-07: cue starts a median 0.44 s before the speech, ends 0.51-0.54 s after
   it; now 0.08 s and 0.17-0.18 s; no edge inside a word either way).
3. A cue whose text turns out too long for two subtitle lines is cut again (`split_cue`)
   into parts of at least `min_part_s`, and each part is transcribed again. It is cut at its
   longest inner pause; where the VAD found none, only at silent 40 ms (`silent_db` and the
   background, as `cutting.least_speech_like` rule 4 says), the one the VAD deems least like
   speech; where no 40 ms are silent, it is not cut and keeps its long text. The quietest
   moment of fluent speech is often inside a word (a stop's closure): the benchmark's long
   recording, 2026-12-07, cut there 20 times in 61 cues, and each part then transcribes
   half a word.
4. The model hears a little more than a cue shows (`heard`): up to `model_pad_s` of the
   pause on each side, never past a neighbouring cue's edge, so no other speech. Long
   pieces keep 0.3 s of silence around their speech (`CutOptions.edge_pad_s`) for the same
   reason: a model that hears speech stop at the audio's very end can take it for a word cut
   off. A cue's times stay where its speech starts and ends. (bench wer, 2026-12-07: the
   6-minute recording's cues 0.506 with the 50 ms kept around the speech, 0.375 with up to
   0.3 s, 0.403 with up to 0.6 s; over pink noise 25 dB under the speech 0.435 / 0.379 /
   0.402; `json` 0.387.)

CPU-bound and blocking (VAD over the whole file): async callers run `speech_map` and
`plan_cues` in a worker thread; `split_cue` only reads one short cue's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gateway.audio.cutting import (
    CutOptions,
    Piece,
    Silence,
    background_of,
    block_energy,
    energy_block,
    least_speech_like,
    plan_cuts,
)
from gateway.audio.vad import SileroVad, SpeechProbability, SpeechSegment, VadOptions, shared_vad

_SOUND_BLOCKS = 3  # loud 10 ms blocks in a row that are sound, not a burst of noise (rule 2)


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
    model_pad_s: float = CutOptions.edge_pad_s  # the pause the model hears around a cue's speech (rule 4)


@dataclass(frozen=True)
class SpeechMap:
    """Audio and where its speech is (samples of `audio`)."""

    audio: np.ndarray
    sample_rate: int
    segments: list[SpeechSegment]
    probability: SpeechProbability  # the VAD's, from the pass that found `segments`
    background: float  # the recording's background_of: what its silence sounds like


def speech_map(
    samples: np.ndarray, sample_rate: int, options: CueCutOptions, *, vad: SileroVad | None = None
) -> SpeechMap:
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    speech, segments = (vad or shared_vad()).speech_scores(audio, sample_rate, options.vad)
    return SpeechMap(
        audio, sample_rate, segments, speech, background_of(audio, segments, sample_rate)
    )


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
    bounds = plan_cuts(
        speech.audio, speech.segments, speech.sample_rate, options.max_cue_s, cut, speech.probability, speech.background
    )
    trimmed = [
        _tightened(speech, span, options)
        for start, end in bounds
        if (span := _speech_span(speech.segments, start, end)) is not None
    ]
    pad = int(options.edge_pad_s * speech.sample_rate)
    longest = int(options.max_cue_s * speech.sample_rate)
    pieces = []
    for index, (start, end) in enumerate(trimmed):
        low = 0 if index == 0 else (trimmed[index - 1][1] + start) // 2
        high = speech.audio.size if index == len(trimmed) - 1 else (end + trimmed[index + 1][0]) // 2
        start, end = _widened(speech, (start, end), (low, high), options)
        side = min(pad, max(0, longest - (end - start)) // 2)  # the pad never stretches a cue past max_cue_s
        pieces.append(_piece(speech, max(low, start - side), min(high, end + side)))
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
        if before.end >= earliest and after.start <= latest  # both parts span min_part_s, before trimming
    ]
    if gaps:
        _, left_end, right_start = max(gaps)
    else:
        cut = least_speech_like(
            speech.audio, (piece.start, piece.end), (earliest, latest), rate,
            Silence(options.silent_db, speech.background, options.vad.neg_threshold), speech.probability,
            silent_only=True,
        )
        if cut is None:
            return None
        left_end = right_start = cut
    left = _tightened(speech, (piece.start, left_end), options)
    right = _tightened(speech, (right_start, piece.end), options)
    return _piece(speech, *left), _piece(speech, *right)


def neighbour_bounds(pieces: list[Piece], size: int) -> list[tuple[int, int]]:
    """For each of consecutive `pieces`, the previous one's end and the next one's start (0 and
    `size` at the ends): how far the model may hear around it (`heard`)."""
    ends = [0, *(p.end for p in pieces)]
    starts = [*(p.start for p in pieces), size]
    return list(zip(ends[:-1], starts[1:], strict=True))


def heard(speech: SpeechMap, piece: Piece, bounds: tuple[int, int], options: CueCutOptions) -> np.ndarray:
    """The audio the model transcribes for `piece`: its span and up to `model_pad_s` of the
    pause on each side, within `bounds` (module doc, rule 4)."""
    pad = int(options.model_pad_s * speech.sample_rate)
    return speech.audio[max(bounds[0], piece.start - pad) : min(bounds[1], piece.end + pad)]


def _speech_span(segments: list[SpeechSegment], start: int, end: int) -> tuple[int, int] | None:
    """[start, end) narrowed to the first and last speech inside it; None without speech."""
    inside = [s for s in segments if s.end > start and s.start < end]
    if not inside:
        return None
    return max(start, inside[0].start), min(end, inside[-1].end)


def _tightened(speech: SpeechMap, span: tuple[int, int], options: CueCutOptions) -> tuple[int, int]:
    """`span` without the quiet audio at its edges (module doc, rule 2)."""
    start, end = span
    sample_rate = speech.sample_rate
    block = energy_block(sample_rate)
    energy = block_energy(speech.audio, start, end, sample_rate)
    if energy.size < _SOUND_BLOCKS:
        return span
    loud = energy > Silence(options.quiet_db, speech.background).under(float(energy.max()))
    # Sound is a run of loud blocks: half the background's blocks are louder than its median,
    # and an edge stopped at the first of them stayed out in the pause.
    runs = np.flatnonzero(np.convolve(loud, np.ones(_SOUND_BLOCKS, dtype=int), mode="valid") == _SOUND_BLOCKS)
    if runs.size == 0:
        return span
    reach, keep = int(options.tighten_s * sample_rate), int(options.keep_s * sample_rate)
    first, last = start + int(runs[0]) * block, start + (int(runs[-1]) + _SOUND_BLOCKS) * block
    new_start = max(start, first - keep) if first - start <= reach else start + reach - keep
    new_end = min(end, last + keep) if end - last <= reach else end - reach + keep
    return (new_start, new_end) if new_start < new_end else span


def _widened(
    speech: SpeechMap, span: tuple[int, int], bounds: tuple[int, int], options: CueCutOptions
) -> tuple[int, int]:
    """`span` moved out over the sound beside it (a run of at least `_SOUND_BLOCKS` 10 ms
    blocks that are not quiet), then `keep_s` further, within `bounds` and `max_cue_s`
    (module doc, rule 2)."""
    start, end = span
    audio, sample_rate = speech.audio, speech.sample_rate
    longest = int(options.max_cue_s * sample_rate)
    low = max(bounds[0], end - longest)
    block = energy_block(sample_rate)
    energy = block_energy(audio, start, end, sample_rate)
    if energy.size < 1:
        return span
    quiet = Silence(options.quiet_db, speech.background).under(float(energy.max()))
    keep = int(options.keep_s * sample_rate)
    new_start = start - _sound_beside(audio, start, low, -block, quiet)
    new_start = max(low, new_start - keep) if new_start < start else start
    high = min(bounds[1], new_start + longest)
    new_end = end + _sound_beside(audio, end, high, block, quiet)
    return new_start, min(high, new_end + keep) if new_end > end else end


def _sound_beside(audio: np.ndarray, edge: int, limit: int, step: int, quiet: float) -> int:
    """How many samples of blocks louder than `quiet` run on from `edge` towards `limit` (`step`
    a block, signed), when they are at least `_SOUND_BLOCKS` blocks: 0 for fewer, which is
    a swell of background noise, not a word."""
    at = edge
    while (limit <= at + step if step < 0 else at + step <= limit) and float(
        np.square(audio[min(at, at + step) : max(at, at + step)]).mean()
    ) > quiet:
        at += step
    return abs(at - edge) if abs(at - edge) >= _SOUND_BLOCKS * abs(step) else 0


def _piece(speech: SpeechMap, start: int, end: int) -> Piece:
    rate = speech.sample_rate
    return Piece(start_s=start / rate, end_s=end / rate, samples=speech.audio[start:end], start=start, end=end)
