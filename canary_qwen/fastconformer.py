"""Canary's FastConformer encoder and audio adapter in plain PyTorch, without NeMo.

For machines that have PyTorch (and a GPU) but no NeMo: the GPU benchmark runs the encoder and
adapter on CUDA through these modules. The checkpoint's tensors load into them strictly (same
names as NeMo's modules), and tests/test_fastconformer.py checks them against the NeMo-exported
encoder.onnx / adapter.onnx. The computation follows NeMo 3.0's modules for the configurations
canary_qwen/checkpoint.py accepts (dw_striding, rel_pos with untied biases, batch norm, no
xscaling, full context):
    nemo/collections/asr/modules/conformer_encoder.py    ConformerEncoder.forward_internal, _create_masks
    nemo/collections/asr/parts/submodules/subsampling.py ConvSubsampling, MaskedConvSequential
    nemo/collections/asr/parts/submodules/conformer_modules.py  ConformerLayer, ConformerConvolution
    nemo/collections/asr/parts/submodules/multi_head_attention.py  RelPositionMultiHeadAttention,
        RelPositionalEncoding
Contract (as the exported graphs, export/onnx_export.py):
    encoder: mel [B, F, T] float, mel_length [B] -> encoded [B, T', D_enc], encoded_length int32 [B]
    adapter: encoded, encoded_length -> audio_embeds [B, T', D_llm], length int32 [B]
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from canary_qwen.checkpoint import ENCODER, Checkpoint, EncoderSpec

ATTENTION_MASK_VALUE = -10000.0  # NeMo's INF_VAL
PROJ = "perception.proj."
ENCODER_FILE = "encoder.torch.safetensors"
ADAPTER_FILE = "adapter.torch.safetensors"
_SPEC_KEY = "spec"


class _Subsampling(nn.Module):
    """dw_striding: Conv2d(1, C, 3, s2) + ReLU, then per extra stride depthwise 3x3 s2 + pointwise 1x1
    + ReLU; time steps past each item's length are zeroed before every layer (MaskedConvSequential)."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        ch = spec.subsampling_conv_channels
        layers: list[nn.Module] = [nn.Conv2d(1, ch, 3, stride=2, padding=1), nn.ReLU()]
        for _ in range(spec.num_stride_convs - 1):
            layers += [nn.Conv2d(ch, ch, 3, stride=2, padding=1, groups=ch), nn.Conv2d(ch, ch, 1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        freq = spec.feat_in
        for _ in range(spec.num_stride_convs):
            freq = (freq - 1) // 2 + 1
        self.out = nn.Linear(ch * freq, spec.d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(1)  # [B, 1, T, F]
        for layer in self.conv:
            x = x * _time_mask(lengths, x.shape[2]).to(x.dtype)[:, None, :, None]
            x = layer(x)
            if isinstance(layer, nn.Conv2d) and layer.stride != (1, 1):
                lengths = (lengths - 1) // 2 + 1  # (L + 2 * 1 - 3) // 2 + 1
        x = x * _time_mask(lengths, x.shape[2]).to(x.dtype)[:, None, :, None]
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f)), lengths


def _time_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, T] True where the step is inside the item."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def relative_positions(steps: int, d_model: int, device: torch.device) -> torch.Tensor:
    """[1, 2T - 1, D]: sinusoids of positions T-1 ... -(T-1) (RelPositionalEncoding.create_pe)."""
    positions = torch.arange(steps - 1, -steps, -1, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / d_model)
    )
    pe = torch.zeros(positions.shape[0], d_model, device=device)
    pe[:, 0::2] = torch.sin(positions * div_term)
    pe[:, 1::2] = torch.cos(positions * div_term)
    return pe.unsqueeze(0)


class _FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.silu(self.linear1(x)))


class _Convolution(nn.Module):
    def __init__(self, d_model: int, kernel_size: int) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise_conv = nn.Conv1d(d_model, d_model, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        x = x.masked_fill(pad_mask.unsqueeze(1), 0.0)
        x = F.silu(self.batch_norm(self.depthwise_conv(x)))
        return self.pointwise_conv2(x).transpose(1, 2)


class _RelPositionAttention(nn.Module):
    """Transformer-XL attention with untied biases; scaled_dot_product_attention with the position
    term as its additive mask (NeMo's use_pytorch_sdpa path)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d_k = heads, d_model // heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.heads, self.d_k)  # [B, T, H, d_k]

    def forward(self, x: torch.Tensor, att_mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self._heads(self.linear_q(x))
        k = self._heads(self.linear_k(x)).transpose(1, 2)
        v = self._heads(self.linear_v(x)).transpose(1, 2)
        p = self._heads(self.linear_pos(pos_emb)).transpose(1, 2)  # [1, H, 2T-1, d_k]
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        bd = _rel_shift(torch.matmul(q_v, p.transpose(-2, -1)))[..., :t] / math.sqrt(self.d_k)
        bd = bd.masked_fill(att_mask.unsqueeze(1), ATTENTION_MASK_VALUE)
        out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bd)
        out = out.masked_fill(att_mask.all(dim=-1)[:, None, :, None], 0.0)  # padded query rows
        return self.linear_out(out.transpose(1, 2).reshape(b, t, self.heads * self.d_k))


def _rel_shift(x: torch.Tensor) -> torch.Tensor:
    b, h, qlen, pos_len = x.shape
    x = F.pad(x, pad=(1, 0)).view(b, h, -1, qlen)
    return x[:, :, 1:].reshape(b, h, qlen, pos_len)


class _ConformerLayer(nn.Module):
    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        d = spec.d_model
        ff = d * spec.ff_expansion_factor
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = _FeedForward(d, ff)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = _RelPositionAttention(d, spec.n_heads)
        self.norm_conv = nn.LayerNorm(d)
        self.conv = _Convolution(d, spec.conv_kernel_size)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = _FeedForward(d, ff)
        self.norm_out = nn.LayerNorm(d)

    def forward(
        self, x: torch.Tensor, att_mask: torch.Tensor, pos_emb: torch.Tensor, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), att_mask, pos_emb)
        x = x + self.conv(self.norm_conv(x), pad_mask)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)


class FastConformerEncoder(nn.Module):
    """NeMo ConformerEncoder (inference) with the export contract: [B, F, T] mel -> [B, T', D]."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.pre_encode = _Subsampling(spec)
        self.layers = nn.ModuleList(_ConformerLayer(spec) for _ in range(spec.n_layers))

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.pre_encode(mel.transpose(1, 2), mel_length.to(torch.int64))
        steps = x.shape[1]
        valid = _time_mask(lengths, steps)
        att_mask = ~(valid[:, :, None] & valid[:, None, :])
        pad_mask = ~valid
        pos_emb = relative_positions(steps, self.spec.d_model, x.device).to(x.dtype)
        for layer in self.layers:
            x = layer(x, att_mask, pos_emb, pad_mask)
        return x, lengths.to(torch.int32)


class AudioAdapter(nn.Module):
    """Identity modality adapter, then perception.proj to the LLM width."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, encoded: torch.Tensor, encoded_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(encoded), encoded_length.to(torch.int32)


def _load(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Strict but for BatchNorm's step counters (unused at inference, optional in checkpoints)."""
    weights = {k: v.float() for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    result = module.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{type(module).__name__}: missing {missing}, unexpected {result.unexpected_keys}")


def encoder_from_checkpoint(checkpoint: Checkpoint) -> FastConformerEncoder:
    encoder = FastConformerEncoder(checkpoint.spec.encoder)
    _load(encoder, checkpoint.load_prefix(ENCODER))
    return encoder.eval()


def adapter_from_checkpoint(checkpoint: Checkpoint) -> AudioAdapter:
    adapter = AudioAdapter(checkpoint.spec.adapter_dim, checkpoint.spec.llm.hidden_size)
    _load(adapter, {"proj." + k: v for k, v in checkpoint.load_prefix(PROJ).items()})
    return adapter.eval()


def save_torch_artifacts(checkpoint: Checkpoint, out_dir: Path) -> tuple[Path, Path]:
    """encoder.torch.safetensors and adapter.torch.safetensors: each module's tensors in the
    checkpoint's dtype, with what builds the module in the file's metadata."""
    from safetensors.torch import save_file

    spec = checkpoint.spec
    encoder_tensors = {
        k: v.contiguous() for k, v in checkpoint.load_prefix(ENCODER).items() if not k.endswith("num_batches_tracked")
    }
    encoder_meta = {"kind": "encoder", **spec.encoder.__dict__}
    adapter_tensors = {"proj." + k: v.contiguous() for k, v in checkpoint.load_prefix(PROJ).items()}
    adapter_meta = {"kind": "adapter", "d_in": spec.adapter_dim, "d_out": spec.llm.hidden_size}
    paths = (Path(out_dir) / ENCODER_FILE, Path(out_dir) / ADAPTER_FILE)
    for path, tensors, meta in zip(paths, (encoder_tensors, adapter_tensors), (encoder_meta, adapter_meta)):
        save_file(tensors, str(path), metadata={_SPEC_KEY: json.dumps(meta)})
        path.chmod(0o644)  # safetensors writes owner-only files; servers may run as another user
    return paths


def load_torch_module(path: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The encoder or adapter saved by save_torch_artifacts, on `device` in `dtype`, in eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[_SPEC_KEY])
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    kind = meta.pop("kind")
    module: nn.Module
    if kind == "encoder":
        module = FastConformerEncoder(EncoderSpec(**meta))
    elif kind == "adapter":
        module = AudioAdapter(int(meta["d_in"]), int(meta["d_out"]))
    else:
        raise ValueError(f"{path}: unknown module kind {kind!r}")
    _load(module, tensors)
    return module.to(device=device, dtype=dtype).eval()
