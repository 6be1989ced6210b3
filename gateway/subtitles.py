"""Subtitle cues from transcript segments, rendered as SRT and WebVTT (pure).

A cue shows at most `lines` lines of at most `line_chars` characters (2 x 42 by default,
common subtitle guidelines). Segments arrive already cut to caption size in the audio
(gateway.audio.cue_cutting: each segment's text is the transcript of exactly its span), so
each segment is one cue, and a cue's start and end are always where its audio starts and
ends. A segment whose text still does not fit, because its audio holds no silence to cut
it at, stays one cue with more lines: the model gives no word timestamps, and cues that
shared its span by characters put their edges inside words (bench wer, 2026-12-07: 6 such
edges in 119 cues, all of them there).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.protocol import TranscriptionSegment


@dataclass(frozen=True)
class CueLayout:
    line_chars: int = 42
    lines: int = 2


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap; a word longer than a line is split across lines."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def fits(text: str, layout: CueLayout) -> bool:
    """Whether `text` fits one cue."""
    return len(wrap(text, layout.line_chars)) <= layout.lines


def _balanced(lines: list[str], width: int) -> list[str]:
    """Two lines of similar length instead of a full line over a short one."""
    if len(lines) != 2:
        return lines
    words = " ".join(lines).split()
    best = lines
    for split in range(1, len(words)):
        top, bottom = " ".join(words[:split]), " ".join(words[split:])
        if len(top) <= width and len(bottom) <= width and abs(len(top) - len(bottom)) < abs(
            len(best[0]) - len(best[1])
        ):
            best = [top, bottom]
    return best


def cues_from_segments(segments: Sequence[TranscriptionSegment], layout: CueLayout) -> list[Cue]:
    """One cue per segment with text, over the segment's span (see the module doc)."""
    cues: list[Cue] = []
    for segment in segments:
        lines = wrap(segment.text, layout.line_chars)
        if lines:
            cues.append(Cue(segment.start, segment.end, tuple(_balanced(lines, layout.line_chars))))
    return cues


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{index}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n" + "\n".join(cue.lines) + "\n"
        for index, cue in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def _vtt_text(line: str) -> str:
    # WebVTT cue text is markup: & and < must be escaped (and so "-->" cannot occur).
    return html.escape(line, quote=False)


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n" + "\n".join(_vtt_text(l) for l in cue.lines) + "\n"
        for cue in cues
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
