"""Token ids -> raw UTF-8 bytes, from a byte-level BPE tokenizer.json (pure: no Triton).

Every byte-level token maps to a fixed byte string, so the bytes of consecutive streamed
chunks concatenate to exactly the bytes of the whole sequence, even when a character's
bytes straddle two chunks. Special tokens (<|im_end|>, ...) map to nothing; added tokens
that are not special (Qwen3's <think>, </think>) keep their text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable stand-ins for every byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[chr(byte)] = byte
        else:
            mapping[chr(256 + extra)] = byte
            extra += 1
    return mapping


class TokenBytes:
    def __init__(self, table: dict[int, bytes]) -> None:
        self._table = table

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> TokenBytes:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        decoder = _byte_decoder()
        table = {int(i): bytes(decoder[ch] for ch in token) for token, i in spec["model"]["vocab"].items()}
        for added in spec.get("added_tokens", []):
            table[int(added["id"])] = b"" if added.get("special") else added["content"].encode("utf-8")
        return cls(table)

    def decode(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids`; ids outside the tokenizer (padding rows of the embedding) are dropped."""
        return b"".join(self._table.get(int(i), b"") for i in ids)
