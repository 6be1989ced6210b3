"""`python -m export build --checkpoint DIR --out DIR`: checkpoint -> serving artifacts.

Writes (docs/design.md, "Artifacts"): mel.safetensors, encoder.onnx, adapter.onnx, llm_asr/,
llm_base/ and, last, manifest.json (its presence marks a finished build). The exported graphs
are checked against the NeMo modules they came from before the manifest is written.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file

from canary_qwen.checkpoint import MEL_FB, MEL_WINDOW, Checkpoint, load_checkpoint
from canary_qwen.manifest import (
    MANIFEST_FILE,
    SERVED_MODEL_ID,
    ArtifactFiles,
    EncoderInfo,
    LlmInfo,
    LoraInfo,
    Manifest,
    SourceCheckpoint,
    SpecialIds,
)
from canary_qwen.mel import SAMPLE_RATE, MelSettings
from canary_qwen.prompt import ASR_PLACEHOLDER_INDEX, asr_prompt_ids
from canary_qwen.tokenizer import (
    AUDIO_PLACEHOLDER,
    AUDIO_PLACEHOLDER_ID,
    ENDOFTEXT,
    ENDOFTEXT_ID,
    IM_END,
    IM_END_ID,
    IM_START,
    IM_START_ID,
    has_tokenizer,
    save_tokenizer,
)
from export.llm_folders import write_llm_folder
from export.onnx_export import ADAPTER_INPUTS, ENCODER_INPUTS, export_adapter, export_encoder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Default longest piece the served model takes (`--max-audio-seconds`); recorded in manifest.json,
# read from there by the preprocessor's check, the encoder's fixed shapes and the gateway.
MAX_AUDIO_SECONDS = 40.0
# Exported graphs must match the NeMo modules they came from this closely.
EXPORT_TOLERANCE = 1e-4


class BuildError(RuntimeError):
    pass


def load_tokenizer(checkpoint_dir: Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer files, else the offline-built Qwen3 tokenizer, always with the
    audio placeholder (NeMo adds it the same way); ids are checked against Qwen3's."""
    from transformers import AutoTokenizer

    if has_tokenizer(checkpoint_dir):
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            save_tokenizer(Path(tmp))
            tokenizer = AutoTokenizer.from_pretrained(tmp)
    if AUDIO_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_PLACEHOLDER]})
    want = {ENDOFTEXT: ENDOFTEXT_ID, IM_START: IM_START_ID, IM_END: IM_END_ID, AUDIO_PLACEHOLDER: AUDIO_PLACEHOLDER_ID}
    got = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in want}
    if got != want:
        raise BuildError(f"tokenizer special ids {got} differ from Qwen3's {want}")
    return tokenizer


def write_mel(checkpoint: Checkpoint, path: Path) -> None:
    tensors = checkpoint.load([MEL_FB, MEL_WINDOW])
    save_file({"fb": tensors[MEL_FB].float().contiguous(), "window": tensors[MEL_WINDOW].float().contiguous()}, str(path))
    path.chmod(0o644)  # safetensors writes owner-only files; servers may run as another user


def mel_settings(checkpoint: Checkpoint) -> MelSettings:
    pre = checkpoint.spec.preprocessor_config
    sample_rate = int(pre.get("sample_rate", SAMPLE_RATE))
    if pre.get("normalize", "per_feature") != "per_feature" or not pre.get("log", True):
        raise BuildError(f"unsupported preprocessor settings: {pre}")
    return MelSettings(
        sample_rate=sample_rate,
        features=int(pre["features"]),
        n_fft=int(pre["n_fft"]),
        hop_length=int(round(float(pre.get("window_stride", 0.01)) * sample_rate)),
        preemph=pre.get("preemph", 0.97),
        mag_power=float(pre.get("mag_power", 2.0)),
        log_zero_guard=float(pre.get("log_zero_guard_value", 2.0**-24)),
    )


def verify_onnx(encoder: torch.nn.Module, adapter: torch.nn.Module, artifacts: Path, features: int) -> None:
    """onnxruntime vs the NeMo modules on a padded two-item batch; raise BuildError past tolerance."""
    import onnxruntime as ort
    from nemo.core.classes.common import typecheck

    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([480, 173], dtype=torch.int32)
    mel = torch.randn(2, features, int(lengths.max()), generator=gen)
    mel[1, :, int(lengths[1]) :] = 0
    with torch.no_grad(), typecheck.disable_checks():
        encoded, encoded_len = encoder(mel, lengths)
        embeds, embeds_len = adapter(encoded, encoded_len)
    enc = ort.InferenceSession(str(artifacts / ArtifactFiles().encoder), providers=["CPUExecutionProvider"])
    ada = ort.InferenceSession(str(artifacts / ArtifactFiles().adapter), providers=["CPUExecutionProvider"])
    o_enc, o_enc_len = enc.run(None, dict(zip(ENCODER_INPUTS, (mel.numpy(), lengths.numpy()))))
    o_emb, o_emb_len = ada.run(None, dict(zip(ADAPTER_INPUTS, (o_enc, o_enc_len))))
    if not (np.array_equal(o_enc_len, encoded_len.numpy()) and np.array_equal(o_emb_len, embeds_len.numpy())):
        raise BuildError("exported lengths differ from NeMo's")
    for b, n in enumerate(encoded_len.tolist()):
        diff = max(
            float(np.abs(o_enc[b, :n] - encoded[b, :n].numpy()).max()),
            float(np.abs(o_emb[b, :n] - embeds[b, :n].numpy()).max()),
        )
        if diff > EXPORT_TOLERANCE:
            raise BuildError(f"ONNX output differs from NeMo by {diff:.2e} (> {EXPORT_TOLERANCE})")


def make_manifest(
    checkpoint: Checkpoint,
    prompt_ids: list[int],
    model_id: str,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
    piece_pause_s: float | None = None,
) -> Manifest:
    spec = checkpoint.spec
    mel = mel_settings(checkpoint)
    mel_fps = mel.sample_rate / mel.hop_length
    max_frames = int(round(max_audio_seconds * mel_fps))
    lora = spec.lora
    return Manifest(
        model_id=model_id,
        source=SourceCheckpoint(
            sha256=checkpoint.sha256(),
            dtype=checkpoint.dtype,
            llm=str(spec.salm_config.get("pretrained_llm", "")),
        ),
        dtype=checkpoint.dtype,
        sample_rate=mel.sample_rate,
        mel=mel,
        mel_frames_per_second=mel_fps,
        encoder=EncoderInfo(
            d_model=spec.encoder.d_model,
            layers=spec.encoder.n_layers,
            subsampling_factor=spec.encoder.subsampling_factor,
            frames_per_second=mel_fps / spec.encoder.subsampling_factor,
        ),
        d_enc=spec.encoder.d_model,
        d_llm=spec.llm.hidden_size,
        llm=LlmInfo(
            hidden_size=spec.llm.hidden_size,
            layers=spec.llm.num_layers,
            heads=spec.llm.num_heads,
            kv_heads=spec.llm.num_kv_heads,
            head_dim=spec.llm.head_dim,
            intermediate_size=spec.llm.intermediate_size,
            tie_word_embeddings=spec.llm.tie_word_embeddings,
        ),
        vocab_size=spec.llm.vocab_size,
        special_ids=SpecialIds(
            pad=ENDOFTEXT_ID, im_start=IM_START_ID, im_end=IM_END_ID, audio_placeholder=AUDIO_PLACEHOLDER_ID
        ),
        max_audio_seconds=max_audio_seconds,
        piece_pause_s=piece_pause_s,
        max_mel_frames=max_frames,
        max_audio_embeddings=spec.encoder.frames(max_frames),
        asr_prompt_ids=prompt_ids,
        asr_placeholder_index=ASR_PLACEHOLDER_INDEX,
        lora=LoraInfo(r=lora.r, alpha=lora.alpha, scale=lora.scale, target_modules=list(lora.targets))
        if lora
        else None,
    )


def build_artifacts(
    checkpoint_dir: Path,
    out: Path,
    model_id: str = SERVED_MODEL_ID,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
    piece_pause_s: float | None = None,
) -> Manifest:
    if not max_audio_seconds > 0:
        raise ValueError(f"max_audio_seconds must be positive, got {max_audio_seconds}")
    if piece_pause_s is not None and not piece_pause_s > 0:
        raise ValueError(f"piece_pause_s must be positive, got {piece_pause_s}")
    checkpoint = load_checkpoint(checkpoint_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # written last: marks a finished build
    files = ArtifactFiles()
    tokenizer = load_tokenizer(checkpoint.directory)
    prompt_ids = asr_prompt_ids(tokenizer)
    write_mel(checkpoint, out / files.mel)
    encoder = export_encoder(checkpoint, out / files.encoder)
    adapter = export_adapter(checkpoint, out / files.adapter)
    verify_onnx(encoder, adapter, out, checkpoint.spec.mel_features)
    for folder, fold in ((files.llm_asr, True), (files.llm_base, False)):
        shutil.rmtree(out / folder, ignore_errors=True)
        write_llm_folder(checkpoint, out / folder, fold_lora=fold)
        tokenizer.save_pretrained(str(out / folder))
    manifest = make_manifest(checkpoint, prompt_ids, model_id, max_audio_seconds, piece_pause_s)
    manifest.save(out)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory (hub layout)")
    parser.add_argument("--out", type=Path, required=True, help="artifacts directory to write")
    parser.add_argument("--model-id", default=SERVED_MODEL_ID, help="served model id recorded in the manifest")
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=MAX_AUDIO_SECONDS,
        help=f"longest audio piece the served model takes, seconds (default {MAX_AUDIO_SECONDS:g})",
    )
    parser.add_argument(
        "--piece-pause-s",
        type=float,
        default=None,
        help="end an audio piece at every pause at least this long, for a model that transcribes one "
        "utterance at a time (default: none, pieces of up to --max-audio-seconds cut at their longest pause)",
    )


def run(args: argparse.Namespace) -> int:
    manifest = build_artifacts(args.checkpoint, args.out, args.model_id, args.max_audio_seconds, args.piece_pause_s)
    print(f"artifacts written to {args.out} (checkpoint sha256 {manifest.source.sha256[:12]}...)")
    return 0
