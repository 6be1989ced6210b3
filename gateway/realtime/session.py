"""One realtime transcription session's state machine: audio buffer, turns, items. No I/O.

All positions are sample indices of the session's audio at the model's rate, counted from
the session's first append; events carry them as milliseconds. Only audio that can still
become part of an utterance is kept: in server_vad mode that is the prefix padding while
nobody speaks, and the current utterance while someone does; in manual mode, everything
since the last commit (bounded by the connection's buffered-audio limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.audio.vad import SileroVad, VadOptions
from gateway.realtime import protocol
from gateway.realtime.audio_input import PcmResampler
from gateway.realtime.protocol import ProtocolError, SessionConfig
from gateway.realtime.turns import SpeechEnd, SpeechStart, StreamingVad, TurnDetector

Event = dict[str, Any]
_VAD = VadOptions()  # the file path's speech rules
_END_PAD_S = _VAD.speech_pad_s  # the file path's pad after speech, so word ends survive


@dataclass(frozen=True)
class Utterance:
    """A committed stretch of the session's audio, ready for Triton."""

    item_id: str
    previous_item_id: str | None
    samples: np.ndarray
    start: int
    end: int
    ended_at: float  # monotonic time at which it ended (VAD stop or client commit)
    sample_rate: int
    vad_threshold: float | None = None  # server_vad's threshold when it was committed (None: manual)

    def ms(self, sample: int) -> int:
        return int(round(sample * 1000 / self.sample_rate))

    @property
    def start_ms(self) -> int:
        return self.ms(self.start)

    @property
    def end_ms(self) -> int:
        return self.ms(self.end)


class SampleLog:
    """The retained tail of the session's audio: absolute indices [base, end)."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.base = 0
        self.end = 0

    @property
    def size(self) -> int:
        return self.end - self.base

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self.end += samples.size

    def slice(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(start, self.base), min(stop, self.end)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        audio = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [audio]
        return audio[start - self.base : stop - self.base].copy()

    def discard_before(self, index: int) -> None:
        index = min(max(index, self.base), self.end)
        drop = index - self.base
        while drop and self._chunks:
            head = self._chunks[0]
            if head.size <= drop:
                self._chunks.pop(0)
                drop -= head.size
            else:
                rest = head[drop:]
                owner = rest.base if isinstance(rest.base, np.ndarray) else head
                # A view pins all of its buffer (a whole utterance after `slice`): copy once it is mostly dead.
                self._chunks[0] = rest.copy() if 2 * rest.nbytes < owner.nbytes else rest
                drop = 0
        self.base = index


class Session:
    """Feed it appends, commits, clears and updates; it answers with server events and utterances."""

    def __init__(self, config: SessionConfig, vad: SileroVad, model_rate: int, max_utterance_s: float) -> None:
        self.id = protocol.new_id("sess")
        self.model_rate = model_rate
        self._max_utterance_s = max_utterance_s
        self._vad = StreamingVad(vad, model_rate)
        self.config = config
        self._resampler = PcmResampler(config.sample_rate, model_rate)
        self.log = SampleLog()
        self._detector = self._new_detector()
        self.commit_start = 0  # first sample not yet committed or cleared
        self._current: tuple[str, int] | None = None  # (item id, start) of the utterance being spoken
        self._last_item: str | None = None

    # ------------------------------------------------------------------ configuration

    def _frames(self, ms: float) -> int:
        """VAD frames that cover `ms` milliseconds."""
        return math.ceil(ms / (self._vad.frame * 1000 / self.model_rate))

    def _new_detector(self) -> TurnDetector | None:
        vad = self.config.turn_detection
        if vad is None:
            return None
        detector = TurnDetector(
            threshold=vad.threshold,
            silence_frames=self._frames(vad.silence_duration_ms),
            min_speech_frames=self._frames(_VAD.min_speech_s * 1000),
            lone_word_frames=self._frames(_VAD.lone_word_s * 1000),
            max_speech_frames=int(self._max_utterance_s * self.model_rate) // self._vad.frame,
        )
        detector.frame_index = self.log.end // self._vad.frame
        return detector

    def update(self, config: SessionConfig, now: float) -> tuple[list[Event], list[Utterance]]:
        events: list[Event] = []
        utterances: list[Utterance] = []
        if config.sample_rate != self.config.sample_rate:
            tail = self._resampler.flush()  # the old rate's last samples, still part of the session
            if tail.size:
                events, utterances = self.ingest(tail, self._vad.feed(tail), now)
            self._resampler = PcmResampler(config.sample_rate, self.model_rate)
        old, new = self.config.turn_detection, config.turn_detection
        if old is None and new is not None:
            # Turn detection from now on; what the client appended since its last commit is
            # committed for it, as its own commit would (none of it is dropped unheard).
            if self._ms(self.log.end - self._open_start()) >= protocol.MIN_COMMIT_MS:
                committed, utterance = self.commit(now, None)
                events, utterances = events + committed, utterances + [utterance]
        self.config = config
        if new != old:
            if old is not None and new is not None and self._detector is not None:
                # The turn in progress goes on under the new settings.
                self._detector.retune(threshold=new.threshold, silence_frames=self._frames(new.silence_duration_ms))
            else:
                # To manual: the turn in progress (`_current`) is what the client's commit sends.
                self._detector = self._new_detector()
        return events, utterances

    # ------------------------------------------------------------------ audio

    def analyse(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resample and score one append (blocking: run it in a worker thread, one at a time)."""
        samples = self._resampler.convert(pcm)
        return samples, self._vad.feed(samples)

    def ingest(self, samples: np.ndarray, probs: np.ndarray, now: float) -> tuple[list[Event], list[Utterance]]:
        """Add analysed audio; in server_vad mode, announce turns and commit finished ones."""
        self.log.append(samples)
        events: list[Event] = []
        utterances: list[Utterance] = []
        detector = self._detector
        if detector is None:
            return events, utterances
        frame = self._vad.frame
        prefix = self._ms_to_samples(self.config.turn_detection.prefix_padding_ms)  # type: ignore[union-attr]
        for turn in detector.push(probs):
            if isinstance(turn, SpeechStart):
                start = max(turn.frame * frame - prefix, self.commit_start, self.log.base)
                self._current = (protocol.new_id("item"), start)
                events.append(protocol.speech_started(self._current[0], self._ms(start)))
            elif isinstance(turn, SpeechEnd) and self._current is not None:
                pad = 0 if turn.forced else int(_END_PAD_S * self.model_rate)
                end = min(turn.frame * frame + pad, self.log.end)
                item_id, start = self._current
                events.append(protocol.speech_stopped(item_id, self._ms(end)))
                utterance = self._cut(item_id, start, end, now)
                events.append(protocol.committed(utterance.item_id, utterance.previous_item_id))
                utterances.append(utterance)
        self._trim(prefix)
        return events, utterances

    def _trim(self, prefix: int) -> None:
        """Drop audio no utterance can reach any more (server_vad mode)."""
        if self._current is not None:
            keep = self._current[1]
        elif self._detector is not None and self._detector.start is not None:
            keep = self._detector.start * self._vad.frame - prefix
        else:
            keep = self.log.end - prefix - self._vad.frame
        self.log.discard_before(max(keep, self.commit_start - prefix))

    # ------------------------------------------------------------------ client commands

    def _open_start(self) -> int:
        """Where what a commit now sends starts: the turn in progress, or the last commit."""
        if self._current is not None:
            return self._current[1]
        return max(self.commit_start, self.log.base)

    def commit(self, now: float, event_id: str | None) -> tuple[list[Event], Utterance]:
        item_id = self._current[0] if self._current is not None else protocol.new_id("item")
        start = self._open_start()
        length_ms = self._ms(self.log.end - start)
        if length_ms < protocol.MIN_COMMIT_MS:
            raise ProtocolError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{protocol.MIN_COMMIT_MS}ms of audio, but buffer only has {length_ms}ms of audio.",
                code="input_audio_buffer_commit_empty", event_id=event_id)
        utterance = self._cut(item_id, start, self.log.end, now)
        if self._detector is not None:
            self._detector.reset()
        return [protocol.committed(utterance.item_id, utterance.previous_item_id)], utterance

    def clear(self) -> list[Event]:
        self.log.discard_before(self.log.end)
        self.commit_start = self.log.end
        self._current = None
        if self._detector is not None:
            self._detector.reset()
        return [protocol.cleared()]

    # ------------------------------------------------------------------ helpers

    def _cut(self, item_id: str, start: int, end: int, now: float) -> Utterance:
        turns = self.config.turn_detection
        utterance = Utterance(item_id, self._last_item, self.log.slice(start, end), start, end, now,
                              self.model_rate, turns.threshold if turns is not None else None)
        self._last_item = item_id
        self._current = None
        self.commit_start = end
        self.log.discard_before(end)
        return utterance

    @property
    def uncommitted_samples(self) -> int:
        return self.log.size

    def _ms(self, sample: int) -> int:
        return int(round(sample * 1000 / self.model_rate))

    def _ms_to_samples(self, ms: int) -> int:
        return int(ms * self.model_rate / 1000)
