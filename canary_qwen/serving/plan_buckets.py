"""Length buckets of the gpu tier's TensorRT plans: pad a dynamic batch to the shortest bucket that
holds its longest item, run it, split the results per request (pure: torch tensors on any device).

The buckets are the plan's optimization profiles (export/trt.py: one fixed length per profile), so
a batch of 5 s clips runs in the 10 s profile instead of being padded to 40 s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from canary_qwen.serving.batch_fallback import run_with_fallback

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

    Failed requests and a failing batch are handled per request (`batch_fallback`).
    """
    return run_with_fallback(requests, lambda batch: _run(batch, buckets, run, in_axis, out_axis))


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
