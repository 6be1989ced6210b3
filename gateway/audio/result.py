"""What a decode returns, whichever decoder produced it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 PCM in [-1, 1] at the target rate, plus what the source was."""

    samples: np.ndarray
    duration_s: float
    source_rate: int
    source_channels: int
    container: str  # FFmpeg demuxer name, e.g. "wav", "mp3", "ogg", "mov" (mp4/m4a), "matroska" (webm)
    codec: str = ""
    truncated: bool = False  # the file ended early or turned corrupt; the valid part was kept
