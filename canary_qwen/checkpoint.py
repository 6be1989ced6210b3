"""Load and validate a Canary-Qwen checkpoint directory in the Hugging Face hub layout, without NeMo.

Layout (as `nvidia/canary-qwen-2.5b` on the hub, plus what NeMo 3.0 reads beside it):
    config.json                NeMo SALM config (not a transformers config)
    model.safetensors          every tensor, SALM state_dict names
    llm_backbone/config.json   the Qwen3 config (optional for the known hub LLMs, see KNOWN_LLM_CONFIGS)
    tokenizer.json, tokenizer_config.json   (optional: canary_qwen.tokenizer builds them offline)

The expected tensor set (names and shapes) is derived from the two configs; any missing,
unexpected or mis-shaped tensor is reported in one CheckpointError, never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary_qwen.mel import SAMPLE_RATE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LLM_CONFIG_FILE = "llm_backbone/config.json"

PERCEPTION = "perception."
ENCODER = "perception.encoder."
LLM_LAYERS = "llm.base_model.model.model.layers."
LLM_NORM = "llm.base_model.model.model.norm.weight"
LM_HEAD = "llm.base_model.model.lm_head.weight"
EMBED = "embed_tokens.weight"
MEL_FB = "perception.preprocessor.featurizer.fb"
MEL_WINDOW = "perception.preprocessor.featurizer.window"

# The hub checkpoint names its LLM by hub id and ships no LLM config; these are the published
# values of the ones we know, so the real checkpoint loads fully offline.
KNOWN_LLM_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-1.7B": {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 40960,
        "max_window_layers": 28,
        "num_attention_heads": 16,
        "num_hidden_layers": 28,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
}

SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32"}


class CheckpointError(ValueError):
    """The checkpoint directory does not match what its config describes."""


@dataclass(frozen=True)
class EncoderSpec:
    feat_in: int
    n_layers: int
    d_model: int
    n_heads: int
    ff_expansion_factor: int
    conv_kernel_size: int
    subsampling_factor: int
    subsampling_conv_channels: int

    @property
    def num_stride_convs(self) -> int:
        return self.subsampling_factor.bit_length() - 1

    def frames(self, mel_frames: int) -> int:
        """Encoder frames for a mel length: each stride-2 conv maps L -> floor((L - 1) / 2) + 1."""
        length = mel_frames
        for _ in range(self.num_stride_convs):
            length = (length + 2 - 3) // 2 + 1
        return length


@dataclass(frozen=True)
class LlmSpec:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tie_word_embeddings: bool


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    targets: tuple[str, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class CheckpointSpec:
    salm_config: dict[str, Any]
    llm_config: dict[str, Any]
    encoder: EncoderSpec
    llm: LlmSpec
    lora: LoraSpec | None
    adapter_dim: int  # modality adapter output (the projection's input)
    mel_features: int
    n_fft: int

    @property
    def preprocessor_config(self) -> dict[str, Any]:
        return dict(self.salm_config["perception"]["preprocessor"])


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def _require(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise CheckpointError(f"{where} has no '{key}'")
    return cfg[key]


def _encoder_spec(enc: dict[str, Any]) -> EncoderSpec:
    where = "config.json perception.encoder"
    target = str(enc.get("_target_", ""))
    if not target.endswith("ConformerEncoder"):
        raise CheckpointError(f"{where}: unsupported encoder {target!r} (expected a ConformerEncoder)")
    unsupported = {
        "subsampling": ("dw_striding", enc.get("subsampling")),
        "self_attention_model": ("rel_pos", enc.get("self_attention_model", "rel_pos")),
        "conv_norm_type": ("batch_norm", enc.get("conv_norm_type", "batch_norm")),
        "untie_biases": (True, enc.get("untie_biases", True)),
    }
    for key, (want, got) in unsupported.items():
        if got != want:
            raise CheckpointError(f"{where}: {key}={got!r} is not supported (Canary uses {want!r})")
    factor = int(_require(enc, "subsampling_factor", where))
    if factor < 2 or factor & (factor - 1):
        raise CheckpointError(f"{where}: subsampling_factor must be a power of two, got {factor}")
    d_model = int(_require(enc, "d_model", where))
    channels = int(enc.get("subsampling_conv_channels", -1))
    return EncoderSpec(
        feat_in=int(_require(enc, "feat_in", where)),
        n_layers=int(_require(enc, "n_layers", where)),
        d_model=d_model,
        n_heads=int(_require(enc, "n_heads", where)),
        ff_expansion_factor=int(enc.get("ff_expansion_factor", 4)),
        conv_kernel_size=int(enc.get("conv_kernel_size", 31)),
        subsampling_factor=factor,
        subsampling_conv_channels=d_model if channels == -1 else channels,
    )


def _llm_spec(cfg: dict[str, Any]) -> LlmSpec:
    where = "LLM config"
    if cfg.get("model_type") != "qwen3":
        raise CheckpointError(f"{where}: model_type {cfg.get('model_type')!r} is not supported (expected 'qwen3')")
    hidden = int(_require(cfg, "hidden_size", where))
    heads = int(_require(cfg, "num_attention_heads", where))
    return LlmSpec(
        vocab_size=int(_require(cfg, "vocab_size", where)),
        hidden_size=hidden,
        num_layers=int(_require(cfg, "num_hidden_layers", where)),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate_size=int(_require(cfg, "intermediate_size", where)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
    )


def _lora_spec(cfg: dict[str, Any] | None) -> LoraSpec | None:
    if not cfg:
        return None
    targets = tuple(cfg.get("target_modules") or ("q_proj", "v_proj"))
    unknown = sorted(set(targets) - {"q_proj", "k_proj", "v_proj", "o_proj"})
    if unknown:
        raise CheckpointError(f"config.json lora: target modules {unknown} are not supported")
    return LoraSpec(r=int(cfg["r"]), alpha=float(cfg.get("lora_alpha", 8)), targets=targets)


def read_llm_config(directory: Path, salm_config: dict[str, Any]) -> dict[str, Any]:
    """The Qwen3 config: llm_backbone/config.json if present, else a known hub LLM's published config."""
    path = directory / LLM_CONFIG_FILE
    if path.is_file():
        return json.loads(path.read_text())
    name = str(salm_config.get("pretrained_llm", ""))
    if name in KNOWN_LLM_CONFIGS:
        return dict(KNOWN_LLM_CONFIGS[name])
    raise CheckpointError(
        f"{directory}: no {LLM_CONFIG_FILE} and pretrained_llm={name!r} is not a known LLM; "
        f"put that LLM's config.json at {path}"
    )


def read_spec(directory: Path) -> CheckpointSpec:
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}")
    salm = json.loads(config_path.read_text())
    perception = _require(salm, "perception", "config.json")
    encoder = _encoder_spec(_require(perception, "encoder", "config.json perception"))
    pre = _require(perception, "preprocessor", "config.json perception")
    adapter = _require(perception, "modality_adapter", "config.json perception")
    if not str(adapter.get("_target_", "")).endswith("IdentityConnector"):
        raise CheckpointError(f"config.json: modality adapter {adapter.get('_target_')!r} is not supported yet")
    llm_config = read_llm_config(directory, salm)
    llm = _llm_spec(llm_config)
    output_dim = int(perception.get("output_dim", llm.hidden_size))
    if output_dim != llm.hidden_size:
        raise CheckpointError(f"config.json perception.output_dim {output_dim} != LLM hidden_size {llm.hidden_size}")
    features = int(pre.get("features", 64))
    if features != encoder.feat_in:
        raise CheckpointError(f"config.json: preprocessor features {features} != encoder feat_in {encoder.feat_in}")
    return CheckpointSpec(
        salm_config=salm,
        llm_config=llm_config,
        encoder=encoder,
        llm=llm,
        lora=_lora_spec(salm.get("lora")),
        adapter_dim=int(adapter.get("d_model", encoder.d_model)),
        mel_features=features,
        n_fft=int(pre.get("n_fft", 512)),
    )


def _encoder_tensors(enc: EncoderSpec) -> dict[str, tuple[int, ...]]:
    d, ch, heads = enc.d_model, enc.subsampling_conv_channels, enc.n_heads
    out: dict[str, tuple[int, ...]] = {}
    pre = ENCODER + "pre_encode."
    # dw_striding: Conv2d(1, ch, 3, s2), then per extra stride a depthwise 3x3 + pointwise 1x1.
    out[pre + "conv.0.weight"], out[pre + "conv.0.bias"] = (ch, 1, 3, 3), (ch,)
    idx = 2
    for _ in range(enc.num_stride_convs - 1):
        out[f"{pre}conv.{idx}.weight"], out[f"{pre}conv.{idx}.bias"] = (ch, 1, 3, 3), (ch,)
        out[f"{pre}conv.{idx + 1}.weight"], out[f"{pre}conv.{idx + 1}.bias"] = (ch, ch, 1, 1), (ch,)
        idx += 3
    freq = enc.feat_in
    for _ in range(enc.num_stride_convs):
        freq = (freq + 2 - 3) // 2 + 1
    out[pre + "out.weight"], out[pre + "out.bias"] = (d, ch * freq), (d,)
    ff = d * enc.ff_expansion_factor
    for i in range(enc.n_layers):
        p = f"{ENCODER}layers.{i}."
        for norm in ("norm_feed_forward1", "norm_conv", "norm_self_att", "norm_feed_forward2", "norm_out"):
            out[p + norm + ".weight"], out[p + norm + ".bias"] = (d,), (d,)
        for ffn in ("feed_forward1", "feed_forward2"):
            out[p + ffn + ".linear1.weight"], out[p + ffn + ".linear1.bias"] = (ff, d), (ff,)
            out[p + ffn + ".linear2.weight"], out[p + ffn + ".linear2.bias"] = (d, ff), (d,)
        out[p + "conv.pointwise_conv1.weight"], out[p + "conv.pointwise_conv1.bias"] = (2 * d, d, 1), (2 * d,)
        out[p + "conv.depthwise_conv.weight"] = (d, 1, enc.conv_kernel_size)
        out[p + "conv.depthwise_conv.bias"] = (d,)
        for bn in ("weight", "bias", "running_mean", "running_var"):
            out[p + "conv.batch_norm." + bn] = (d,)
        out[p + "conv.pointwise_conv2.weight"], out[p + "conv.pointwise_conv2.bias"] = (d, d, 1), (d,)
        out[p + "self_attn.pos_bias_u"] = out[p + "self_attn.pos_bias_v"] = (heads, d // heads)
        for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
            out[p + f"self_attn.{lin}.weight"], out[p + f"self_attn.{lin}.bias"] = (d, d), (d,)
        out[p + "self_attn.linear_pos.weight"] = (d, d)
    return out


def _llm_tensors(llm: LlmSpec, lora: LoraSpec | None) -> dict[str, tuple[int, ...]]:
    h, hd = llm.hidden_size, llm.head_dim
    out_dims = {
        "q_proj": (llm.num_heads * hd, h),
        "k_proj": (llm.num_kv_heads * hd, h),
        "v_proj": (llm.num_kv_heads * hd, h),
        "o_proj": (h, llm.num_heads * hd),
    }
    out: dict[str, tuple[int, ...]] = {EMBED: (llm.vocab_size, h), LLM_NORM: (h,)}
    if not llm.tie_word_embeddings:
        out[LM_HEAD] = (llm.vocab_size, h)
    targets = set(lora.targets) if lora else set()
    for i in range(llm.num_layers):
        p = f"{LLM_LAYERS}{i}."
        for proj, (rows, cols) in out_dims.items():
            if proj in targets:
                assert lora is not None
                out[f"{p}self_attn.{proj}.base_layer.weight"] = (rows, cols)
                out[f"{p}self_attn.{proj}.lora_A.default.weight"] = (lora.r, cols)
                out[f"{p}self_attn.{proj}.lora_B.default.weight"] = (rows, lora.r)
            else:
                out[f"{p}self_attn.{proj}.weight"] = (rows, cols)
        out[p + "self_attn.q_norm.weight"] = out[p + "self_attn.k_norm.weight"] = (hd,)
        out[p + "mlp.gate_proj.weight"] = out[p + "mlp.up_proj.weight"] = (llm.intermediate_size, h)
        out[p + "mlp.down_proj.weight"] = (h, llm.intermediate_size)
        out[p + "input_layernorm.weight"] = out[p + "post_attention_layernorm.weight"] = (h,)
    return out


def expected_tensors(spec: CheckpointSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor the checkpoint must hold, with its shape."""
    out = {
        MEL_FB: (1, spec.mel_features, spec.n_fft // 2 + 1),
        MEL_WINDOW: (int(round(float(spec.preprocessor_config.get("window_size", 0.02)) * _sample_rate(spec))),),
        "perception.proj.weight": (spec.llm.hidden_size, spec.adapter_dim),
        "perception.proj.bias": (spec.llm.hidden_size,),
    }
    out.update(_encoder_tensors(spec.encoder))
    out.update(_llm_tensors(spec.llm, spec.lora))
    return out


def optional_tensors(spec: CheckpointSpec) -> dict[str, tuple[int, ...]]:
    """Tensors that may be present or absent: BatchNorm's step counters (unused at inference) and
    the tied lm_head alias."""
    out: dict[str, tuple[int, ...]] = {
        f"{ENCODER}layers.{i}.conv.batch_norm.num_batches_tracked": () for i in range(spec.encoder.n_layers)
    }
    if spec.llm.tie_word_embeddings:
        out[LM_HEAD] = (spec.llm.vocab_size, spec.llm.hidden_size)
    return out


def _sample_rate(spec: CheckpointSpec) -> int:
    return int(spec.preprocessor_config.get("sample_rate", SAMPLE_RATE))


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes and shapes from a safetensors file's JSON header (no tensor data read)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {
        name: TensorInfo(dtype=SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"]), shape=tuple(info["shape"]))
        for name, info in header.items()
    }


def check_tensors(
    found: dict[str, TensorInfo], expected: dict[str, tuple[int, ...]], optional: dict[str, tuple[int, ...]]
) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected) - set(optional))
    wanted = {**optional, **expected}
    misshaped = sorted(
        f"{name}: {list(found[name].shape)} != expected {list(shape)}"
        for name, shape in wanted.items()
        if name in found and tuple(found[name].shape) != tuple(shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: " + ", ".join(missing))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected))
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped: " + "; ".join(misshaped))
    if problems:
        raise CheckpointError("checkpoint tensors do not match its config: " + " | ".join(problems))


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint directory."""

    directory: Path
    spec: CheckpointSpec
    tensors: dict[str, TensorInfo]

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS_FILE

    @property
    def dtype(self) -> str:
        """The LLM's storage dtype (the embedding table's)."""
        return self.tensors[EMBED].dtype

    def load(self, names: list[str] | None = None) -> dict[str, Any]:
        """Tensors by name as torch tensors (all when names is None)."""
        from safetensors import safe_open

        with safe_open(str(self.weights_path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in (names if names is not None else list(self.tensors))}

    def load_prefix(self, prefix: str, strip: bool = True) -> dict[str, Any]:
        names = [n for n in self.tensors if n.startswith(prefix)]
        loaded = self.load(names)
        return {(n[len(prefix) :] if strip else n): t for n, t in loaded.items()}

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.weights_path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        return digest.hexdigest()


def load_checkpoint(directory: Path) -> Checkpoint:
    """Read and validate a hub-layout checkpoint directory; raises CheckpointError on any mismatch."""
    directory = Path(directory)
    spec = read_spec(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    found = read_safetensors_header(weights)
    check_tensors(found, expected_tensors(spec), optional_tensors(spec))
    return Checkpoint(directory=directory, spec=spec, tensors=found)
