"""Async-iterator helpers for streamed responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def prefetch(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Await the first item now (errors surface before any response is sent);
    return an iterator over that item and the rest."""
    try:
        first = await anext(source)
    except StopAsyncIteration:
        return _empty()
    except BaseException:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    return _chain(first, source)


async def _empty() -> AsyncIterator[T]:  # type: ignore[misc]
    return
    yield


async def _chain(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
