"""LLM mode (LoRA off) while stage asr trains the base: replayed text-stage sequences, and a
score of how well the base still reads English.

Stage asr trains the base's layers for transcription (`asr_base_lr_scale`), which wore LLM mode
down (held-out sentences after "Repeat the text.", teacher-forced cross-entropy 4.79 with the
base frozen, 5.11 after 16,000 steps at 0.3; 2026-12-06). `Replay` gives stage asr batches of the
text stage's LLM-mode sequences to learn with LoRA off, beside transcription with it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from canary_qwen.tokenizer import IM_END_ID
from export.train.trainer import REPEAT_QUESTIONS, ChatExamples, teacher_forced

REPLAY_STREAM = 7  # the replay's draws: np.random.default_rng([seed, REPLAY_STREAM, step])


class Replay:
    """Batches of LLM-mode sequences: a corpus sentence after a repeat question, or after a free
    prompt, half each, as the text stage draws them."""

    def __init__(self, examples: ChatExamples, corpus: Sequence[str], seed: int, size: int) -> None:
        self.examples, self.corpus, self.seed, self.size = examples, corpus, seed, size

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [size, width] (-1 padding), and which positions are scored: those whose
        next token is the answer's (its closing IM_END included); the prompt is not scored, so
        every target is a corpus token."""
        rng = np.random.default_rng([self.seed, REPLAY_STREAM, step])
        drawn = []
        for i, j in rng.integers(len(self.corpus), size=(self.size, 2)):
            drawn.append(self.examples.llm_mode(self.corpus[int(i)], self.corpus[int(j)], rng, repeat=bool(rng.random() < 0.5)))
        width = max(len(seq) for seq, _ in drawn)
        ids = torch.full((self.size, width), -1, dtype=torch.long)
        scored = torch.zeros(self.size, width, dtype=torch.bool)
        for k, (seq, answer) in enumerate(drawn):
            ids[k, : len(seq)] = torch.tensor(seq)
            scored[k, answer - 1 : len(seq) - 1] = True
        return ids, scored


@torch.no_grad()
def repeat_score(model: Any, examples: ChatExamples, sentences: Sequence[str]) -> dict[str, float]:
    """LoRA off: each sentence after "Repeat the text.", its repeat teacher-forced over the whole
    vocabulary; cross-entropy and accuracy per answer token (closing IM_END included)."""
    was_training = model.training
    model.eval()
    table = model.embed_tokens.weight.detach()
    core = model.llm.base_model.model.model
    head, tail = examples.templates[(REPEAT_QUESTIONS[0], None)]
    ce = 0.0
    right = total = 0
    with model.llm.disable_adapter():
        for sentence in sentences:
            ids = examples.encode(sentence)
            seq = torch.tensor(head + ids + tail + ids + [IM_END_ID])
            target = seq[-(len(ids) + 1) :]
            sentence_ce, sentence_right = teacher_forced(core, table[seq], len(seq) - len(target) - 1, target, table)
            ce, right, total = ce + sentence_ce, right + sentence_right, total + len(target)
    model.train(was_training)
    return {"repeat_ce": round(ce / total, 4), "repeat_accuracy": round(right / total, 4)}
