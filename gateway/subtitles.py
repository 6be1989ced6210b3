"""SRT and WebVTT rendering of transcript segments (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.protocol import TranscriptionSegment


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in both formats; keep each cue one block.
    return " ".join(text.split())


def to_srt(segments: Sequence[TranscriptionSegment]) -> str:
    blocks = [
        f"{index}\n{_clock(seg.start, ',')} --> {_clock(seg.end, ',')}\n{_cue_text(seg.text)}\n"
        for index, seg in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[TranscriptionSegment]) -> str:
    blocks = [
        f"{_clock(seg.start, '.')} --> {_clock(seg.end, '.')}\n{_cue_text(seg.text)}\n" for seg in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
