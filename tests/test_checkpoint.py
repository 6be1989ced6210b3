"""Hub-layout checkpoint loading without NeMo: expected tensors from the config, strict validation."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from canary_qwen.checkpoint import (
    KNOWN_LLM_CONFIGS,
    CheckpointError,
    expected_tensors,
    load_checkpoint,
    optional_tensors,
    read_spec,
)
from canary_qwen.manifest import Manifest
from export.build import build_artifacts
from export.reference import Reference
from export.tiny import TinySizes, salm_config

# Names from the hub checkpoint's header (notes/model.md); they must be among the expected ones.
REAL_NAMES = (
    "perception.preprocessor.featurizer.fb",
    "perception.preprocessor.featurizer.window",
    "perception.encoder.pre_encode.conv.0.weight",
    "perception.encoder.pre_encode.out.weight",
    "perception.encoder.layers.0.self_attn.linear_pos.weight",
    "perception.encoder.layers.0.conv.batch_norm.running_var",
    "perception.proj.weight",
    "perception.proj.bias",
    "embed_tokens.weight",
    "llm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
    "llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
    "llm.base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight",
    "llm.base_model.model.model.layers.0.self_attn.k_proj.weight",
)


def _copy_configs(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)
    (dst / "llm_backbone").mkdir()
    shutil.copy(src / "llm_backbone" / "config.json", dst / "llm_backbone" / "config.json")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `export tiny` draws at its default sizes, whose shapes the tests below spell out (the
    session's `checkpoint_dir` is the trained demo model once that is shipped)."""
    from export.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "checkpoint", seed=0)


@pytest.fixture(scope="module")
def tiny_tensors(tiny_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_dir / "model.safetensors"))


def _write_variant(checkpoint_dir: Path, out: Path, tensors: dict[str, torch.Tensor]) -> Path:
    _copy_configs(checkpoint_dir, out)
    save_file(tensors, str(out / "model.safetensors"))
    return out


def test_tiny_checkpoint_matches_nemo_state_dict(checkpoint_dir: Path, reference: Reference) -> None:
    ckpt = load_checkpoint(checkpoint_dir)
    nemo = {k: tuple(v.shape) for k, v in reference.model.state_dict().items()}
    derived = {**optional_tensors(ckpt.spec), **expected_tensors(ckpt.spec)}
    assert derived == nemo  # names and shapes derived from the config are NeMo's own
    assert set(REAL_NAMES) <= set(ckpt.tensors)
    assert ckpt.spec.lora is not None and ckpt.spec.lora.scale == 2.0


def test_real_canary_qwen_config_gives_the_hub_tensor_count(checkpoint_dir: Path, tmp_path: Path) -> None:
    """The published architecture: 1686 required tensors + 32 BatchNorm counters = the hub file's 1718."""
    cfg = json.loads((checkpoint_dir / "config.json").read_text())
    cfg["pretrained_llm"] = "Qwen/Qwen3-1.7B"
    cfg["perception"]["encoder"].update(n_layers=32, d_model=1024, n_heads=8, subsampling_conv_channels=256)
    cfg["perception"]["modality_adapter"]["d_model"] = 1024
    cfg["perception"]["output_dim"] = 2048
    (tmp_path / "config.json").write_text(json.dumps(cfg))  # no llm_backbone/: the known Qwen3-1.7B config
    spec = read_spec(tmp_path)
    assert spec.llm_config == KNOWN_LLM_CONFIGS["Qwen/Qwen3-1.7B"]
    required = expected_tensors(spec)
    counters = [k for k in optional_tensors(spec) if k.endswith("num_batches_tracked")]
    assert len(required) + len(counters) == 1718
    assert 2.5e9 < sum(math.prod(s) for s in required.values()) < 2.6e9
    assert required["perception.proj.weight"] == (2048, 1024)
    assert required["llm.base_model.model.model.layers.27.self_attn.q_proj.lora_A.default.weight"] == (128, 2048)
    assert required["perception.encoder.pre_encode.out.weight"] == (1024, 256 * 16)


def test_real_layout_bf16_checkpoint_loads_and_builds(tiny_dir: Path, tmp_path: Path) -> None:
    """A hub-layout checkpoint with other tiny sizes, random bf16 values, no BatchNorm counters and no
    tokenizer files goes through the same loading and export path."""
    from nemo.collections.speechlm2.models import SALM

    sizes = replace(TinySizes(), encoder_layers=3, encoder_d_model=64, llm_layers=3, lora_r=8, lora_alpha=16)
    src = tmp_path / "src"
    _copy_configs(tiny_dir, src)
    llm_cfg = json.loads((src / "llm_backbone" / "config.json").read_text())
    llm_cfg.update(num_hidden_layers=3, max_window_layers=3)
    (src / "llm_backbone" / "config.json").write_text(json.dumps(llm_cfg))
    model = SALM(salm_config(sizes, src / "llm_backbone", src))
    gen = torch.Generator().manual_seed(1)
    tensors = {
        name: (torch.randn(t.shape, generator=gen) * 0.05).to(torch.bfloat16)
        for name, t in model.state_dict().items()
        if not name.endswith("num_batches_tracked") and name != "llm.base_model.model.lm_head.weight"
    }
    tensors["perception.encoder.layers.0.conv.batch_norm.running_var"] = torch.ones(64, dtype=torch.bfloat16)
    real = tmp_path / "real"
    real.mkdir()
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["perception"]["encoder"].update(n_layers=3, d_model=64)
    cfg["perception"]["modality_adapter"]["d_model"] = 64
    cfg["lora"].update(r=8, lora_alpha=16)
    (real / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(src / "llm_backbone", real / "llm_backbone")
    save_file(tensors, str(real / "model.safetensors"))

    ckpt = load_checkpoint(real)
    assert ckpt.dtype == "bfloat16" and len(ckpt.tensors) == len(tensors)
    manifest = build_artifacts(real, tmp_path / "artifacts")
    assert manifest.dtype == "bfloat16" and manifest.d_enc == 64 and manifest.llm.layers == 3
    assert manifest.lora is not None and manifest.lora.scale == 2.0
    assert Manifest.load(tmp_path / "artifacts") == manifest
    folded = load_file(str(tmp_path / "artifacts" / "llm_asr" / "model.safetensors"))
    assert folded["model.layers.2.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert "lm_head.weight" not in folded  # tied to the embeddings, as in Qwen3-1.7B


def test_missing_tensor_is_named(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor], tmp_path: Path) -> None:
    gone = "llm.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"
    broken = {k: v for k, v in tiny_tensors.items() if k != gone}
    with pytest.raises(CheckpointError, match=r"1 missing: " + gone.replace(".", r"\.")):
        load_checkpoint(_write_variant(tiny_dir, tmp_path / "c", broken))


def test_unexpected_tensor_is_named(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor], tmp_path: Path) -> None:
    extra = {**tiny_tensors, "perception.encoder.layers.2.norm_out.weight": torch.ones(96)}
    with pytest.raises(CheckpointError, match=r"1 unexpected: perception\.encoder\.layers\.2\.norm_out\.weight"):
        load_checkpoint(_write_variant(tiny_dir, tmp_path / "c", extra))


def test_misshaped_tensor_is_named(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor], tmp_path: Path) -> None:
    bad = dict(tiny_tensors)
    bad["perception.proj.weight"] = torch.zeros(64, 95)
    with pytest.raises(CheckpointError, match=r"perception\.proj\.weight: \[64, 95\] != expected \[64, 96\]"):
        load_checkpoint(_write_variant(tiny_dir, tmp_path / "c", bad))


def test_all_problems_in_one_error(tiny_dir: Path, tiny_tensors: dict[str, torch.Tensor], tmp_path: Path) -> None:
    bad = {k: v for k, v in tiny_tensors.items() if k != "embed_tokens.weight"}
    bad["extra.weight"] = torch.zeros(1)
    bad["perception.proj.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_write_variant(tiny_dir, tmp_path / "c", bad))
    message = str(info.value)
    assert "missing: embed_tokens.weight" in message and "unexpected: extra.weight" in message
    assert "perception.proj.bias: [3] != expected [64]" in message


def test_missing_files_are_reported(checkpoint_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    _copy_configs(checkpoint_dir, tmp_path / "c")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path / "c")
    shutil.rmtree(tmp_path / "c" / "llm_backbone")
    with pytest.raises(CheckpointError, match="llm_backbone/config.json"):
        load_checkpoint(tmp_path / "c")


def test_tiny_checkpoint_is_deterministic_from_its_seed(tiny_dir: Path, tmp_path: Path) -> None:
    from export.tiny import build_tiny

    rebuilt = load_checkpoint(build_tiny(tmp_path / "again", seed=0))
    assert rebuilt.sha256() == load_checkpoint(tiny_dir).sha256()
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads(
        (tiny_dir / "config.json").read_text()
    )


def test_fixture_layout_names_match_export_all() -> None:
    from export import all as export_all
    from tests.fixtures import model as fixtures

    assert (fixtures.CHECKPOINT, fixtures.ARTIFACTS, fixtures.REPOSITORY, fixtures.COMPLETE_MARKER) == (
        export_all.CHECKPOINT,
        export_all.ARTIFACTS,
        export_all.REPOSITORY,
        export_all.COMPLETE_MARKER,
    )
