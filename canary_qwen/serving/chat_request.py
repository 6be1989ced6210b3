"""LLM-mode request: chat messages -> Qwen3 chat-template ids for the base LLM (pure: no Triton)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from canary_qwen.prompt import ChatTokenizer, chat_prompt_ids, parse_messages


class PromptTooLongError(ValueError):
    """The chat prompt does not fit the LLM's context (OpenAI's code for it)."""

    code = "context_length_exceeded"


@dataclass(frozen=True)
class ChatSpec:
    end_id: int
    pad_id: int
    max_new_tokens_limit: int
    max_prompt_tokens: int


def build_chat_request(
    tokenizer: ChatTokenizer,
    spec: ChatSpec,
    messages: np.ndarray,
    max_new_tokens: np.ndarray,
    enable_thinking: np.ndarray,
) -> dict[str, np.ndarray]:
    """MESSAGES [1, 1] bytes (JSON), MAX_NEW_TOKENS [1, 1], ENABLE_THINKING [1, 1] -> llm inputs."""
    if messages.size != 1:
        raise ValueError("send one MESSAGES element per request")
    payload = messages.reshape(-1)[0]
    budget = int(np.asarray(max_new_tokens).reshape(-1)[0])
    if not 1 <= budget <= spec.max_new_tokens_limit:
        raise ValueError(f"MAX_NEW_TOKENS must be between 1 and {spec.max_new_tokens_limit}, got {budget}")
    try:
        parsed = parse_messages(payload)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"MESSAGES is not a valid list of text messages: {error}") from None
    ids = chat_prompt_ids(tokenizer, parsed, bool(np.asarray(enable_thinking).reshape(-1)[0]))
    if len(ids) > spec.max_prompt_tokens:
        raise PromptTooLongError(f"the prompt is {len(ids)} tokens; the maximum is {spec.max_prompt_tokens}")
    column = lambda value: np.array([[value]], dtype=np.int32)  # noqa: E731
    return {
        "input_ids": np.array([ids], dtype=np.int32),
        "input_lengths": column(len(ids)),
        "request_output_len": column(budget),
        "end_id": column(spec.end_id),
        "pad_id": column(spec.pad_id),
    }
