"""`chunking_strategy` of a transcription request -> how the audio is cut (pure).

OpenAI accepts `"auto"` or `{"type": "server_vad", "threshold", "prefix_padding_ms",
"silence_duration_ms"}`. The official SDKs send the object as bracketed form fields
(`chunking_strategy[type]=server_vad`, ...); curl users often send it as JSON text in
`chunking_strategy`. Both map onto the gateway's own VAD cutting:

- `threshold` -> the VAD's speech threshold (the end-of-speech threshold 0.15 below it,
  silero's rule);
- `silence_duration_ms` -> a pause at least this long between detected speech always ends
  a piece (and a caption cue);
- `prefix_padding_ms` -> audio kept before and after the detected speech where a piece
  (or cue) starts or ends at such a pause.

Absent fields keep the defaults, so `{"type": "server_vad"}` equals `"auto"`. The pieces'
defaults are the model's (`model_pieces`): a model whose export sets `piece_pause_s` (the demo
model, which transcribes an utterance at a time) has every pause that long end a piece.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from gateway.audio import CutOptions, VadOptions
from gateway.audio.cue_cutting import CueCutOptions
from gateway.errors import BadRequestError
from gateway.protocol import ServerVadChunking, TranscriptionForm

_PARAM = "chunking_strategy"


@dataclass(frozen=True)
class Chunking:
    """Cutting options for long pieces (json, text) and for caption cues."""

    pieces: CutOptions
    cues: CueCutOptions


def parse_chunking(form: TranscriptionForm) -> ServerVadChunking | None:
    """The request's server_vad object, None for `auto`/absent; 400 for anything else."""
    fields = {
        "type": form.chunking_type,
        "threshold": form.chunking_threshold,
        "prefix_padding_ms": form.chunking_prefix_padding_ms,
        "silence_duration_ms": form.chunking_silence_duration_ms,
    }
    sent = {name: value for name, value in fields.items() if value is not None}
    raw = form.chunking_strategy
    if sent and raw is not None:
        raise BadRequestError(
            "send chunking_strategy either as one value or as chunking_strategy[...] fields, not both",
            param=_PARAM, code="invalid_value",
        )
    if not sent:
        if raw is None or raw.strip() == "auto":
            return None
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise BadRequestError(
                "chunking_strategy must be 'auto' or a JSON object "
                '{"type": "server_vad", "threshold": 0..1, "prefix_padding_ms": ms, "silence_duration_ms": ms}',
                param=_PARAM, code="invalid_value",
            )
        return _validated(decoded, lambda field: _PARAM)
    return _validated(sent, lambda field: f"{_PARAM}[{field}]" if field in fields else _PARAM)


def _validated(values: dict[str, object], param_of: Callable[[str], str]) -> ServerVadChunking:
    try:
        return ServerVadChunking.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "type"
        raise BadRequestError(
            f"chunking_strategy.{field}: {error['msg']}", param=param_of(field), code="invalid_value"
        ) from exc


def model_pieces(piece_pause_s: float | None) -> CutOptions:
    """How the served model wants long audio cut (its `piece_pause_s` fact; None: the defaults)."""
    pieces = CutOptions()
    if piece_pause_s is None:
        return pieces
    return dataclasses.replace(
        pieces, vad=_seeing(pieces.vad, piece_pause_s), max_pause_s=piece_pause_s, quick_check_s=0.0
    )


def chunking_options(
    strategy: ServerVadChunking | None, cues: CueCutOptions, pieces: CutOptions | None = None
) -> Chunking:
    """Cut options for a request: the defaults (`cues` from settings, `pieces` from the model)
    with the request's overrides."""
    pieces = pieces or CutOptions()
    if strategy is None:
        return Chunking(pieces=pieces, cues=cues)
    piece_changes: dict[str, float] = {}
    cue_changes: dict[str, float] = {}
    if strategy.silence_duration_ms is not None:
        piece_changes["max_pause_s"] = cue_changes["pause_s"] = strategy.silence_duration_ms / 1000
    if strategy.prefix_padding_ms is not None:
        piece_changes["edge_pad_s"] = cue_changes["edge_pad_s"] = strategy.prefix_padding_ms / 1000
    return Chunking(
        pieces=dataclasses.replace(pieces, vad=_tuned(pieces.vad, strategy), **piece_changes),
        cues=dataclasses.replace(cues, vad=_tuned(cues.vad, strategy), **cue_changes),
    )


def _tuned(vad: VadOptions, strategy: ServerVadChunking) -> VadOptions:
    if strategy.threshold is not None:
        vad = vad.at_threshold(strategy.threshold)
    if strategy.silence_duration_ms is not None:
        vad = _seeing(vad, strategy.silence_duration_ms / 1000)
    return vad


def _seeing(vad: VadOptions, pause_s: float) -> VadOptions:
    """The VAD must see a pause that short at all: its own shortest pause is min_silence_s."""
    return dataclasses.replace(vad, min_silence_s=min(vad.min_silence_s, pause_s))
