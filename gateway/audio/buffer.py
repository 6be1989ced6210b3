"""Append-only float32 sample store that grows in fixed blocks (no doubling, no big copies)."""

from __future__ import annotations

import mmap

import numpy as np

_BLOCK_SAMPLES = 1 << 20  # 4 MiB of float32: small next to a request, big next to a frame


class SampleBuffer:
    """Collects decoded frames; memory stays at the samples held plus less than one block.

    Growing a single array by doubling would briefly hold up to three times the audio;
    fixed blocks copied once into the final array (each freed as it is copied) hold at most
    the audio plus one block. Blocks are anonymous memory maps, not malloc memory: glibc
    serves 4 MiB requests from a thread's arena once its dynamic mmap threshold has risen,
    and arena memory freed below the top is not returned, so a second hour-long decode in a
    worker thread peaked at twice the audio and kept the difference.
    """

    def __init__(self, block_samples: int = _BLOCK_SAMPLES) -> None:
        self._block_samples = block_samples
        self._blocks: list[np.ndarray] = []
        self._fill = 0  # samples used in the last block
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def append(self, chunk: np.ndarray) -> None:
        data = np.asarray(chunk, dtype=np.float32).reshape(-1)
        offset = 0
        while offset < data.size:
            if not self._blocks or self._fill == self._block_samples:
                self._blocks.append(_mapped_block(self._block_samples))
                self._fill = 0
            take = min(data.size - offset, self._block_samples - self._fill)
            self._blocks[-1][self._fill : self._fill + take] = data[offset : offset + take]
            self._fill += take
            offset += take
        self._total += data.size

    def to_array(self) -> np.ndarray:
        """Move everything into one contiguous array; the buffer is empty afterwards."""
        out = np.empty(self._total, dtype=np.float32)
        position = 0
        self._blocks.reverse()  # pop() from the end frees each block right after its copy
        while self._blocks:
            block = self._blocks.pop()
            used = min(self._block_samples, self._total - position)
            out[position : position + used] = block[:used]
            position += used
            del block
        self._fill = 0
        self._total = 0
        return out


def _mapped_block(samples: int) -> np.ndarray:
    """A float32 array over its own anonymous mapping: unmapped when the array is freed."""
    return np.frombuffer(mmap.mmap(-1, samples * 4), dtype=np.float32)
