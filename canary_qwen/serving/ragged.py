"""Padding a dynamic batch of ragged items into one array, and splitting results back (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from canary_qwen.serving.batch_fallback import run_with_fallback


def pad_stack(items: Sequence[np.ndarray], axis: int, multiple: int = 0) -> np.ndarray:
    """Stack items (same rank) into [B, ...], zero-padding `axis` (an item axis) to the longest.

    With `multiple` > 0 the padded length is rounded up to a multiple of it (fixed-shape engines).
    """
    if not items:
        raise ValueError("nothing to stack")
    length = max(item.shape[axis] for item in items)
    if multiple > 0:
        length = max(multiple, -(-length // multiple) * multiple)
    shape = list(items[0].shape)
    shape[axis] = length
    out = np.zeros((len(items), *shape), dtype=items[0].dtype)
    for i, item in enumerate(items):
        if item.shape[:axis] + item.shape[axis + 1 :] != items[0].shape[:axis] + items[0].shape[axis + 1 :]:
            raise ValueError(f"item {i} has shape {item.shape}, incompatible with {items[0].shape}")
        index = [slice(None)] * item.ndim
        index[axis] = slice(0, item.shape[axis])
        out[(i, *index)] = item
    return out


def split_rows(batch: np.ndarray, lengths: Sequence[int], axis: int) -> list[np.ndarray]:
    """Row i of `batch` ([B, ...]) cut to lengths[i] along `axis` (an item axis)."""
    rows = []
    for i, length in enumerate(lengths):
        index = [slice(None)] * (batch.ndim - 1)
        index[axis] = slice(0, int(length))
        rows.append(batch[i][tuple(index)])
    return rows


def group_counts(counts: Sequence[int], items: Sequence[np.ndarray], axis: int) -> list[np.ndarray]:
    """Re-pack a flat list of items into per-request batches of counts[r] items each."""
    out, start = [], 0
    for count in counts:
        out.append(pad_stack(items[start : start + count], axis))
        start += count
    return out


# run(data [B, ...], lengths [B]) -> (outputs [B, ...], output lengths [B])
BatchFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
RequestResult = tuple[np.ndarray, np.ndarray] | Exception


def request_items(data: np.ndarray, lengths: np.ndarray, axis: int) -> list[tuple[np.ndarray, int]]:
    """One request's (item, valid length) pairs: data [b, ...], lengths [b, 1] or [b]."""
    lengths = np.asarray(lengths).reshape(-1)
    if data.shape[0] != lengths.shape[0] or data.shape[0] == 0:
        raise ValueError(f"batch of {data.shape[0]} items but {lengths.shape[0]} lengths")
    items = []
    for item, length in zip(data, lengths):
        if not 1 <= int(length) <= item.shape[axis]:
            raise ValueError(f"length {int(length)} outside 1..{item.shape[axis]}")
        index = [slice(None)] * item.ndim
        index[axis] = slice(0, int(length))
        items.append((item[tuple(index)], int(length)))
    return items


def run_ragged(
    requests: Sequence[list[tuple[np.ndarray, int]] | Exception],
    run: BatchFn,
    in_axis: int,
    out_axis: int,
    multiple: int = 0,
) -> list[RequestResult]:
    """Run every valid request's items as one padded batch; split the results per request.

    Failed requests and a failing batch are handled per request (`batch_fallback`).
    """
    return run_with_fallback(requests, lambda batch: _run_items(batch, run, in_axis, out_axis, multiple))


def _run_items(
    requests: list[list[tuple[np.ndarray, int]]], run: BatchFn, in_axis: int, out_axis: int, multiple: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    flat = [item for items in requests for item in items]
    data = pad_stack([item for item, _ in flat], in_axis, multiple)
    lengths = np.array([length for _, length in flat], dtype=np.int32)
    out, out_lengths = run(data, lengths)
    out_lengths = np.asarray(out_lengths).reshape(-1).astype(np.int32)
    pieces = split_rows(out, out_lengths, out_axis)
    counts = [len(items) for items in requests]
    grouped = group_counts(counts, pieces, out_axis)
    results, start = [], 0
    for count, group in zip(counts, grouped):
        results.append((group, out_lengths[start : start + count].reshape(count, 1)))
        start += count
    return results
