"""Removal of Qwen3 `<think>...</think>` blocks, whole or while streaming (pure)."""

from __future__ import annotations

import re

OPEN = "<think>"
CLOSE = "</think>"
_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def strip_thinking(text: str) -> str:
    """Drop every think block (an unclosed one runs to the end) and the blank lines after it."""
    return _BLOCK.sub("", text).lstrip()


class ThinkingFilter:
    """Streaming twin of `strip_thinking`: feed fragments, get visible text.

    Holds back a possible partial tag at a fragment's end until the next one decides.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self._at_start = True  # strip leading blanks of the visible answer

    def feed(self, fragment: str) -> str:
        self._buffer += fragment
        out: list[str] = []
        while self._buffer:
            tag = CLOSE if self._inside else OPEN
            index = self._buffer.find(tag)
            if index >= 0:
                if not self._inside:
                    out.append(self._buffer[:index])
                self._buffer = self._buffer[index + len(tag):]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(self._buffer, tag)
            if not self._inside:
                out.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep:]
            break
        return self._visible("".join(out))

    def flush(self) -> str:
        rest = "" if self._inside else self._buffer
        self._buffer = ""
        return self._visible(rest)

    def _visible(self, text: str) -> str:
        if self._at_start:
            text = text.lstrip()
            if text:
                self._at_start = False
        return text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0
