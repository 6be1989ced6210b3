"""CPU cost of the preprocessing stages: decode + resample (gateway) and log-mel (preprocessor).

Measured in this process with `time.process_time()` (CPU seconds of every thread), so the
figure is audio seconds per CPU second, independent of how many cores the machine has.
The input is espeak-ng's own 22.05 kHz wav, so the decoder really resamples to 16 kHz.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from canary_qwen.mel import LogMel
from gateway.audio import decode_audio

from bench.corpus import Clip


@dataclass(frozen=True)
class PreprocessResult:
    audio_s: float
    decode_cpu_s: float
    mel_cpu_s: float
    wall_s: float

    @property
    def cpu_s(self) -> float:
        return self.decode_cpu_s + self.mel_cpu_s


def measure(clips: Sequence[Clip], mel_path: Path, min_audio_s: float) -> PreprocessResult:
    """Repeat the corpus until `min_audio_s` of audio went through decode and log-mel."""
    log_mel = LogMel.from_safetensors(mel_path)
    sources = [clip.source_path.read_bytes() for clip in clips]
    log_mel([clips[0].samples])  # first-call costs (imports, allocations) are not per-audio work
    audio_s = decode_cpu = mel_cpu = 0.0
    wall_started = time.perf_counter()
    while audio_s < min_audio_s:
        for data in sources:
            started = time.process_time()
            decoded = decode_audio(data, max_seconds=3600.0, target_rate=16000)
            decoded_at = time.process_time()
            log_mel([decoded.samples])
            mel_cpu += time.process_time() - decoded_at
            decode_cpu += decoded_at - started
            audio_s += decoded.duration_s
    return PreprocessResult(audio_s, decode_cpu, mel_cpu, time.perf_counter() - wall_started)
