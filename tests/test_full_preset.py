"""`export tiny --preset full`: canary-qwen-2.5b's real sizes, written without NeMo.

What is checked, and at what size (the whole 2.5 B-parameter, 5.1 GB file takes minutes to
write on two cores, so CI writes the same widths with one layer each):
- the full preset's configs: every dimension is canary-qwen-2.5b's, the config keys are the ones
  NeMo's save_pretrained writes, and the derived tensor set has about 2.5 B parameters;
- a full-width, one-layer checkpoint written by the direct writer: canary_qwen/checkpoint.py
  validates it, every tensor is bf16 and finite with the intended scale, the mel buffers equal
  NeMo's, the same seed gives the same file;
- the plain-PyTorch encoder and adapter run on it at full width, and `export build` (NeMo's
  modules, ONNX export checked against them, LLM folders) accepts it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from canary_qwen.checkpoint import (
    EMBED,
    KNOWN_LLM_CONFIGS,
    MEL_FB,
    MEL_WINDOW,
    expected_tensors,
    load_checkpoint,
    read_spec,
)
from export.direct_checkpoint import draw_rule, write_checkpoint, write_configs
from export.tiny import DEFAULT_PRESET, FULL_SIZES, PRESETS, TinySizes

WIDE = dataclasses.replace(FULL_SIZES, encoder_layers=1, llm_layers=1)
QWEN3_1_7B = KNOWN_LLM_CONFIGS["Qwen/Qwen3-1.7B"]


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return set()
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        out |= _keys(value, prefix + key + ".")
    return out


def test_default_preset_is_the_embedded_tiny_model() -> None:
    assert DEFAULT_PRESET == "tiny" and PRESETS["tiny"] == TinySizes()


def test_full_preset_has_the_real_dimensions(tmp_path: Path) -> None:
    write_configs(tmp_path, PRESETS["full"])
    spec = read_spec(tmp_path)
    enc = spec.encoder
    assert (enc.n_layers, enc.d_model, enc.n_heads, enc.ff_expansion_factor * enc.d_model) == (32, 1024, 8, 4096)
    assert (enc.conv_kernel_size, enc.subsampling_factor, enc.subsampling_conv_channels) == (9, 8, 256)
    llm = spec.llm
    assert llm.hidden_size == QWEN3_1_7B["hidden_size"] == 2048
    assert llm.num_layers == QWEN3_1_7B["num_hidden_layers"] == 28
    assert (llm.num_heads, llm.num_kv_heads, llm.head_dim) == (16, 8, 128)
    assert llm.intermediate_size == QWEN3_1_7B["intermediate_size"] == 6144
    assert llm.vocab_size == QWEN3_1_7B["vocab_size"] and llm.tie_word_embeddings
    assert spec.lora is not None and (spec.lora.r, spec.lora.alpha, spec.lora.scale) == (128, 256.0, 2.0)
    assert spec.adapter_dim == 1024
    params = sum(math.prod(shape) for shape in expected_tensors(spec).values())
    assert 2.4e9 < params < 2.7e9, params  # "about 2.5 B in all"


def test_direct_configs_have_nemos_keys(tmp_path: Path, checkpoint_dir: Path) -> None:
    """The direct writer's config.json has exactly the keys of the one NeMo saved for the tiny model."""
    write_configs(tmp_path, PRESETS["tiny"])
    nemo = json.loads((checkpoint_dir / "config.json").read_text())
    direct = json.loads((tmp_path / "config.json").read_text())
    assert _keys(direct) == _keys(nemo)
    assert direct["pretrained_llm"] == nemo["pretrained_llm"] == "llm_backbone"


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("wide"), WIDE, seed=0, device="cpu")


@pytest.mark.timeout(600)
def test_wide_checkpoint_validates_as_bf16(wide_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(wide_checkpoint)  # raises on any missing or mis-shaped tensor
    assert checkpoint.dtype == "bfloat16"
    assert {info.dtype for info in checkpoint.tensors.values()} == {"bfloat16"}
    assert checkpoint.spec.encoder.d_model == 1024 and checkpoint.spec.llm.hidden_size == 2048
    assert checkpoint.tensors[EMBED].shape == (QWEN3_1_7B["vocab_size"], 2048)


def test_wide_checkpoint_values(wide_checkpoint: Path, checkpoint_dir: Path) -> None:
    checkpoint = load_checkpoint(wide_checkpoint)
    nemo = load_checkpoint(checkpoint_dir).load([MEL_FB, MEL_WINDOW])
    mine = checkpoint.load([MEL_FB, MEL_WINDOW])
    for name in (MEL_FB, MEL_WINDOW):  # NeMo's buffers, bf16-truncated, to the bit
        assert torch.equal(mine[name].float(), nemo[name].float().to(torch.bfloat16).float()), name
    names = [
        "perception.encoder.layers.0.feed_forward1.linear1.weight",
        "perception.encoder.layers.0.conv.batch_norm.running_var",
        "llm.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight",
        "llm.base_model.model.model.layers.0.mlp.down_proj.weight",
        "llm.base_model.model.model.layers.0.input_layernorm.weight",
    ]
    tensors = checkpoint.load(names)
    for name in names:
        values = tensors[name].float()
        mean, std, absolute = draw_rule(name, tuple(values.shape))
        assert torch.isfinite(values).all(), name
        if absolute:
            assert (values >= mean).all(), name
        else:
            assert abs(float(values.mean()) - mean) < 0.1 * std + 1e-3, name
            assert 0.8 < float(values.std()) / std < 1.2, name
    up, gate = (
        checkpoint.load([f"llm.base_model.model.model.layers.0.mlp.{p}_proj.weight" for p in ("up", "gate")]).values()
    )
    assert not torch.equal(up, gate)  # each tensor reads its own window of the pool


def _sha(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_file(tmp_path: Path) -> None:
    sizes = PRESETS["tiny"]
    first = write_checkpoint(tmp_path / "a", sizes, seed=3, device="cpu")
    again = write_checkpoint(tmp_path / "b", sizes, seed=3, device="cpu")
    other = write_checkpoint(tmp_path / "c", sizes, seed=4, device="cpu")
    assert _sha(first) == _sha(again) != _sha(other)


def test_full_width_encoder_and_adapter_run(wide_checkpoint: Path) -> None:
    from canary_qwen.fastconformer import adapter_from_checkpoint, encoder_from_checkpoint

    checkpoint = load_checkpoint(wide_checkpoint)
    encoder, adapter = encoder_from_checkpoint(checkpoint), adapter_from_checkpoint(checkpoint)
    mel = torch.randn(2, 128, 200, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([200, 120], dtype=torch.int32)
    with torch.inference_mode():
        encoded, encoded_len = encoder(mel, lengths)
        embeds, embeds_len = adapter(encoded, encoded_len)
    assert encoded.shape == (2, 25, 1024) and embeds.shape == (2, 25, 2048)
    assert encoded_len.tolist() == embeds_len.tolist() == [25, 15]
    assert torch.isfinite(embeds[0]).all() and torch.isfinite(embeds[1, :15]).all()


@pytest.mark.timeout(1800)  # ~2.5 min on two quiet cores; NeMo + 1.3 GB of Qwen3 folders written
def test_export_build_accepts_it(wide_checkpoint: Path, tmp_path: Path) -> None:
    """NeMo's modules load the direct writer's tensors, the ONNX export matches them, LLM folders load."""
    from transformers import AutoModelForCausalLM

    from export.build import build_artifacts

    manifest = build_artifacts(wide_checkpoint, tmp_path)  # raises BuildError past EXPORT_TOLERANCE
    assert (manifest.d_enc, manifest.d_llm, manifest.dtype) == (1024, 2048, "bfloat16")
    assert (manifest.llm.heads, manifest.llm.kv_heads, manifest.llm.head_dim) == (16, 8, 128)
    llm = AutoModelForCausalLM.from_pretrained(str(tmp_path / manifest.files.llm_asr), dtype=torch.float32)
    with torch.inference_mode():
        logits = llm(input_ids=torch.tensor([[151644, 872, 198]])).logits
    assert logits.shape == (1, 3, QWEN3_1_7B["vocab_size"]) and torch.isfinite(logits).all()
