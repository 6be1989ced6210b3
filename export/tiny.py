"""`python -m export tiny --out DIR [--seed N] [--preset tiny|full]`: Canary-Qwen's architecture at tiny
(default) or real sizes, in the hub layout.

NeMo's SALM builds the model (FastConformer encoder, mel preprocessor, projection, Qwen3 with
PEFT LoRA on q/v), so names, shapes and buffers are NeMo's own. Every tensor is then re-drawn
from a seeded generator with scales that keep activations near unit variance, so the logits
are far from flat and greedy tokens are stable under float noise. lora_B is non-zero, so
folding LoRA changes the ASR model.

Presets (`PRESETS`, name -> sizes): `tiny` is the embedded model; `full` has canary-qwen-2.5b's
real dimensions. Presets in `DIRECT_WRITE` are too large for NeMo's module init (2.5 B parameters):
export/direct_checkpoint.py writes them straight from the configs, random bf16 tensors.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from canary_qwen.checkpoint import CONFIG_FILE, LLM_CONFIG_FILE
from canary_qwen.tokenizer import AUDIO_PLACEHOLDER, ENDOFTEXT_ID, IM_END_ID, VOCAB_SIZE, save_tokenizer


@dataclass(frozen=True)
class TinySizes:
    encoder_layers: int = 2
    encoder_d_model: int = 96
    encoder_heads: int = 4
    subsampling_conv_channels: int = 32
    llm_layers: int = 2
    llm_hidden: int = 64
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_head_dim: int = 16
    llm_intermediate: int = 192
    # As in the real checkpoint: r 128, alpha 256 (scale 2.0) on q_proj and v_proj.
    lora_r: int = 128
    lora_alpha: int = 256


# canary-qwen-2.5b: canary-1b-flash's FastConformer (32 layers, d_model 1024, 8 heads, FFN 4096,
# conv kernel 9, dw_striding x8 with 256 channels) and Qwen3-1.7B (KNOWN_LLM_CONFIGS in
# canary_qwen/checkpoint.py); FFN expansion and kernel size are fixed in encoder_config.
FULL_SIZES = TinySizes(
    encoder_layers=32,
    encoder_d_model=1024,
    encoder_heads=8,
    subsampling_conv_channels=256,
    llm_layers=28,
    llm_hidden=2048,
    llm_heads=16,
    llm_kv_heads=8,
    llm_head_dim=128,
    llm_intermediate=6144,
)

DEFAULT_PRESET = "tiny"
PRESETS: dict[str, TinySizes] = {
    "tiny": TinySizes(),
    "full": FULL_SIZES,
}
# Written tensor by tensor from the configs, without NeMo (export/direct_checkpoint.py).
DIRECT_WRITE: frozenset[str] = frozenset({"full"})


def preprocessor_config() -> dict[str, Any]:
    """Canary-1b-flash's preprocessor (128 mels, 25 ms Hann window, 10 ms hop, per-feature norm)."""
    return {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "dither": 1e-05,
        "features": 128,
        "frame_splicing": 1,
        "log": True,
        "n_fft": 512,
        "normalize": "per_feature",
        "pad_to": 0,
        "pad_value": 0.0,
        "sample_rate": 16000,
        "window": "hann",
        "window_size": 0.025,
        "window_stride": 0.01,
    }


def encoder_config(sizes: TinySizes) -> dict[str, Any]:
    """Canary-1b-flash's FastConformer settings with tiny width and depth."""
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": 128,
        "feat_out": -1,
        "n_layers": sizes.encoder_layers,
        "d_model": sizes.encoder_d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": sizes.subsampling_conv_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": 4,
        "self_attention_model": "rel_pos",
        "n_heads": sizes.encoder_heads,
        "att_context_size": [-1, -1],
        "xscaling": False,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "conv_context_size": None,
        "dropout": 0.1,
        "dropout_pre_encoder": 0.1,
        "dropout_emb": 0.0,
        "dropout_att": 0.1,
    }


def llm_config(sizes: TinySizes) -> dict[str, Any]:
    """A Qwen3 config: Qwen3-1.7B's settings with tiny width and depth, the real vocabulary."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": IM_END_ID,
        "head_dim": sizes.llm_head_dim,
        "hidden_act": "silu",
        "hidden_size": sizes.llm_hidden,
        "initializer_range": 0.02,
        "intermediate_size": sizes.llm_intermediate,
        "max_position_embeddings": 40960,
        "max_window_layers": sizes.llm_layers,
        "num_attention_heads": sizes.llm_heads,
        "num_hidden_layers": sizes.llm_layers,
        "num_key_value_heads": sizes.llm_kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
    }


def salm_config(sizes: TinySizes, llm_dir: Path, tokenizer_dir: Path) -> dict[str, Any]:
    """The SALM config in the shape of the hub's config.json (Qwen chat prompt, identity adapter)."""
    return {
        "pretrained_llm": str(llm_dir),
        "tokenizer_path": str(tokenizer_dir),
        "pretrained_asr": None,
        "pretrained_weights": False,
        "freeze_params": [
            "^llm\\..+$",
            "^embed_tokens\\..+$",
            "^perception\\.preprocessor\\..+$",
        ],
        "prevent_freeze_params": [],
        "prompt_format": "qwen",
        "audio_locator_tag": AUDIO_PLACEHOLDER,
        "lora": {
            "task_type": "CAUSAL_LM",
            "r": sizes.lora_r,
            "lora_alpha": sizes.lora_alpha,
            "lora_dropout": 0.01,
            "target_modules": ["q_proj", "v_proj"],
        },
        "perception": {
            "target": "nemo.collections.speechlm2.modules.perception.AudioPerceptionModule",
            "output_dim": sizes.llm_hidden,
            "modality_adapter": {
                "_target_": "nemo.collections.speechlm2.modules.perception.IdentityConnector",
                "d_model": sizes.encoder_d_model,
            },
            "preprocessor": preprocessor_config(),
            "encoder": encoder_config(sizes),
        },
    }


RESIDUAL_GAIN = 4.0


def _draw(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """A seeded value for one parameter, scaled so activations stay near unit variance."""

    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return normal(0.1)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=gen)
    if name.endswith("embed_tokens.weight"):
        return normal(1.0)
    if "lora_B" in name:
        return normal(0.5 / math.sqrt(shape[1]))
    if "norm" in name.rsplit(".", 2)[-2] and leaf == "weight":
        return 1.0 + normal(0.1)
    if leaf in ("pos_bias_u", "pos_bias_v") or len(shape) == 1:
        return normal(0.05)
    fan_in = math.prod(shape[1:])
    # The LLM's residual updates are drawn larger than its (tied) embeddings; otherwise the
    # final state stays close to the current token's embedding and greedy decoding copies it.
    gain = RESIDUAL_GAIN if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
    return normal(gain / math.sqrt(fan_in))


def reinitialize(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter and BatchNorm statistic from a generator seeded with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
            if tensor.data_ptr() in seen:
                continue  # tied lm_head shares the embedding's storage
            seen.add(tensor.data_ptr())
            if name.endswith(("featurizer.fb", "featurizer.window")):
                # The hub checkpoint stores these buffers bf16-truncated; mimic it so exporters
                # must copy them rather than recompute them.
                tensor.copy_(tensor.to(torch.bfloat16).to(tensor.dtype))
            elif name.endswith("num_batches_tracked"):
                tensor.zero_()
            else:
                tensor.copy_(_draw(name, tensor.shape, gen))


def build_tiny(out: Path, seed: int = 0, sizes: TinySizes | None = None) -> Path:
    """Write a tiny Canary-Qwen checkpoint into `out` (created; must not hold another checkpoint)."""
    from nemo.collections.speechlm2.models import SALM  # heavy import, only at build time

    sizes = sizes or TinySizes()
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(out)
    llm_dir = out / Path(LLM_CONFIG_FILE).parent
    llm_dir.mkdir(exist_ok=True)
    (llm_dir / "config.json").write_text(json.dumps(llm_config(sizes), indent=2) + "\n")

    torch.manual_seed(seed)  # NeMo/HF init draws from the global RNG before we overwrite it
    model = SALM(salm_config(sizes, llm_dir, out))
    reinitialize(model, seed)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        config = json.loads((Path(tmp) / CONFIG_FILE).read_text())
        shutil.move(str(Path(tmp) / "model.safetensors"), out / "model.safetensors")
    (out / "model.safetensors").chmod(0o644)  # the temp file was private
    # Store names, not this machine's paths: NeMo resolves the LLM config and tokenizer that
    # sit beside config.json (llm_backbone/, tokenizer files) when it loads the directory.
    config["pretrained_llm"] = "llm_backbone"
    config.pop("tokenizer_path", None)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def build_preset(out: Path, preset: str = DEFAULT_PRESET, seed: int = 0) -> Path:
    """Write the named preset's checkpoint into `out`: NeMo's modules, or the direct writer."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if preset in DIRECT_WRITE:
        from export.direct_checkpoint import write_checkpoint

        return write_checkpoint(out, PRESETS[preset], seed=seed)
    return build_tiny(out, seed=seed, sizes=PRESETS[preset])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed for every tensor (default 0)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="sizes: tiny (the embedded model, default) or full (canary-qwen-2.5b's, random bf16, ~5 GB)",
    )


def run(args: argparse.Namespace) -> int:
    path = build_preset(args.out, args.preset, seed=args.seed)
    print(f"{args.preset} checkpoint written to {path}")
    return 0
