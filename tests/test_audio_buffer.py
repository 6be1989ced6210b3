"""SampleBuffer: chunks crossing block boundaries come back whole and in order."""

from __future__ import annotations

import numpy as np

from gateway.audio.buffer import SampleBuffer


def test_chunks_across_blocks_round_trip() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal(size).astype(np.float32) for size in (0, 1, 7, 16, 33, 5, 64, 3)]
    buffer = SampleBuffer(block_samples=16)
    for chunk in chunks:
        buffer.append(chunk)
    assert len(buffer) == sum(c.size for c in chunks)
    out = buffer.to_array()
    np.testing.assert_array_equal(out, np.concatenate(chunks))
    assert out.dtype == np.float32 and len(buffer) == 0
    assert buffer.to_array().size == 0  # emptied by to_array
