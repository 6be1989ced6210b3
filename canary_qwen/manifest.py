"""manifest.json: what `export build` produced and the facts serving needs to use it.

Serving code reads dimensions, ids, limits and file names from here instead of hard-coding them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canary_qwen.mel import MelSettings

MANIFEST_FILE = "manifest.json"
SERVED_MODEL_ID = "canary-qwen-2.5b"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceCheckpoint(_Frozen):
    weights_file: str = "model.safetensors"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dtype: str  # storage dtype of the LLM tensors in the checkpoint
    llm: str  # the SALM config's pretrained_llm (hub id, or "llm_backbone" for local configs)


class SpecialIds(_Frozen):
    pad: int  # <|endoftext|>
    im_start: int
    im_end: int  # end of turn: the end id of every generation
    audio_placeholder: int

    @property
    def end(self) -> int:
        return self.im_end


class EncoderInfo(_Frozen):
    d_model: int = Field(gt=0)
    layers: int = Field(gt=0)
    subsampling_factor: int = Field(gt=0)
    frames_per_second: float = Field(gt=0)


class LlmInfo(_Frozen):
    hidden_size: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    tie_word_embeddings: bool


class LoraInfo(_Frozen):
    r: int = Field(gt=0)
    alpha: float
    scale: float
    target_modules: list[str]


class ArtifactFiles(_Frozen):
    mel: str = "mel.safetensors"
    encoder: str = "encoder.onnx"
    adapter: str = "adapter.onnx"
    llm_asr: str = "llm_asr"
    llm_base: str = "llm_base"


class Manifest(_Frozen):
    schema_version: Literal[1] = 1
    model_id: str = SERVED_MODEL_ID
    source: SourceCheckpoint
    dtype: str  # dtype of the Qwen3 folders (the checkpoint's); the ONNX graphs are float32
    onnx_dtype: Literal["float32"] = "float32"
    sample_rate: int = Field(gt=0)
    mel: MelSettings
    mel_frames_per_second: float = Field(gt=0)
    encoder: EncoderInfo
    d_enc: int = Field(gt=0)
    d_llm: int = Field(gt=0)
    llm: LlmInfo
    vocab_size: int = Field(gt=0)
    special_ids: SpecialIds
    max_audio_seconds: float = Field(gt=0)
    # None: the model takes pauses in its stride (pieces of up to max_audio_seconds, cut at the
    # longest pause). A number: every pause at least this long ends a piece, in short audio too,
    # for a model that transcribes an utterance at a time (the demo model: export/demo.py).
    piece_pause_s: float | None = Field(default=None, gt=0)
    max_mel_frames: int = Field(gt=0)
    max_audio_embeddings: int = Field(gt=0)
    asr_prompt_ids: list[int]
    asr_placeholder_index: int = Field(ge=0)
    lora: LoraInfo | None
    files: ArtifactFiles = ArtifactFiles()

    @model_validator(mode="after")
    def _placeholder_in_prompt(self) -> Manifest:
        ids = self.asr_prompt_ids
        if not 0 <= self.asr_placeholder_index < len(ids) or ids[self.asr_placeholder_index] != (
            self.special_ids.audio_placeholder
        ):
            raise ValueError("asr_placeholder_index does not point at the audio placeholder")
        if self.vocab_size <= max(ids):
            raise ValueError("prompt ids must be below vocab_size (fake ids start at vocab_size)")
        return self

    @property
    def max_prompt_tokens(self) -> int:
        """ASR prompt length with the longest audio spliced in."""
        return len(self.asr_prompt_ids) - 1 + self.max_audio_embeddings

    def save(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """From a manifest.json path or the artifacts directory holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILE
        return cls.model_validate_json(path.read_text())
