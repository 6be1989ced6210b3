"""Silero voice activity detection run by onnxruntime alone (no torch in the gateway).

The model is a streaming network: each call takes one 32 ms frame (512 samples at 16 kHz,
256 at 8 kHz) preceded by the previous frame's last 64 (32) samples as context, plus the
recurrent state [2, batch, 128], and returns a speech probability and the next state.

Long audio is scored fast by running many independent streams as one batch: the audio is
split into equal stretches, one per batch row, and each row starts `warmup_frames` before
its stretch so its recurrent state has settled by the time its own frames are scored (the
warm-up outputs are discarded). A 60-minute file becomes ~500 batched calls instead of
112,500 sequential ones.

CPU-bound and blocking: async callers run it in a worker thread.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

_FRAME = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}
_STATE_SIZE = 128


class VadModelNotFoundError(RuntimeError):
    """The silero-vad ONNX file is not installed where the gateway looks for it."""


def default_model_path() -> Path:
    """`silero_vad/data/silero_vad.onnx` of the installed silero-vad distribution.

    Found without importing the package: `silero_vad/__init__` imports torch, which the
    gateway does not install (`pip install --no-deps silero-vad` is enough for the file).
    """
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "data" / "silero_vad.onnx"
        if candidate.is_file():
            return candidate
    raise VadModelNotFoundError(
        "silero_vad.onnx not found: install the silero-vad package "
        "(`pip install --no-deps silero-vad`) or pass the model path explicitly."
    )


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech, in samples of the analysed signal (end exclusive)."""

    start: int
    end: int


@dataclass(frozen=True)
class VadOptions:
    """Speech decision parameters (silero's defaults, with a slightly wider pad)."""

    threshold: float = 0.5  # probability that starts speech
    neg_threshold: float = 0.35  # probability below which speech may end (hysteresis)
    min_speech_s: float = 0.25  # shorter bursts are dropped (clicks, breaths), but for a lone word (lone_word_s)
    min_silence_s: float = 0.1  # shorter dips do not end speech
    speech_pad_s: float = 0.1  # added on both sides of each segment, so word edges survive
    lone_word_gap_s: float = 0.2  # a burst this far from others stands alone: their pads would not merge it

    def at_threshold(self, threshold: float) -> VadOptions:
        """These options starting speech at `threshold`, ending it the same hysteresis under it."""
        gap = VadOptions.threshold - VadOptions.neg_threshold
        return replace(self, threshold=threshold, neg_threshold=max(0.01, threshold - gap))

    @property
    def lone_word_s(self) -> float:
        """The speech a lone short word ("hi", "yes": 0.15-0.25 s) needs where one may stand alone."""
        return self.min_speech_s / 2


# A burst under min_speech_s is one short word, not a click, where it stands alone: in audio
# this short with no longer speech, or `lone_word_gap_s` clear of any other burst (a "Yes." in
# a meeting; a live session's turn keeps it the same way, gateway/realtime/turns.py). Closer
# to speech such a burst is more often a click or a breath, and the pads and edges of that
# speech's segment and piece take it in anyway. Cut at every pause, a brisk "Go." (0.2 s to
# Silero) 0.3 s after a sentence was heard in part at a gap of 0.3 s, whole at 0.2.
LONE_WORD_AUDIO_S = 5.0


@dataclass(frozen=True)
class SpeechProbability:
    """The VAD's speech probability of each frame of `frame` samples."""

    values: np.ndarray
    frame: int

    def at(self, samples: np.ndarray) -> np.ndarray:
        """Probability of the frames holding these sample indices."""
        return self.values[np.minimum(samples // self.frame, self.values.size - 1)]


class SileroVad:
    """Thread-safe wrapper around one onnxruntime session of the silero model."""

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        threads: int = 1,
        batch_rows: int = 256,
        warmup_frames: int = 64,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = Path(model_path) if model_path is not None else default_model_path()
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._batch_rows = batch_rows
        self._warmup_frames = warmup_frames

    @staticmethod
    def frame_samples(sample_rate: int) -> int:
        """Samples per scored frame (32 ms)."""
        _check_rate(sample_rate)
        return _FRAME[sample_rate]

    @staticmethod
    def context_samples(sample_rate: int) -> int:
        """Samples of the previous frame that precede each scored frame."""
        _check_rate(sample_rate)
        return _CONTEXT[sample_rate]

    @staticmethod
    def initial_state(rows: int = 1) -> np.ndarray:
        return np.zeros((2, rows, _STATE_SIZE), dtype=np.float32)

    def step(self, windows: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """One streaming step: windows [rows, context + frame] and state -> (probability per row, next state).
        Live streams (gateway.realtime) call this frame by frame."""
        output, next_state = self._session.run(
            None, {"input": windows, "state": state, "sr": np.array(sample_rate, dtype=np.int64)}
        )
        return output[:, 0], next_state

    def frame_probabilities(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Speech probability of each 32 ms frame; frame i covers samples [i*F, (i+1)*F)."""
        frame = self.frame_samples(sample_rate)
        context = _CONTEXT[sample_rate]
        audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        n_frames = -(-audio.size // frame)
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        # Short audio: one sequential stream, exactly as silero runs it. Long audio: rows.
        rows = min(self._batch_rows, max(1, n_frames // (4 * self._warmup_frames)))
        stretch = -(-n_frames // rows)
        warmup = self._warmup_frames if rows > 1 else 0
        window = context + frame
        offsets = np.arange(window)
        state = np.zeros((2, rows, _STATE_SIZE), dtype=np.float32)
        rate = np.array(sample_rate, dtype=np.int64)
        probs = np.zeros((rows, stretch), dtype=np.float32)
        row_first_frame = np.arange(rows) * stretch - warmup
        for step in range(stretch + warmup):
            first = (row_first_frame + step) * frame - context  # sample index of the window
            batch = _gather(audio, first, offsets)
            output, state = self._session.run(
                None, {"input": batch, "state": state, "sr": rate}
            )
            if step >= warmup:
                probs[:, step - warmup] = output[:, 0]
        return probs.reshape(-1)[:n_frames]

    def speech_in_prefix(
        self, samples: np.ndarray, sample_rate: int, seconds: float, options: VadOptions | None = None
    ) -> bool:
        """Whether speech is confirmed within the first `seconds` (whole frames only).

        Sound: the hysteresis is causal, so a segment already long enough in the prefix
        stays one in the whole signal. False only means "not found in the prefix".
        """
        frame = self.frame_samples(sample_rate)
        prefix = np.asarray(samples, dtype=np.float32).reshape(-1)[: int(seconds * sample_rate) // frame * frame]
        probs = self.frame_probabilities(prefix, sample_rate)
        return bool(segments_from_probabilities(probs, frame, sample_rate, prefix.size, options or VadOptions()))

    def speech_segments(
        self, samples: np.ndarray, sample_rate: int, options: VadOptions | None = None
    ) -> list[SpeechSegment]:
        """Speech stretches in samples; an empty list means silence, noise or music."""
        return self.speech_scores(samples, sample_rate, options)[1]

    def speech_scores(
        self, samples: np.ndarray, sample_rate: int, options: VadOptions | None = None
    ) -> tuple[SpeechProbability, list[SpeechSegment]]:
        """Each frame's speech probability and the speech stretches they give (`speech_segments`)."""
        speech = SpeechProbability(self.frame_probabilities(samples, sample_rate), self.frame_samples(sample_rate))
        segments = segments_from_probabilities(
            speech.values, speech.frame, sample_rate, len(samples), options or VadOptions()
        )
        return speech, segments


def segments_from_probabilities(
    probs: np.ndarray, frame: int, sample_rate: int, n_samples: int, options: VadOptions
) -> list[SpeechSegment]:
    """Hysteresis over frame probabilities (silero's rule): enter at `threshold`, leave after
    `min_silence_s` below `neg_threshold`; drop bursts under `min_speech_s` but for lone words
    of `lone_word_s` (LONE_WORD_AUDIO_S); pad and merge overlaps."""
    min_silence = max(1, round(options.min_silence_s * sample_rate / frame))
    min_speech = options.min_speech_s * sample_rate
    pad = round(options.speech_pad_s * sample_rate)
    raw: list[tuple[int, int]] = []
    start: int | None = None
    below = 0
    for index, prob in enumerate(probs.tolist()):
        if start is None:
            if prob >= options.threshold:
                start, below = index, 0
            continue
        if prob < options.neg_threshold:
            below += 1
            if below >= min_silence:
                raw.append((start, index - below + 1))
                start = None
        else:
            below = 0
    if start is not None:
        raw.append((start, len(probs)))
    spans = [(first * frame, min(last * frame, n_samples)) for first, last in raw]
    lone_word = options.lone_word_s * sample_rate
    gap = options.lone_word_gap_s * sample_rate
    kept = [
        (begin, end)
        for i, (begin, end) in enumerate(spans)
        if end - begin >= min_speech
        or (end - begin >= lone_word and _clear_of(spans, i, gap))
    ]
    if not kept and n_samples <= LONE_WORD_AUDIO_S * sample_rate:
        kept = [(begin, end) for begin, end in spans if end - begin >= lone_word]
    merged: list[SpeechSegment] = []
    for begin, end in kept:
        begin, end = max(0, begin - pad), min(n_samples, end + pad)
        if merged and begin <= merged[-1].end:
            merged[-1] = SpeechSegment(merged[-1].start, max(end, merged[-1].end))
        else:
            merged.append(SpeechSegment(begin, end))
    return merged


def _clear_of(spans: list[tuple[int, int]], index: int, gap: float) -> bool:
    """Whether span `index` is at least `gap` from its neighbours (the audio's ends count as clear)."""
    before = index == 0 or spans[index][0] - spans[index - 1][1] >= gap
    after = index + 1 == len(spans) or spans[index + 1][0] - spans[index][1] >= gap
    return before and after


def _gather(audio: np.ndarray, first: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows audio[first[r] : first[r] + len(offsets)], zero outside the signal."""
    index = first[:, None] + offsets[None, :]
    inside = (index >= 0) & (index < audio.size)
    if inside.all():
        return audio[index]
    return np.where(inside, audio[np.clip(index, 0, max(audio.size - 1, 0))], 0.0).astype(
        np.float32
    )


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in _FRAME:
        raise ValueError(f"voice activity detection needs 16000 or 8000 Hz audio, got {sample_rate}")


_shared: SileroVad | None = None
_shared_lock = threading.Lock()


def shared_vad() -> SileroVad:
    """A process-wide VAD with the default model (onnxruntime sessions are thread-safe)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SileroVad()
        return _shared
