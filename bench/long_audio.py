"""A long recording for the memory test: corpus utterances with real pauses, as Opus.

Opus at 24 kb/s keeps 60 minutes near 11 MB, under the gateway's default 25 MB upload
limit, as a client would send it. Built once per length and cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from bench.corpus import SAMPLE_RATE, Clip

BIT_RATE = 24_000
_CHUNK_SAMPLES = 10 * SAMPLE_RATE  # encoder input per frame: bounded memory while encoding


@dataclass(frozen=True)
class LongRecording:
    path: Path
    duration_s: float

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def layout(clips: Sequence[Clip], minutes: float, *, seed: int = 0) -> Iterator[np.ndarray]:
    """Clips in turn with pauses of 0.8-2 s (every seventh 4-6 s), until `minutes` is full."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SAMPLE_RATE)
    written = 0
    index = 0
    while written < total:
        clip = clips[index % len(clips)].samples
        index += 1
        pause_s = rng.uniform(4.0, 6.0) if index % 7 == 0 else rng.uniform(0.8, 2.0)
        for block in (clip, np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)):
            block = block[: total - written]
            written += block.size
            yield block


def build_long_recording(clips: Sequence[Clip], minutes: float, out_dir: Path) -> LongRecording:
    out = out_dir / f"long-{minutes:g}min.opus"
    duration_s = minutes * 60
    if out.exists():
        return LongRecording(out, duration_s)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"partial-{out.name}")
    with av.open(str(partial), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = BIT_RATE
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=SAMPLE_RATE)
        for chunk in _chunks(layout(clips, minutes)):
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for resampled in resampler.resample(frame):
                resampled.pts = None
                container.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            resampled.pts = None
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    partial.replace(out)
    return LongRecording(out, duration_s)


def _chunks(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Re-cut a stream of arrays into float32 chunks of _CHUNK_SAMPLES (the last may be short)."""
    pending: list[np.ndarray] = []
    size = 0
    for block in blocks:
        pending.append(block)
        size += block.size
        while size >= _CHUNK_SAMPLES:
            joined = np.concatenate(pending)
            yield np.ascontiguousarray(joined[:_CHUNK_SAMPLES], dtype=np.float32)
            rest = joined[_CHUNK_SAMPLES:]
            pending, size = [rest], rest.size
    if size:
        yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
