"""Joining the texts of consecutive audio pieces (pure).

`join_pieces` gives the final transcript; `DeltaJoiner` produces streamed deltas
whose concatenation is exactly that transcript, while text arrives fragment by
fragment and piece by piece.
"""

from __future__ import annotations

from collections.abc import Iterable


def join_pieces(texts: Iterable[str]) -> str:
    """One space between pieces; no leading/trailing blanks; empty pieces dropped."""
    return " ".join(text.strip() for text in texts if text.strip())


class DeltaJoiner:
    """Feed fragments in order (`start_piece` between pieces); get deltas back.

    Leading blanks of each piece are dropped, trailing blanks are held back until
    more text of the same piece arrives, and one space separates pieces.
    """

    def __init__(self) -> None:
        self._emitted_any = False
        self._piece_started = False  # has the current piece produced visible text
        self._pending_space = ""

    def start_piece(self) -> None:
        self._piece_started = False
        self._pending_space = ""

    def feed(self, fragment: str) -> str:
        if not self._piece_started:
            fragment = fragment.lstrip()
            if not fragment:
                return ""
            prefix = " " if self._emitted_any else ""
            self._piece_started = True
        else:
            prefix = self._pending_space
        body = fragment.rstrip()
        if not body:
            self._pending_space += fragment
            return ""
        self._pending_space = fragment[len(body):]
        self._emitted_any = True
        return prefix + body
