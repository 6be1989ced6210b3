"""The LLM as standard Hugging Face Qwen3 folders (no NeMo, no PEFT needed to load them).

llm_asr:  LoRA folded into the base weights, W += (alpha / r) * B @ A on each LoRA target.
llm_base: the unmodified base weights (LLM mode, LoRA off).
Both keep the checkpoint's dtype; folding is computed in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from canary_qwen.checkpoint import EMBED, LLM_LAYERS, LLM_NORM, LM_HEAD, Checkpoint
from canary_qwen.tokenizer import ENDOFTEXT_ID, IM_END_ID

WEIGHTS = "model.safetensors"
LORA_A = ".lora_A.default.weight"
LORA_B = ".lora_B.default.weight"
BASE = ".base_layer.weight"


def _hf_name(name: str) -> str:
    if name == EMBED:
        return "model.embed_tokens.weight"
    if name == LLM_NORM:
        return "model.norm.weight"
    if name == LM_HEAD:
        return "lm_head.weight"
    return "model.layers." + name[len(LLM_LAYERS) :].replace(BASE, ".weight")


def llm_state_dict(checkpoint: Checkpoint, fold_lora: bool) -> dict[str, torch.Tensor]:
    """Qwen3ForCausalLM state dict (HF names) from the SALM tensors."""
    names = [n for n in checkpoint.tensors if n.startswith(LLM_LAYERS) or n in (EMBED, LLM_NORM)]
    if not checkpoint.spec.llm.tie_word_embeddings:
        names.append(LM_HEAD)
    tensors = checkpoint.load(names)
    scale = checkpoint.spec.lora.scale if checkpoint.spec.lora else 0.0
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith((LORA_A, LORA_B)):
            continue
        if fold_lora and name.endswith(BASE):
            stem = name[: -len(BASE)]
            a, b = tensors[stem + LORA_A].float(), tensors[stem + LORA_B].float()
            tensor = (tensor.float() + scale * (b @ a)).to(tensor.dtype)
        out[_hf_name(name)] = tensor.contiguous()
    return out


def llm_config(checkpoint: Checkpoint) -> dict[str, object]:
    config = dict(checkpoint.spec.llm_config)
    config["architectures"] = ["Qwen3ForCausalLM"]
    config["torch_dtype"] = checkpoint.dtype
    config.pop("dtype", None)
    return config


def generation_config() -> dict[str, object]:
    return {
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
        "pad_token_id": ENDOFTEXT_ID,
        "do_sample": False,
    }


def write_llm_folder(checkpoint: Checkpoint, out: Path, fold_lora: bool) -> Path:
    """Write config.json, generation_config.json and model.safetensors (tokenizer added by the caller)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(llm_state_dict(checkpoint, fold_lora), str(out / WEIGHTS), metadata={"format": "pt"})
    (out / WEIGHTS).chmod(0o644)  # safetensors writes owner-only files; servers may run as another user
    (out / "config.json").write_text(json.dumps(llm_config(checkpoint), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation_config(), indent=2) + "\n")
    return out
