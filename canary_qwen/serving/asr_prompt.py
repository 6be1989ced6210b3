"""The ASR prompt in TensorRT-LLM's multimodal contract (pure: no Triton).

The placeholder token of the 15-token ASR prompt becomes fake ids vocab_size + i, one per audio
embedding; the embeddings themselves travel as the request's prompt_embedding_table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from canary_qwen.prompt import splice_fake_ids


@dataclass(frozen=True)
class PromptSpec:
    prompt_ids: tuple[int, ...]
    placeholder_id: int
    vocab_size: int
    end_id: int
    pad_id: int
    max_new_tokens_limit: int
    table_dtype: np.dtype


def check_max_new_tokens(value: np.ndarray, limit: int) -> np.ndarray:
    """MAX_NEW_TOKENS [b, 1] -> [b] int32, each within 1..limit."""
    tokens = np.asarray(value).reshape(-1).astype(np.int64)
    if tokens.size == 0 or (tokens < 1).any() or (tokens > limit).any():
        raise ValueError(f"MAX_NEW_TOKENS must be between 1 and {limit}, got {tokens.tolist()}")
    return tokens.astype(np.int32)


def build_asr_request(
    spec: PromptSpec, embeds: np.ndarray, lengths: np.ndarray, max_new_tokens: np.ndarray
) -> dict[str, np.ndarray]:
    """AUDIO_EMBEDS [b, T, D], AUDIO_EMBEDS_LENGTH [b, 1], MAX_NEW_TOKENS [b, 1] -> the llm's inputs."""
    lengths = np.asarray(lengths).reshape(-1)
    if embeds.ndim != 3 or embeds.shape[0] != lengths.size or lengths.size == 0:
        raise ValueError(f"AUDIO_EMBEDS {list(embeds.shape)} does not match {lengths.size} lengths")
    if (lengths < 1).any() or (lengths > embeds.shape[1]).any():
        raise ValueError(f"AUDIO_EMBEDS_LENGTH {lengths.tolist()} outside 1..{embeds.shape[1]}")
    budget = check_max_new_tokens(max_new_tokens, spec.max_new_tokens_limit)
    if budget.size == 1 and lengths.size > 1:
        budget = np.repeat(budget, lengths.size)
    if budget.size != lengths.size:
        raise ValueError("MAX_NEW_TOKENS must have one value per audio")
    rows = [
        splice_fake_ids(spec.prompt_ids, int(n), spec.vocab_size, spec.placeholder_id) for n in lengths
    ]
    width = max(len(r) for r in rows)
    input_ids = np.full((len(rows), width), spec.pad_id, dtype=np.int32)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
    table = np.zeros((lengths.size, int(lengths.max()), embeds.shape[2]), dtype=spec.table_dtype)
    for i, n in enumerate(lengths):
        table[i, : int(n)] = embeds[i, : int(n)]
    column = lambda values: np.asarray(values, dtype=np.int32).reshape(-1, 1)  # noqa: E731
    return {
        "input_ids": input_ids,
        "input_lengths": column([len(r) for r in rows]),
        "request_output_len": column(budget),
        "end_id": column([spec.end_id] * len(rows)),
        "pad_id": column([spec.pad_id] * len(rows)),
        "prompt_embedding_table": table,
        "prompt_vocab_size": column(lengths),
        "streaming": np.ones((len(rows), 1), dtype=np.bool_),
    }
