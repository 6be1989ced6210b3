"""The shipped demo model: Canary-Qwen's architecture at small size, trained by `export train`.

`export/demo/weights.safetensors` holds only what training changed, in float16: every trained
tensor whole, and of the tied token embedding only the rows training touched
(`embed_tokens.rows` int32 + `embed_tokens.values`). Everything else is where training
started: what `export tiny` draws from DEMO_SEED at DEMO_SIZES, with the embedding scaled by
EMBED_SCALE (`starting_point`), so `build_demo` regenerates that and lays the shipped tensors
over it. `export/demo/training.json` records how the weights were made and their sha256; a
file that does not match it, or tensors that do not fit, stop the build.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from canary_qwen.checkpoint import EMBED, LM_HEAD, WEIGHTS_FILE
from export.tiny import TinySizes, build_tiny

DEMO_SEED = 20261201
DEMO_SIZES = TinySizes(
    encoder_layers=6,
    encoder_d_model=176,
    encoder_heads=4,
    subsampling_conv_channels=32,
    llm_layers=4,
    llm_hidden=128,
    llm_heads=4,
    llm_kv_heads=2,
    llm_head_dim=32,
    llm_intermediate=384,
)
# The seeded table is N(0, 1), tuned for random-output tests; training starts from it scaled to
# 1/sqrt(hidden), the usual scale, which regenerates exactly for the rows training leaves alone.
EMBED_SCALE = 1 / math.sqrt(DEMO_SIZES.llm_hidden)
# The demo model loops on audio of several sentences (trained mostly on one: export/train/dataset.py),
# so its export asks the gateway to end a piece at every pause this long (manifest piece_pause_s:
# a gap between detected speech, which the VAD pads by 0.1 s each side, so about 0.35 s of
# silence). bench wer's held-out clips in a 3-minute recording with 0.4-1.5 s pauses, the 0.349
# weights: WER 0.83 in pieces of up to 40 s; ending pieces at gaps of 0.4 / 0.3 / 0.2 / 0.15 /
# 0.1 s: 0.435 / 0.376 / 0.329 / 0.327 / 0.320.
DEMO_PIECE_PAUSE_S = 0.15
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_WEIGHTS = DEMO_DIR / "weights.safetensors"
DEMO_RECORD = DEMO_DIR / "training.json"
ROWS, VALUES = "embed_tokens.rows", "embed_tokens.values"


class DemoWeightsError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def starting_point(seeded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state training starts from: the seeded one with the tied embedding scaled."""
    state = dict(seeded)
    state[EMBED] = seeded[EMBED] * EMBED_SCALE
    if LM_HEAD in state:
        state[LM_HEAD] = state[EMBED]
    return state


def pack(trained: dict[str, torch.Tensor], seeded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What training changed: whole tensors, and the changed rows of the embedding."""
    if trained.keys() != seeded.keys():
        raise DemoWeightsError(f"trained and seeded tensor names differ: {sorted(trained.keys() ^ seeded.keys())}")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in trained.items():
        if name == LM_HEAD:
            continue  # tied to the embedding
        if name == EMBED:
            rows = (tensor != seeded[name]).any(dim=1).nonzero().squeeze(1)
            out[ROWS] = rows.to(torch.int32)
            out[VALUES] = tensor[rows].to(torch.float16)
        elif not torch.equal(tensor, seeded[name]):
            out[name] = tensor.to(torch.float16) if tensor.is_floating_point() else tensor
    return out


def unpack(packed: dict[str, torch.Tensor], seeded: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """The full state: seeded tensors with the shipped ones laid over them (in the seeded dtype)."""
    state = dict(seeded)
    for name, tensor in packed.items():
        if name in (ROWS, VALUES):
            continue
        if name not in seeded or seeded[name].shape != tensor.shape:
            want = tuple(seeded[name].shape) if name in seeded else "no such tensor"
            raise DemoWeightsError(f"{source}: tensor {name} {tuple(tensor.shape)} does not fit the model ({want})")
        state[name] = tensor.to(seeded[name].dtype)
    if (ROWS in packed) != (VALUES in packed):
        raise DemoWeightsError(f"{source}: needs both {ROWS} and {VALUES}")
    if ROWS in packed:
        rows, values = packed[ROWS].long(), packed[VALUES]
        table = seeded[EMBED].clone()
        if rows.numel() and (int(rows.max()) >= table.shape[0] or values.shape != (rows.numel(), table.shape[1])):
            raise DemoWeightsError(f"{source}: embedding rows do not fit the {tuple(table.shape)} table")
        table[rows] = values.to(table.dtype)
        state[EMBED] = table
        if LM_HEAD in state:
            state[LM_HEAD] = table
    return state


def read_record(record: Path = DEMO_RECORD) -> dict[str, object]:
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise DemoWeightsError(f"{record}: cannot read the training record ({exc})") from exc


def load_packed(weights: Path = DEMO_WEIGHTS, record: Path = DEMO_RECORD) -> dict[str, torch.Tensor]:
    expected = read_record(record).get("weights_sha256")
    if not weights.is_file():
        raise DemoWeightsError(f"{weights}: the shipped demo weights are missing")
    if sha256(weights) != expected:
        raise DemoWeightsError(f"{weights}: sha256 differs from the one in {record} (corrupt or mismatched file)")
    try:
        return load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise DemoWeightsError(f"{weights}: not a readable safetensors file ({exc})") from exc


def build_demo(out: Path, weights: Path = DEMO_WEIGHTS, record: Path = DEMO_RECORD) -> Path:
    """The trained demo checkpoint in the hub layout under `out`."""
    packed = load_packed(weights, record)
    build_tiny(out, seed=DEMO_SEED, sizes=DEMO_SIZES)
    state = unpack(packed, starting_point(load_file(str(out / WEIGHTS_FILE))), weights)
    # Tied tensors must be separate storage for safetensors.
    save_file({k: v.contiguous().clone() if k == LM_HEAD else v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
    (out / WEIGHTS_FILE).chmod(0o644)
    return out
