"""encoder.onnx and adapter.onnx from a checkpoint, through NeMo's own modules.

NeMo builds the FastConformer (and the modality adapter) from the checkpoint's config, the
checkpoint's tensors are loaded strictly, and thin wrappers fix the Triton contract:
    encoder: MEL f32 [B,F,T], MEL_LENGTH i32 [B] -> ENCODED f32 [B,T',D_enc], ENCODED_LENGTH i32 [B]
    adapter: ENCODED, ENCODED_LENGTH -> AUDIO_EMBEDS f32 [B,T',D_llm], AUDIO_EMBEDS_LENGTH i32 [B]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from canary_qwen.checkpoint import ENCODER, Checkpoint, CheckpointError

OPSET = 17
# Trace at a length inside the supported range; time and batch stay dynamic in the graph.
TRACE_BATCH = 2
TRACE_MEL_FRAMES = 1000

ENCODER_INPUTS = ("MEL", "MEL_LENGTH")
ENCODER_OUTPUTS = ("ENCODED", "ENCODED_LENGTH")
ADAPTER_INPUTS = ("ENCODED", "ENCODED_LENGTH")
ADAPTER_OUTPUTS = ("AUDIO_EMBEDS", "AUDIO_EMBEDS_LENGTH")


class EncoderForExport(nn.Module):
    """NeMo ConformerEncoder with int32 lengths and [B, T', D] output."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, encoded_length = self.encoder(audio_signal=mel, length=mel_length.to(torch.int64))
        return encoded.transpose(1, 2), encoded_length.to(torch.int32)


class AdapterForExport(nn.Module):
    """Modality adapter then the projection to the LLM width (NeMo's AudioPerceptionModule tail)."""

    def __init__(self, modality_adapter: nn.Module, proj: nn.Module) -> None:
        super().__init__()
        self.modality_adapter = modality_adapter
        self.proj = proj

    def forward(self, encoded: torch.Tensor, encoded_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adapted, adapted_length = self.modality_adapter(audio_signal=encoded.transpose(1, 2), length=encoded_length)
        return self.proj(adapted.transpose(1, 2)), adapted_length.to(torch.int32)


@contextlib.contextmanager
def _no_typecheck() -> Iterator[None]:
    from nemo.core.classes.common import typecheck

    with typecheck.disable_checks():
        yield


def _load_strict(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    result = module.load_state_dict(tensors, strict=False)
    # BatchNorm's step counter is not needed at inference and may be absent from a checkpoint.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{what}: missing {missing}, unexpected {result.unexpected_keys}")


def build_encoder(checkpoint: Checkpoint) -> EncoderForExport:
    """NeMo's ConformerEncoder from the checkpoint config with the checkpoint's weights, in eval mode."""
    from nemo.core.classes.common import Serialization

    cfg = dict(checkpoint.spec.salm_config["perception"]["encoder"])
    encoder = Serialization.from_config_dict(cfg)
    weights = {k: v.float() for k, v in checkpoint.load_prefix(ENCODER).items()}
    _load_strict(encoder, weights, "encoder")
    # eval() before export: in train mode BatchNorm would normalise with batch statistics.
    return EncoderForExport(encoder).eval()


def build_adapter(checkpoint: Checkpoint) -> AdapterForExport:
    from nemo.core.classes.common import Serialization

    perception = checkpoint.spec.salm_config["perception"]
    adapter = Serialization.from_config_dict(dict(perception["modality_adapter"]))
    adapter_weights = {k: v.float() for k, v in checkpoint.load_prefix("perception.modality_adapter.").items()}
    _load_strict(adapter, adapter_weights, "modality adapter")
    proj_weights = {k: v.float() for k, v in checkpoint.load_prefix("perception.proj.").items()}
    proj = nn.Linear(proj_weights["weight"].shape[1], proj_weights["weight"].shape[0])
    _load_strict(proj, proj_weights, "projection")
    return AdapterForExport(adapter, proj).eval()


def _export(
    module: nn.Module,
    example: tuple[torch.Tensor, torch.Tensor],
    path: Path,
    inputs: tuple[str, str],
    outputs: tuple[str, str],
    time_axis: int,
) -> None:
    dynamic_axes = {
        inputs[0]: {0: "batch", time_axis: "time"},
        inputs[1]: {0: "batch"},
        outputs[0]: {0: "batch", 1: "frames"},
        outputs[1]: {0: "batch"},
    }
    with torch.no_grad(), _no_typecheck():
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_encoder(checkpoint: Checkpoint, path: Path) -> EncoderForExport:
    encoder = build_encoder(checkpoint)
    features = checkpoint.spec.mel_features
    mel = torch.randn(TRACE_BATCH, features, TRACE_MEL_FRAMES)
    lengths = torch.tensor([TRACE_MEL_FRAMES, TRACE_MEL_FRAMES * 3 // 4], dtype=torch.int32)
    _export(encoder, (mel, lengths), path, ENCODER_INPUTS, ENCODER_OUTPUTS, time_axis=2)
    return encoder


def export_adapter(checkpoint: Checkpoint, path: Path) -> AdapterForExport:
    adapter = build_adapter(checkpoint)
    frames = checkpoint.spec.encoder.frames(TRACE_MEL_FRAMES)
    encoded = torch.randn(TRACE_BATCH, frames, checkpoint.spec.encoder.d_model)
    lengths = torch.tensor([frames, frames * 3 // 4], dtype=torch.int32)
    _export(adapter, (encoded, lengths), path, ADAPTER_INPUTS, ADAPTER_OUTPUTS, time_axis=1)
    return adapter
