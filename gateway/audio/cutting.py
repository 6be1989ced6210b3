"""Cut long audio into model-sized pieces at pauses found by voice activity detection.

Rules, in order of preference:
1. A piece never exceeds `max_piece_seconds`.
2. Cuts fall in pauses between speech segments. Among the pauses in the last part of the
   window (`lookback_fraction`), the longest wins: a sentence break beats a breath.
3. Pauses longer than `max_pause_s` always end a piece and their silence is dropped (the
   model sees no long silence to hallucinate on) except `edge_pad_s` on each side; shorter
   pauses are cut in their middle, so neighbouring pieces touch and nothing is lost.
4. Only speech that runs on longer than a piece without any pause is cut inside speech,
   at the lowest-energy 20 ms near the window end.
5. Audio without speech gives no pieces.
6. Audio that fits in one piece is kept whole as soon as speech shows in its first
   `quick_check_s`: the rest need not be scored. With `quick_check_s` 0 (a model that wants
   every pause of `max_pause_s` to end a piece: gateway/chunking.py) short audio is cut too.

Every piece keeps its exact offset in the original signal (`start`/`end` in samples,
`start_s`/`end_s` in seconds), and `samples` is a view into the caller's array (no copy).

CPU-bound and blocking: async callers run it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gateway.audio.vad import SileroVad, SpeechSegment, VadOptions, shared_vad

_ENERGY_BLOCK_S = 0.01  # energy resolution of the fallback cut


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
    max_pause_s: float = 3.0  # a longer pause always ends a piece; its silence is dropped
    lookback_fraction: float = 0.5  # cut at the longest pause in this last part of the window
    fallback_search_s: float = 5.0  # continuous speech: lowest-energy point in this last stretch
    edge_pad_s: float = 0.3  # silence kept before and after speech where a long pause is dropped
    quick_check_s: float = 2.0  # audio that fits one piece is whole once speech shows in this prefix (0: never)


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
        # One piece either way, and speech is certain: scoring the rest would change nothing
        # but the trimmed edges, and VAD is most of the gateway's CPU on short requests.
        return [Piece(start_s=0.0, end_s=audio.size / sample_rate, samples=audio, start=0, end=audio.size)]
    segments = detector.speech_segments(audio, sample_rate, opts.vad)
    bounds = plan_cuts(audio, segments, sample_rate, max_piece_seconds, opts)
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
) -> list[tuple[int, int]]:
    """Piece boundaries (start, end) in samples from speech segments (pure logic)."""
    limit = int(max_piece_seconds * sample_rate)
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
            # Speech with no pause for a whole window: cut at its quietest moment.
            cut = _quietest_point(audio, start, limit, opts.fallback_search_s, sample_rate)
            pieces.append((start, cut))
            spans[i] = (cut, seg_end)  # the rest of this segment starts the next piece
            start = cut
            continue
        last = i  # the last segment that fits in this piece
        while (
            last + 1 < len(spans)
            and spans[last + 1][0] - spans[last][1] <= max_pause
            and spans[last + 1][1] - start <= limit
        ):
            last += 1
        following = last + 1
        continues = following < len(spans) and spans[following][0] - spans[last][1] <= max_pause
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


def _quietest_point(
    audio: np.ndarray, start: int, limit: int, search_s: float, sample_rate: int
) -> int:
    """Sample index of the lowest-energy 20 ms in the last `search_s` of the window."""
    block = max(1, int(_ENERGY_BLOCK_S * sample_rate))
    window_end = start + limit
    search_start = max(start + 1, window_end - min(int(search_s * sample_rate), limit // 2))
    stretch = audio[search_start:window_end]
    n_blocks = stretch.size // block
    if n_blocks < 2:
        return window_end
    energy = np.square(stretch[: n_blocks * block].reshape(n_blocks, block)).mean(axis=1)
    paired = energy[:-1] + energy[1:]  # 20 ms windows, 10 ms hop
    quietest = int(np.argmin(paired))
    return search_start + (quietest + 1) * block  # the middle of the quietest 20 ms
