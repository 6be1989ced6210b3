"""The NeMo oracle: a checkpoint directory loaded with NeMo's own SALM, used by tests as ground truth.

ASR mode: the 15-token Qwen chat prompt with the audio placeholder, LoRA on, greedy decoding.
LLM mode (`answer`): LoRA off (`llm.disable_adapter()`), the question and transcript as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from canary_qwen.prompt import asr_messages, qa_messages
from canary_qwen.tokenizer import IM_END_ID


def _until_end(ids: Sequence[int], end_id: int = IM_END_ID) -> list[int]:
    """Generated ids up to (not including) the first end-of-turn; HF pads finished rows after it."""
    out: list[int] = []
    for token in ids:
        if int(token) == end_id:
            break
        out.append(int(token))
    return out


class Reference:
    """NeMo `SALM.from_pretrained(dir)` in eval mode on CPU, float32."""

    def __init__(self, checkpoint_dir: Path) -> None:
        from nemo.collections.speechlm2.models import SALM  # heavy; tests only

        self.model = SALM.from_pretrained(str(checkpoint_dir)).eval()
        self.tokenizer = self.model.tokenizer

    def decode(self, ids: Sequence[int]) -> str:
        return self.model.tokenizer.ids_to_text(list(ids))

    @staticmethod
    def _batch_audio(audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(a) for a in audios], dtype=torch.long)
        batch = torch.zeros(len(audios), int(lengths.max()), dtype=torch.float32)
        for i, audio in enumerate(audios):
            batch[i, : len(audio)] = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        return batch, lengths

    @torch.no_grad()
    def transcribe_batch(
        self, audios: Sequence[np.ndarray], max_new_tokens: int = 128
    ) -> list[tuple[str, list[int]]]:
        """Greedy ASR for 16 kHz mono float32 waveforms: (text, generated ids without <|im_end|>)."""
        audio, lengths = self._batch_audio(audios)
        prompts = [asr_messages() for _ in audios]
        out = self.model.generate(
            prompts=prompts, audios=audio, audio_lens=lengths, max_new_tokens=max_new_tokens, do_sample=False
        )
        results = []
        for row in out.tolist():
            ids = _until_end(row)
            results.append((self.decode(ids), ids))
        return results

    def transcribe(self, audio: np.ndarray, max_new_tokens: int = 128) -> tuple[str, list[int]]:
        return self.transcribe_batch([audio], max_new_tokens)[0]

    @torch.no_grad()
    def answer_batch(
        self, items: Sequence[tuple[str, str]], max_new_tokens: int = 128
    ) -> list[tuple[str, list[int]]]:
        """LLM mode, LoRA off: (question, transcript) pairs -> (text, generated ids)."""
        prompts = [qa_messages(question, transcript) for question, transcript in items]
        width = self._prompt_width(prompts)
        with self.model.llm.disable_adapter():
            out = self.model.generate(prompts=prompts, max_new_tokens=max_new_tokens, do_sample=False)
        # Text-only generate returns the left-padded prompts, then the answers.
        results = []
        for row in out[:, width:].tolist():
            ids = _until_end(row)
            results.append((self.decode(ids), ids))
        return results

    def answer(self, question: str, transcript: str, max_new_tokens: int = 128) -> str:
        return self.answer_batch([(question, transcript)], max_new_tokens)[0][0]

    def _prompt_width(self, prompts: list[list[dict[str, str]]]) -> int:
        from nemo.collections.common.prompts import PromptFormatter

        formatter = PromptFormatter.resolve(self.model.cfg.prompt_format)(self.model.tokenizer)
        return max(len(formatter.encode_dialog(turns=[dict(t) for t in p])["input_ids"]) for p in prompts)

    # Teacher-forced logits, for parity tests of the exported folders.

    @torch.no_grad()
    def asr_embeddings(self, audio: np.ndarray) -> torch.Tensor:
        """Projected audio embeddings [T_enc, D_llm] of one waveform (NeMo preprocessor + perception)."""
        batch, lengths = self._batch_audio([audio])
        embeds, embed_lens = self.model.perception(input_signal=batch, input_signal_length=lengths)
        return embeds[0, : int(embed_lens[0])]

    @torch.no_grad()
    def asr_logits(self, audio: np.ndarray, prompt_ids: Sequence[int], continuation: Sequence[int]) -> torch.Tensor:
        """Logits [len(prompt with audio) + len(continuation), vocab] with LoRA on."""
        return self._logits(prompt_ids, continuation, self.asr_embeddings(audio))

    @torch.no_grad()
    def base_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """Logits [len(ids), vocab] of the LLM with LoRA off."""
        with self.model.llm.disable_adapter():
            return self._logits(ids, [], None)

    def _logits(self, prompt_ids: Sequence[int], continuation: Sequence[int], audio: torch.Tensor | None) -> torch.Tensor:
        ids = torch.tensor(list(prompt_ids) + list(continuation), dtype=torch.long)
        placeholder = self.model.audio_locator_tag_id
        text = self.model.embed_tokens(torch.where(ids == placeholder, 0, ids))
        if audio is not None:
            (pos,) = (ids == placeholder).nonzero(as_tuple=True)
            p = int(pos[0])
            text = torch.cat([text[:p], audio, text[p + 1 :]])
        out = self.model(text.unsqueeze(0), attention_mask=torch.ones(1, text.shape[0], dtype=torch.bool))
        return out["logits"][0]
