"""The per-item responses of a decoupled TensorRT-LLM model, gathered into one batched response (pure).

The tensorrtllm backend splits a request of batch b into b executor requests and answers each
with its own responses, marked by `batch_index` (triton_backend/inflight_batcher_llm/src/
model_instance_state.cc, fillTritonResponse: output_ids [1, beams, len] padded with -1,
sequence_length [1, beams]). Without streaming an item has one response; with it, several
whose tokens follow each other.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Padding of output_ids past an item's sequence_length, as the backend pads its beams.
PAD_ID = -1

Piece = tuple[int, np.ndarray, np.ndarray]  # (batch_index, output_ids [1, beams, n], sequence_length [1, beams])


def collect_responses(batch_size: int, pieces: Iterable[Piece]) -> dict[str, np.ndarray]:
    """output_ids [b, beams, longest] and sequence_length [b, beams] from the pieces of b items."""
    tokens: list[list[list[int]] | None] = [None] * batch_size
    for index, output_ids, sequence_length in pieces:
        if not 0 <= index < batch_size:
            raise RuntimeError(f"response for batch index {index} of a batch of {batch_size}")
        ids = np.asarray(output_ids).reshape(-1, np.asarray(output_ids).shape[-1])
        lengths = np.asarray(sequence_length).reshape(-1)
        if ids.shape[0] != lengths.size:
            raise RuntimeError(f"{ids.shape[0]} beams of output_ids but {lengths.size} sequence lengths")
        beams = [ids[beam, : int(n)].tolist() for beam, n in enumerate(lengths)]
        current = tokens[index]
        if current is None:
            tokens[index] = beams
        elif len(current) != len(beams):
            raise RuntimeError(f"item {index}: responses with {len(current)} and {len(beams)} beams")
        else:
            for kept, more in zip(current, beams):
                kept.extend(more)
    missing = [i for i, item in enumerate(tokens) if item is None]
    if missing:
        raise RuntimeError(f"no response for batch items {missing}")
    width = max(len(beam) for item in tokens for beam in item)  # type: ignore[union-attr]
    n_beams = max(len(item) for item in tokens)  # type: ignore[arg-type]
    output_ids = np.full((batch_size, n_beams, width), PAD_ID, dtype=np.int32)
    sequence_length = np.zeros((batch_size, n_beams), dtype=np.int32)
    for i, item in enumerate(tokens):
        for beam, ids in enumerate(item):  # type: ignore[arg-type]
            output_ids[i, beam, : len(ids)] = ids
            sequence_length[i, beam] = len(ids)
    return {"output_ids": output_ids, "sequence_length": sequence_length}
