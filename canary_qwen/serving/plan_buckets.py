"""Length buckets of the gpu tier's TensorRT plans: pad a dynamic batch to the shortest bucket that
holds its longest item, run it, split the results per request (pure: torch tensors on any device).

The buckets are the plan's optimization profiles (export/trt.py: one fixed length per profile), so
a batch of 5 s clips runs in the 10 s profile instead of being padded to 40 s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# run(profile index, data [B, ...] padded to the bucket, lengths [B] int32) -> (outputs [B, ...], lengths [B])
PlanFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Items = list[tuple[torch.Tensor, int]]  # one request's (item [...], valid length) pairs
RequestResult = tuple[torch.Tensor, torch.Tensor] | Exception


def bucket_index(longest: int, buckets: Sequence[int]) -> int:
    """Index of the shortest bucket (ascending lengths) that holds `longest` frames."""
    for index, length in enumerate(buckets):
        if longest <= length:
            return index
    raise ValueError(f"{longest} frames is longer than the longest bucket ({buckets[-1]})")


def request_items(data: torch.Tensor, lengths: Sequence[int], axis: int, longest: int) -> Items:
    """One request's items cut to their lengths: data [b, ...], `axis` counted within an item."""
    if data.shape[0] != len(lengths) or data.shape[0] == 0:
        raise ValueError(f"batch of {data.shape[0]} items but {len(lengths)} lengths")
    items = []
    for item, length in zip(data, lengths):
        if not 1 <= length <= min(item.shape[axis], longest):
            raise ValueError(f"length {length} outside 1..{min(item.shape[axis], longest)}")
        items.append((item.narrow(axis, 0, length), length))
    return items


def pad_items(items: Sequence[torch.Tensor], axis: int, length: int) -> torch.Tensor:
    """[B, ...] zeros of `length` along `axis` with each item copied in (same device and dtype)."""
    shape = list(items[0].shape)
    shape[axis] = length
    out = items[0].new_zeros((len(items), *shape))
    for i, item in enumerate(items):
        out[i].narrow(axis, 0, item.shape[axis]).copy_(item)
    return out


def run_bucketed(
    requests: Sequence[Items | Exception], buckets: Sequence[int], run: PlanFn, in_axis: int, out_axis: int
) -> list[RequestResult]:
    """Every valid request's items as one batch in its bucket; results cut per request to its longest item.

    Requests that failed validation pass through as their exception; if the batched run fails,
    each request runs alone, so one poisonous input fails alone.
    """
    valid = [i for i, r in enumerate(requests) if not isinstance(r, Exception)]
    results: list[RequestResult] = [r if isinstance(r, Exception) else ValueError("not run") for r in requests]
    if not valid:
        return results
    try:
        outputs = _run([requests[i] for i in valid], buckets, run, in_axis, out_axis)  # type: ignore[misc]
        for i, out in zip(valid, outputs):
            results[i] = out
    except Exception as error:
        if len(valid) == 1:
            results[valid[0]] = error
            return results
        for i in valid:
            try:
                results[i] = _run([requests[i]], buckets, run, in_axis, out_axis)[0]  # type: ignore[list-item]
            except Exception as error:
                results[i] = error
    return results


def _run(
    requests: list[Items], buckets: Sequence[int], run: PlanFn, in_axis: int, out_axis: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    flat = [item for items in requests for item in items]
    profile = bucket_index(max(length for _, length in flat), buckets)
    data = pad_items([item for item, _ in flat], in_axis, buckets[profile])
    lengths = torch.tensor([length for _, length in flat], dtype=torch.int32, device=data.device)
    out, out_lengths = run(profile, data, lengths)
    host_lengths = [int(n) for n in out_lengths.reshape(-1).cpu().tolist()]  # a few ints, not the data
    results, start = [], 0
    for items in requests:
        count = len(items)
        mine = host_lengths[start : start + count]
        rows = out[start : start + count].narrow(out_axis + 1, 0, max(mine)).contiguous()
        results.append((rows, torch.tensor(mine, dtype=torch.int32).reshape(count, 1)))
        start += count
    return results
