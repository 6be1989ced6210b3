"""The exported pipeline (log-mel, onnxruntime encoder + adapter, the Qwen3 folders in transformers)
against NeMo's SALM on the tiny checkpoint. Tiny-model text is noise: only ids and logits are compared."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from canary_qwen.manifest import Manifest
from canary_qwen.mel import LogMel
from canary_qwen.prompt import chat_prompt_ids, qa_messages
from export.reference import Reference

LOGIT_TOLERANCE = 1e-3
MAX_NEW_TOKENS = 24


class ExportedPipeline:
    """What serving runs, without Triton: artifacts only, no NeMo."""

    def __init__(self, artifacts: Path) -> None:
        self.manifest = Manifest.load(artifacts)
        files = self.manifest.files
        self.logmel = LogMel.from_safetensors(artifacts / files.mel, self.manifest.mel)
        self.encoder = ort.InferenceSession(str(artifacts / files.encoder), providers=["CPUExecutionProvider"])
        self.adapter = ort.InferenceSession(str(artifacts / files.adapter), providers=["CPUExecutionProvider"])
        self.asr = AutoModelForCausalLM.from_pretrained(str(artifacts / files.llm_asr), dtype=torch.float32).eval()
        self.base = AutoModelForCausalLM.from_pretrained(str(artifacts / files.llm_base), dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(artifacts / files.llm_base))

    def audio_embeddings(self, audios: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One padded batch through log-mel, encoder and adapter; each item cut to its length."""
        mel, mel_len = self.logmel(audios)
        encoded, encoded_len = self.encoder.run(None, {"MEL": mel, "MEL_LENGTH": mel_len})
        embeds, embeds_len = self.adapter.run(None, {"ENCODED": encoded, "ENCODED_LENGTH": encoded_len})
        return [torch.from_numpy(embeds[b, :n].copy()) for b, n in enumerate(embeds_len.tolist())]

    def asr_inputs(self, audio_embeds: torch.Tensor, continuation: Sequence[int] = ()) -> torch.Tensor:
        """Prompt (+ continuation) embeddings with the audio spliced in at the placeholder."""
        ids = self.manifest.asr_prompt_ids + list(continuation)
        at = self.manifest.asr_placeholder_index
        table = self.asr.get_input_embeddings()
        with torch.no_grad():
            text = table(torch.tensor(ids))
        return torch.cat([text[:at], audio_embeds, text[at + 1 :]]).unsqueeze(0)

    def _greedy(self, model: torch.nn.Module, **inputs: torch.Tensor) -> list[int]:
        end = self.manifest.special_ids.end
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=end,
                pad_token_id=self.manifest.special_ids.pad,
            )
        new = out[0, inputs["input_ids"].shape[1] :] if "input_ids" in inputs else out[0]
        ids = new.tolist()
        return ids[: ids.index(end)] if end in ids else ids

    def transcribe_ids(self, audio_embeds: torch.Tensor) -> list[int]:
        embeds = self.asr_inputs(audio_embeds)
        return self._greedy(self.asr, inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long))

    def answer_ids(self, question: str, transcript: str) -> list[int]:
        ids = torch.tensor([chat_prompt_ids(self.tokenizer, qa_messages(question, transcript))])
        return self._greedy(self.base, input_ids=ids, attention_mask=torch.ones_like(ids))


@pytest.fixture(scope="module")
def pipeline(artifacts_dir: Path) -> ExportedPipeline:
    return ExportedPipeline(artifacts_dir)


@pytest.fixture(scope="module")
def speech(utterances) -> list[np.ndarray]:
    from tests.fixtures.audio.speech import read_audio

    return [read_audio(u.path)[0] for u in utterances]


def test_greedy_tokens_match_nemo_per_utterance(pipeline: ExportedPipeline, reference: Reference, speech) -> None:
    for audio in speech[:4]:
        (embeds,) = pipeline.audio_embeddings([audio])
        _, nemo_ids = reference.transcribe(audio, MAX_NEW_TOKENS)
        assert len(nemo_ids) > 0
        assert pipeline.transcribe_ids(embeds) == nemo_ids


def test_greedy_tokens_match_nemo_on_a_mixed_length_batch(
    pipeline: ExportedPipeline, reference: Reference, speech
) -> None:
    batch = [speech[5], speech[0], speech[3]]  # longest, shortest, middle: padding on both sides
    nemo = reference.transcribe_batch(batch, MAX_NEW_TOKENS)
    exported = [pipeline.transcribe_ids(e) for e in pipeline.audio_embeddings(batch)]
    assert exported == [ids for _, ids in nemo]
    assert len({tuple(ids) for ids in exported}) == len(batch)  # the audio matters


def test_teacher_forced_asr_logits_match_nemo(pipeline: ExportedPipeline, reference: Reference, speech) -> None:
    audio = speech[2]
    _, continuation = reference.transcribe(audio, MAX_NEW_TOKENS)
    (embeds,) = pipeline.audio_embeddings([audio])
    with torch.no_grad():
        ours = pipeline.asr(inputs_embeds=pipeline.asr_inputs(embeds, continuation)).logits[0]
    nemo = reference.asr_logits(audio, pipeline.manifest.asr_prompt_ids, continuation)
    assert ours.shape == nemo.shape
    assert float((ours - nemo).abs().max()) <= LOGIT_TOLERANCE
    assert float(nemo.std(dim=-1).min()) > 1.0  # the tiny model's logits are far from flat


def test_base_folder_matches_nemo_with_the_adapter_disabled(pipeline: ExportedPipeline, reference: Reference) -> None:
    ids = chat_prompt_ids(pipeline.tokenizer, qa_messages("Summarize the following:", "the cat sat on the mat"))
    with torch.no_grad():
        base = pipeline.base(input_ids=torch.tensor([ids])).logits[0]
        folded = pipeline.asr(input_ids=torch.tensor([ids])).logits[0]
    nemo = reference.base_logits(ids)
    assert float((base - nemo).abs().max()) <= LOGIT_TOLERANCE
    assert float((folded - nemo).abs().max()) > 1.0  # LoRA is folded into llm_asr only, and it matters


def test_llm_mode_answers_match_nemo(pipeline: ExportedPipeline, reference: Reference) -> None:
    items = [("Summarize the following:", "the cat sat on the mat"), ("What is the topic?", "speech recognition")]
    nemo = reference.answer_batch(items, MAX_NEW_TOKENS)
    assert [pipeline.answer_ids(q, t) for q, t in items] == [ids for _, ids in nemo]
