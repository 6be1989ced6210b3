"""Live voice activity: Silero scored frame by frame, and turns found in its probabilities.

`StreamingVad` keeps the model's recurrent state and the 64-sample context between
appends, so a stream scores exactly as `SileroVad.frame_probabilities` scores the whole
signal sequentially. `TurnDetector` is the file path's hysteresis (gateway/audio/vad.py:
enter at `threshold`, leave below `threshold - 0.15`) made causal: speech is announced once
it has lasted `min_speech`, and ends after `silence_duration_ms` below the exit threshold.
A burst shorter than `min_speech` that the silence ends is a turn too, announced then, if it
has a lone word's speech (`VadOptions.lone_word_s`): an answer of one short word ("No.",
"Go.") is 0.19-0.23 s of voiced frames, and dropping it would lose what was said.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.audio.vad import SileroVad, VadOptions

class StreamingVad:
    """Speech probability of each complete 32 ms frame, as samples arrive (blocking)."""

    def __init__(self, vad: SileroVad, sample_rate: int) -> None:
        self._vad = vad
        self._rate = sample_rate
        self.frame = vad.frame_samples(sample_rate)
        self._context = np.zeros(vad.context_samples(sample_rate), dtype=np.float32)
        self._state = vad.initial_state()
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._pending, samples]) if self._pending.size else samples
        count = audio.size // self.frame
        probs = np.empty(count, dtype=np.float32)
        for index in range(count):
            frame = audio[index * self.frame : (index + 1) * self.frame]
            window = np.concatenate([self._context, frame])[None, :]
            prob, self._state = self._vad.step(window, self._state, self._rate)
            probs[index] = prob[0]
            self._context = frame[-self._context.size :]
        self._pending = audio[count * self.frame :].copy()
        return probs


@dataclass(frozen=True)
class SpeechStart:
    frame: int  # first frame of the speech


@dataclass(frozen=True)
class SpeechEnd:
    frame: int  # first frame after the speech (exclusive end)
    forced: bool = False  # cut at the longest utterance


TurnEvent = SpeechStart | SpeechEnd


class TurnDetector:
    """Causal hysteresis over frame probabilities -> start/end events (pure logic)."""

    def __init__(self, *, threshold: float, silence_frames: int, min_speech_frames: int,
                 max_speech_frames: int, lone_word_frames: int) -> None:
        self.threshold = threshold
        self.exit_threshold = VadOptions().at_threshold(threshold).neg_threshold
        self.silence_frames = max(1, silence_frames)
        self.min_speech_frames = max(1, min_speech_frames)
        self.lone_word_frames = min(max(1, lone_word_frames), self.min_speech_frames)
        self.max_speech_frames = max(self.min_speech_frames + 1, max_speech_frames)
        self.frame_index = 0  # frames seen so far
        self.start: int | None = None  # first frame of the speech being tracked
        self.confirmed = False  # announced with a SpeechStart
        self._below = 0
        self._voiced = 0

    def retune(self, *, threshold: float, silence_frames: int) -> None:
        """New thresholds for the turn in progress (a session.update mid-speech): it goes on."""
        self.threshold = threshold
        self.exit_threshold = VadOptions().at_threshold(threshold).neg_threshold
        self.silence_frames = max(1, silence_frames)

    @property
    def speaking(self) -> bool:
        return self.confirmed

    def reset(self) -> None:
        self.start, self.confirmed, self._below, self._voiced = None, False, 0, 0

    def push(self, probs: np.ndarray) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for prob in probs.tolist():
            index = self.frame_index
            self.frame_index += 1
            if self.start is None:
                if prob >= self.threshold:
                    self.start, self._below, self._voiced = index, 0, 1
                    self._confirm(events)
                continue
            if prob < self.exit_threshold:
                self._below += 1
                if self._below >= self.silence_frames:
                    end = index - self._below + 1
                    if not self.confirmed and self._voiced >= self.lone_word_frames:
                        events.append(SpeechStart(self.start))  # a lone short word, complete
                        self.confirmed = True
                    if self.confirmed:
                        events.append(SpeechEnd(end))
                    self.reset()
                    continue
            else:
                self._below = 0
                self._voiced += 1
            self._confirm(events)
            if self.confirmed and self.frame_index - self.start >= self.max_speech_frames:
                events.append(SpeechEnd(self.frame_index, forced=True))
                self.start, self._voiced = self.frame_index, 0
                if self._below:
                    # Cut in the silence the turn was waiting out: what follows is a turn once it
                    # has `min_speech` of its own (else a silent turn, and one at every window
                    # when the silence is longer than it).
                    self.confirmed = False
                else:  # cut mid-speech: the rest is a turn at once, however short
                    events.append(SpeechStart(self.start))
        return events

    def _confirm(self, events: list[TurnEvent]) -> None:
        if not self.confirmed and self.start is not None and self._voiced >= self.min_speech_frames:
            self.confirmed = True
            events.append(SpeechStart(self.start))
