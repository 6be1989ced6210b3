"""pcm16 appends -> float32 samples at the model's rate (streaming, no gaps or clicks).

OpenAI's realtime pcm16 is 24 kHz mono little-endian; 16 kHz input skips resampling.
The 24 -> 16 kHz resampler is FFmpeg's swresample (PyAV, already the file path's decoder),
fed frame by frame so its filter state carries across appends. Blocking (a few hundred
microseconds per append): the connection runs it in a worker thread with the VAD.
"""

from __future__ import annotations

import base64
import binascii

import av
import numpy as np

from gateway.realtime.protocol import ProtocolError


def decode_base64_pcm16(audio: str, event_id: str | None) -> np.ndarray:
    """int16 samples of one append; malformed input raises `ProtocolError`."""
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("Invalid 'audio': expected base64-encoded pcm16 audio bytes.",
                            code="invalid_value", param="audio", event_id=event_id) from None
    if not raw:
        raise ProtocolError("Invalid 'audio': the append holds no audio.", code="invalid_value", param="audio",
                            event_id=event_id)
    if len(raw) % 2:
        raise ProtocolError(
            f"Invalid 'audio': pcm16 is 2 bytes per sample, got {len(raw)} bytes (an odd count).",
            code="invalid_value", param="audio", event_id=event_id)
    return np.frombuffer(raw, dtype="<i2")


class PcmResampler:
    """int16 at `input_rate` -> float32 at `output_rate`, keeping state between calls."""

    def __init__(self, input_rate: int, output_rate: int) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self._resampler = (
            None if input_rate == output_rate
            else av.AudioResampler(format="flt", layout="mono", rate=output_rate)
        )

    def convert(self, pcm: np.ndarray) -> np.ndarray:
        if self._resampler is None:
            return pcm.astype(np.float32) / 32768.0
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.input_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """Samples still inside the filter (call before a rate change)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype(np.float32, copy=False)
