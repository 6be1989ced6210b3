"""Run a dynamic batch of requests together; if that fails, run each request alone (pure).

Shared by the cpu tier's ragged batches (`ragged`) and the gpu tier's plan buckets
(`plan_buckets`), so both give one poisonous input its own error and the others their results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


def run_with_fallback(
    requests: Sequence[Request | Exception], run: Callable[[list[Request]], list[Result]]
) -> list[Result | Exception]:
    """`run` over every valid request at once, one result per request in order.

    Requests that already failed validation pass through as their exception. If the batched
    run fails, each request runs alone; a lone request that fails gets the batch's error
    (no point running it twice).
    """
    valid = [i for i, r in enumerate(requests) if not isinstance(r, Exception)]
    results: list[Result | Exception] = [r if isinstance(r, Exception) else ValueError("not run") for r in requests]
    if not valid:
        return results
    try:
        outputs = run([requests[i] for i in valid])  # type: ignore[misc]  # valid: not exceptions
        for i, out in zip(valid, outputs):
            results[i] = out
    except Exception as error:
        if len(valid) == 1:
            results[valid[0]] = error
            return results
        for i in valid:
            try:
                results[i] = run([requests[i]])[0]  # type: ignore[list-item]  # valid: not an exception
            except Exception as alone:
                results[i] = alone
    return results
