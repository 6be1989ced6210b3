"""Checks on incoming audio and the batched log-mel call (pure: no Triton)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioLimits:
    sample_rate: int
    max_seconds: float
    min_samples: int  # shortest audio that still yields one mel frame

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))


def request_waveforms(audio: np.ndarray, limits: AudioLimits) -> list[np.ndarray]:
    """The waveforms of one request (AUDIO [b, samples]), or ValueError saying what is wrong."""
    if audio.dtype != np.float32:
        raise ValueError(f"AUDIO must be float32 PCM, got {audio.dtype}")
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"AUDIO must be [batch, samples], got shape {list(audio.shape)}")
    samples = audio.shape[1]
    if samples == 0:
        raise ValueError("AUDIO is empty")
    if samples < limits.min_samples:
        raise ValueError(f"AUDIO has {samples} samples; at least {limits.min_samples} are needed")
    if samples > limits.max_samples:
        raise ValueError(
            f"AUDIO is {samples / limits.sample_rate:.2f} s long; the maximum is {limits.max_seconds:g} s "
            "(cut longer audio into pieces)"
        )
    if not np.isfinite(audio).all():
        raise ValueError("AUDIO holds NaN or infinite samples")
    return list(audio)
