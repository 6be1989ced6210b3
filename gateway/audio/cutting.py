"""Cut long audio into model-sized pieces at pauses found by voice activity detection.

Rules, in order of preference:
1. A piece never exceeds `max_piece_seconds`.
2. Cuts fall in pauses between speech segments. Among the pauses in the last part of the
   window (`lookback_fraction`), the longest wins: a sentence break beats a breath.
3. Pauses of at least `max_pause_s` always end a piece and their silence is dropped (the
   model sees no long silence to hallucinate on) except `edge_pad_s` on each side; shorter
   pauses are cut in their middle, so neighbouring pieces touch and nothing is lost.
4. Only speech that runs on longer than a piece without any pause is cut inside speech,
   near the window end (`fallback_search_s`), at the 40 ms least like speech
   (`least_speech_like`): among silent windows, else among all, the lowest VAD speech
   probability, then the lowest energy. Run-on espeak-ng speech (bench wer's held-out clips
   abutted, 2026-12-07): the quietest 20 ms cut inside a word 20 times in 37 cuts, this
   rule 4 in 11 (a better cut also needs fewer).
   Silent means quiet, `silent_db` under the stretch's loudest 10 ms or no louder than the
   recording's background (`background_of`: the median 10 ms outside detected speech),
   whichever is louder, and a VAD speech probability under `VadOptions.neg_threshold`, its
   own line for where speech may end. Digital silence has no background; a real room or
   line does, often only 20-40 dB under the speech, and a rule on the peak alone finds no
   silence there at all. Energy alone cannot tell a pause from a stop's closure in noise.
   bench wer's recording over pink noise 25-15 dB under its speech (2026-12-07; every cue
   split as if its text overflowed): on the peak alone, 19-23 cues could be cut again, all
   at the VAD's own pauses, 73-79 not at all; on the background alone, 44-52, 4-7 of those
   cuts inside a word; with the VAD's probability too, 39-42, at most 1 inside a word, and
   clean audio 34 with none (the peak alone: 39, none).
5. Audio without speech gives no pieces.
6. Audio that fits in one piece is kept whole as soon as speech shows in its first
   `quick_check_s`: the rest need not be scored. With `quick_check_s` 0 (a model that wants
   every pause of `max_pause_s` to end a piece: gateway/chunking.py) short audio is cut too.

Every piece keeps its exact offset in the original signal (`start`/`end` in samples,
`start_s`/`end_s` in seconds), and `samples` is a view into the caller's array (no copy).

CPU-bound and blocking: async callers run it in a worker thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gateway.audio.vad import SileroVad, SpeechProbability, SpeechSegment, VadOptions, shared_vad

ENERGY_BLOCK_S = 0.01  # energy resolution of cuts inside speech and of cue edges
MIN_PIECE_S = 1.0  # the shortest window pieces or cues may be cut to
_CUT_WINDOW_BLOCKS = 4  # a cut inside speech is judged on 40 ms


@dataclass(frozen=True)
class Piece:
    """One stretch of the original audio, with its true position in it."""

    start_s: float
    end_s: float
    samples: np.ndarray
    start: int  # first sample, in the original signal
    end: int  # one past the last sample

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class CutOptions:
    """How pauses are chosen; the defaults suit 40 s model windows."""

    vad: VadOptions = field(default_factory=VadOptions)
    max_pause_s: float = 3.0  # a pause at least this long always ends a piece; its silence is dropped
    lookback_fraction: float = 0.5  # cut at the longest pause in this last part of the window
    fallback_search_s: float = 5.0  # continuous speech: cut in this last stretch of the window (rule 4)
    edge_pad_s: float = 0.3  # silence kept before and after speech where a long pause is dropped
    quick_check_s: float = 2.0  # audio that fits one piece is whole once speech shows in this prefix (0: never)
    silent_db: float = 50.0  # 40 ms this far under the loudest 10 ms are silent: a cut inside speech prefers them


def has_speech(samples: np.ndarray, sample_rate: int, *, vad: SileroVad | None = None) -> bool:
    """Whether the audio holds any speech (False for silence, noise, music)."""
    return bool((vad or shared_vad()).speech_segments(samples, sample_rate))


def split_on_pauses(
    samples: np.ndarray,
    sample_rate: int,
    max_piece_seconds: float,
    *,
    vad: SileroVad | None = None,
    options: CutOptions | None = None,
) -> list[Piece]:
    """Speech pieces of at most `max_piece_seconds`, in order, cut at pauses (see module doc)."""
    if max_piece_seconds <= 0:
        raise ValueError("max_piece_seconds must be positive")
    opts = options or CutOptions()
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    detector = vad or shared_vad()
    if opts.quick_check_s > 0 and 0 < audio.size <= max_piece_seconds * sample_rate and detector.speech_in_prefix(
        audio, sample_rate, opts.quick_check_s, opts.vad
    ):
        # Speech is certain and the audio fits one piece: it goes whole, pauses included (rule 6),
        # unscored; VAD is most of the gateway's CPU on short requests.
        return [Piece(start_s=0.0, end_s=audio.size / sample_rate, samples=audio, start=0, end=audio.size)]
    speech, segments = detector.speech_scores(audio, sample_rate, opts.vad)
    bounds = plan_cuts(
        audio, segments, sample_rate, max_piece_seconds, opts, speech, background_of(audio, segments, sample_rate)
    )
    return [
        Piece(
            start_s=start / sample_rate,
            end_s=end / sample_rate,
            samples=audio[start:end],
            start=start,
            end=end,
        )
        for start, end in bounds
    ]


def plan_cuts(
    audio: np.ndarray,
    segments: list[SpeechSegment],
    sample_rate: int,
    max_piece_seconds: float,
    opts: CutOptions,
    speech: SpeechProbability | None = None,
    background: float = 0.0,
) -> list[tuple[int, int]]:
    """Piece boundaries (start, end) in samples from speech segments (pure logic); `speech`
    ranks cuts inside speech (rule 4; without it, by energy alone) and `background` is
    the recording's (`background_of`; 0: digital silence)."""
    silent = Silence(opts.silent_db, background, opts.vad.neg_threshold)
    limit = int(max_piece_seconds * sample_rate)
    if limit < MIN_PIECE_S * sample_rate:  # a window of a few samples would step through speech for ever
        raise ValueError(f"pieces of {max_piece_seconds:g} s are too short to cut speech into (at least {MIN_PIECE_S:g} s)")
    max_pause = opts.max_pause_s * sample_rate
    lookback = opts.lookback_fraction * limit
    edge = int(opts.edge_pad_s * sample_rate)
    spans = [(s.start, s.end) for s in segments]
    pieces: list[tuple[int, int]] = []
    i = 0
    start = max(0, spans[0][0] - edge) if spans else 0
    while i < len(spans):
        seg_end = spans[i][1]
        if seg_end - start > limit:
            # Speech with no pause for a whole window: cut where it is least like speech.
            window_end = start + limit
            search_start = max(start + 1, window_end - min(int(opts.fallback_search_s * sample_rate), limit // 2))
            cut = least_speech_like(
                audio, (search_start, window_end), (search_start, window_end), sample_rate,
                silent, speech, silent_only=False,
            )
            cut = window_end if cut is None else cut
            pieces.append((start, cut))
            spans[i] = (cut, seg_end)  # the rest of this segment starts the next piece
            start = cut
            continue
        last = i  # the last segment that fits in this piece
        while (
            last + 1 < len(spans)
            and spans[last + 1][0] - spans[last][1] < max_pause
            and spans[last + 1][1] - start <= limit
        ):
            last += 1
        following = last + 1
        continues = following < len(spans) and spans[following][0] - spans[last][1] < max_pause
        if continues:
            # The window is full: choose the pause to cut at, among those ending this window.
            last = _best_pause(spans, i, last, start + limit - lookback)
            gap_start, gap_end = spans[last][1], spans[last + 1][0]
            cut = min((gap_start + gap_end) // 2, start + limit)
            pieces.append((start, cut))
            start = cut
        else:
            # A long pause (or the end): drop its silence but keep an edge on both sides,
            # since detection starts a little late and ends a little early.
            if following < len(spans):
                next_start = spans[following][0]
                middle = (spans[last][1] + next_start) // 2
            else:
                next_start = middle = audio.size
            end = min(spans[last][1] + edge, middle, start + limit, audio.size)
            pieces.append((start, end))
            start = max(middle, next_start - edge)
        i = last + 1
    return pieces


def _best_pause(spans: list[tuple[int, int]], first: int, last: int, earliest: float) -> int:
    """Index k (first <= k <= last) whose following pause is the longest of those after
    `earliest`; the latest pause when none lies there."""
    best, best_gap = last, -1
    for k in range(first, last + 1):
        if spans[k][1] < earliest:
            continue
        gap = spans[k + 1][0] - spans[k][1]
        if gap >= best_gap:
            best, best_gap = k, gap
    return best


def energy_block(sample_rate: int) -> int:
    """Samples in one `ENERGY_BLOCK_S` block."""
    return max(1, int(ENERGY_BLOCK_S * sample_rate))


def block_energy(audio: np.ndarray, start: int, end: int, sample_rate: int) -> np.ndarray:
    """Mean square of each whole block of audio[start:end]."""
    block = energy_block(sample_rate)
    n_blocks = max(0, (end - start) // block)
    return np.square(audio[start : start + n_blocks * block].reshape(n_blocks, block)).mean(axis=1)


# The background is read in the pauses between detected speech, this far clear of it (the VAD
# starts late on a soft onset and ends early, by up to about its pad), and only where the
# pauses hold this much in all: run-on speech leaves only slivers between segments, and
# those hold the speech itself (bench wer's clips abutted, 2026-12-07: a "background" 22 dB
# under the peak, and cue edges then inside 29 of 42 words).
_BACKGROUND_CLEAR_S = 0.1
_BACKGROUND_MIN_S = 0.5
_BACKGROUND_CHUNK_BLOCKS = 6000


def background_of(audio: np.ndarray, segments: list[SpeechSegment], sample_rate: int) -> float:
    """The recording's background: the median 10 ms energy (mean square) in its pauses, clear
    of the detected (padded) speech; 0 for digital silence, or where the pauses hold too
    little to tell."""
    if not segments:
        return 0.0  # nothing to cut
    block = energy_block(sample_rate)
    step = _BACKGROUND_CHUNK_BLOCKS * block
    clear = int(_BACKGROUND_CLEAR_S * sample_rate)
    # Gap by gap (block-aligned, clear of the segments), a minute at most at a time: squaring
    # an hour at once would hold another copy of it.
    edges = [-clear, *(x for seg in segments for x in (seg.start, seg.end)), audio.size + clear]
    gaps = [
        (-(-(a + clear) // block) * block, (b - clear) // block * block)
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]
    energies = [
        block_energy(audio, at, min(b, at + step), sample_rate) for a, b in gaps for at in range(a, b, step)
    ]
    energy = np.concatenate(energies) if energies else np.zeros(0)
    if energy.size * block < _BACKGROUND_MIN_S * sample_rate:
        return 0.0
    return float(np.median(energy))


@dataclass(frozen=True)
class Silence:
    """What counts as silent (or quiet) in a stretch: `db` under its loudest 10 ms, or no
    louder than the recording's `background` (`background_of`), whichever is louder; for a
    cut inside speech, also a VAD speech probability under `speech_below`."""

    db: float
    background: float = 0.0
    speech_below: float = math.inf

    def under(self, loudest: float) -> float:
        return max(loudest * 10 ** (-self.db / 10), self.background)


def least_speech_like(
    audio: np.ndarray,
    span: tuple[int, int],
    allowed: tuple[int, int],
    sample_rate: int,
    silent: Silence,
    speech: SpeechProbability | None,
    *,
    silent_only: bool,
) -> int | None:
    """Where to cut inside speech: the middle of the 40 ms window (10 ms hop, inside `span`,
    its middle within `allowed`) with the lowest speech probability, then the lowest energy,
    among the silent windows (`silent`, judged on `span`'s loudest 10 ms block), or where
    none is silent, among all of them; with `silent_only`, None then. None also when `span`
    is shorter than a window."""
    block = energy_block(sample_rate)
    start, end = span
    energy = block_energy(audio, start, end, sample_rate)
    if energy.size < _CUT_WINDOW_BLOCKS:
        return None
    window = np.convolve(energy, np.full(_CUT_WINDOW_BLOCKS, 1 / _CUT_WINDOW_BLOCKS), mode="valid")
    middles = start + np.arange(window.size) * block + _CUT_WINDOW_BLOCKS * block // 2
    inside = (middles >= allowed[0]) & (middles <= allowed[1])
    probability = speech.at(middles) if speech is not None else np.zeros(middles.size)
    silent_windows = (window <= silent.under(float(energy.max()))) & (probability < silent.speech_below)
    candidates = np.flatnonzero(inside & silent_windows)
    if candidates.size == 0:
        if silent_only:
            return None
        candidates = np.flatnonzero(inside)
        if candidates.size == 0:
            return None
    return int(middles[candidates[np.lexsort((window[candidates], probability[candidates]))[0]]])
