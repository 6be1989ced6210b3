"""A hub-layout checkpoint written straight from the configs: random bf16 tensors, no NeMo.

`export tiny --preset full` uses this for canary-qwen-2.5b's real sizes (2.5 B parameters): NeMo's
module init and per-tensor Python draws take many minutes there, this takes well under one on a
few cores. The tensor set (names, shapes) is the one canary_qwen/checkpoint.py derives from the two
configs, so the result passes its validation by construction and is checked by it once written.

Values: one seeded pool of standard-normal float32 values (a prime count, up to 16 M); each tensor
reads a window of it from an offset derived from (seed, name), scaled as export/tiny.py scales its
draws (activations near unit variance, LoRA B non-zero). Windows of a prime-length pool never repeat
a row within a tensor, which is all a random-weight benchmark needs. The mel filterbank and window are computed (as NeMo does,
then bf16-truncated as in the hub checkpoint), not drawn.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from canary_qwen.checkpoint import (
    CONFIG_FILE,
    LLM_CONFIG_FILE,
    MEL_FB,
    MEL_WINDOW,
    WEIGHTS_FILE,
    Checkpoint,
    expected_tensors,
    load_checkpoint,
    read_spec,
)
from canary_qwen.tokenizer import save_tokenizer
from export.tiny import RESIDUAL_GAIN, TinySizes, llm_config, preprocessor_config, salm_config

MAX_POOL = 1 << 24  # pool values at most (64 MiB float32); smaller checkpoints draw fewer
CHUNK = 1 << 24  # elements converted and written at a time (bounded memory)
LLM_DIR = Path(LLM_CONFIG_FILE).parent.as_posix()
# What NeMo's save_pretrained adds to the SALM config (export/tiny.py writes NeMo's own file).
NEMO_CONFIG_EXTRAS = {
    "architectures": ["NeMoSpeechLMForConditionalGeneration"],
    "model_type": "nemo_speechlm",
    "prevent_freeze_params": ["^.+\\.lora_.+$"],
}


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = hz / f_sp
    high = hz >= min_log_hz
    mel[high] = min_log_mel + np.log(hz[high] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    hz = f_sp * mel
    high = mel >= min_log_mel
    hz[high] = min_log_hz * np.exp(logstep * (mel[high] - min_log_mel))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32: librosa.filters.mel(sr, n_fft, n_mels) with slaney norm, fmin 0,
    fmax sr/2, as NeMo's AudioToMelSpectrogramPreprocessor builds it (librosa/filters.py, `mel`)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2)
    mel_f = _mel_to_hz(edges)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, fft_freqs.size))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights.astype(np.float32)


def mel_buffers(pre: dict[str, object]) -> dict[str, torch.Tensor]:
    """The preprocessor's fb [1, n_mels, bins] and symmetric Hann window, bf16 as in the hub file."""
    rate, n_fft, n_mels = int(pre["sample_rate"]), int(pre["n_fft"]), int(pre["features"])  # type: ignore[call-overload]
    win_length = int(round(float(pre["window_size"]) * rate))  # type: ignore[arg-type]
    fb = torch.from_numpy(mel_filterbank(rate, n_fft, n_mels)).unsqueeze(0)
    window = torch.hann_window(win_length, periodic=False)
    return {MEL_FB: fb.to(torch.bfloat16), MEL_WINDOW: window.to(torch.bfloat16)}


def draw_rule(name: str, shape: tuple[int, ...]) -> tuple[float, float, bool]:
    """(mean, std, absolute) for one tensor: export/tiny.py's `_draw` scales, in closed form."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return 0.0, 0.1, False
    if leaf == "running_var":
        return 0.5, 0.5, True  # positive, about tiny's 0.5 + U(0, 1)
    if name.endswith("embed_tokens.weight"):
        return 0.0, 1.0, False
    if "lora_B" in name:
        return 0.0, 0.5 / math.sqrt(shape[1]), False
    if "norm" in name.rsplit(".", 2)[-2] and leaf == "weight":
        return 1.0, 0.1, False
    if leaf in ("pos_bias_u", "pos_bias_v") or len(shape) == 1:
        return 0.0, 0.05, False
    gain = RESIDUAL_GAIN if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
    return 0.0, gain / math.sqrt(math.prod(shape[1:])), False


def pool_size(total: int) -> int:
    """A prime (windows at different offsets never line up) near a quarter of `total`, capped."""
    size = max(1 << 16, min(MAX_POOL, total // 4)) - 1
    while any(size % d == 0 for d in range(2, math.isqrt(size) + 1)):
        size -= 1
    return size


class _Pool:
    """Seeded standard-normal values, read as windows that wrap around."""

    def __init__(self, seed: int, size: int, device: torch.device) -> None:
        gen = torch.Generator(device=device).manual_seed(seed)
        self.size = size
        self.values = torch.randn(size, generator=gen, device=device)

    def offset(self, seed: int, name: str) -> int:
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "little") % self.size

    def window(self, start: int, count: int) -> torch.Tensor:
        parts, left = [], count
        while left:
            take = min(left, self.size - start)
            parts.append(self.values[start : start + take])
            left -= take
            start = 0
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _chunks(pool: _Pool, seed: int, name: str, shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
    """The tensor's bf16 values, CHUNK elements at a time, on the CPU."""
    mean, std, absolute = draw_rule(name, shape)
    total = math.prod(shape)
    start = pool.offset(seed, name)
    for first in range(0, total, CHUNK):
        count = min(CHUNK, total - first)
        values = pool.window((start + first) % pool.size, count)
        if absolute:
            values = values.abs()
        yield (values * std + mean).to(torch.bfloat16).cpu()


def _header(shapes: dict[str, tuple[int, ...]]) -> bytes:
    """The safetensors header: every tensor BF16, in the given order, contiguous."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        entries[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def write_configs(out: Path, sizes: TinySizes) -> None:
    llm_dir = out / LLM_DIR
    llm_dir.mkdir(exist_ok=True)
    llm = llm_config(sizes)
    llm["torch_dtype"] = "bfloat16"  # the hub checkpoint's storage dtype
    (llm_dir / "config.json").write_text(json.dumps(llm, indent=2) + "\n")
    config = {**salm_config(sizes, Path(LLM_DIR), out), **NEMO_CONFIG_EXTRAS}
    config["pretrained_llm"] = LLM_DIR  # a name beside config.json, not this machine's path
    config.pop("tokenizer_path", None)
    assert config["perception"]["preprocessor"] == preprocessor_config()
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_checkpoint(out: Path, sizes: TinySizes, seed: int = 0, device: str | None = None) -> Path:
    """Write config.json, llm_backbone/, the tokenizer and model.safetensors (bf16) into `out`.

    `device` draws the pool there (default: CUDA when available, else the CPU); values differ
    between devices, never between runs on one. Returns `out`, validated by load_checkpoint.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(out)
    write_configs(out, sizes)
    shapes = expected_tensors(read_spec(out))
    fixed = mel_buffers(preprocessor_config())
    total = sum(math.prod(shape) for shape in shapes.values())
    pool = _Pool(seed, pool_size(total), torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    partial = out / (WEIGHTS_FILE + ".partial")
    with partial.open("wb") as f:
        f.write(_header(shapes))
        for name, shape in shapes.items():
            if name in fixed:
                f.write(fixed[name].contiguous().view(torch.uint8).numpy().tobytes())
                continue
            for chunk in _chunks(pool, seed, name, shape):
                f.write(memoryview(chunk.view(torch.uint8).numpy()))
    partial.chmod(0o644)
    partial.replace(out / WEIGHTS_FILE)  # a model.safetensors present is always complete
    checkpoint: Checkpoint = load_checkpoint(out)
    return checkpoint.directory


def parameter_count(sizes: TinySizes) -> int:
    """Elements the direct writer stores for `sizes` (configs only, nothing drawn)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_configs(Path(tmp), sizes)
        return sum(math.prod(shape) for shape in expected_tensors(read_spec(Path(tmp))).values())
