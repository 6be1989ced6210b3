"""Content sniffing: recognise uploads that are clearly not audio, whatever their file name.

FFmpeg probes any byte stream, and some of its demuxers accept things that are not sound
(images through `png_pipe`, text through `tty`, playlists that reference other files).
Rejecting those by their leading bytes gives a clear 415 and keeps playlist-style demuxers
from ever seeing user data.
"""

from __future__ import annotations

# Leading bytes of common non-audio files (checked before FFmpeg probes the data).
_NON_AUDIO_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
)

_SNIFF_BYTES = 4096
# Bytes allowed in text besides printable ones: tab, newline, carriage return, form feed.
_TEXT_CONTROL = frozenset(b"\t\n\r\x0c")


def describe_non_audio(head: bytes) -> str | None:
    """Return what the data is (e.g. "a PNG image") when its first bytes show it is not audio."""
    for magic, what in _NON_AUDIO_MAGIC:
        if head.startswith(magic):
            # "BM" and "MZ" are short: only trust them with the rest of the header plausible.
            if magic == b"BM" and len(head) >= 14 and head[6:10] != b"\x00\x00\x00\x00":
                continue
            return what
    if _looks_like_text(head[:_SNIFF_BYTES]):
        return "text"
    return None


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 without control bytes: every audio container has binary headers, text has none."""
    if not head:
        return False
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as err:
        # A multi-byte character cut by the sniff window still counts as text.
        if err.start < len(head) - 3:
            return False
        decoded = head[: err.start].decode("utf-8")
    decoded = decoded.removeprefix("\ufeff")  # a byte-order mark starts many text files
    return all(ch.isprintable() or ord(ch) in _TEXT_CONTROL for ch in decoded)


SNIFF_BYTES = _SNIFF_BYTES
