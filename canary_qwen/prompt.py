"""Prompt token ids for both modes, and the prompt-table splice of audio embeddings.

ASR mode is Canary-Qwen's training prompt, NeMo's `qwen` format (no system turn, no BOS):
    <|im_start|>user\\nTranscribe the following: <|audioplaceholder|><|im_end|>\\n<|im_start|>assistant\\n
15 tokens; the placeholder (index 9) is replaced by the clip's T_enc audio embeddings. For the
prompt-table contract (TensorRT-LLM style) it becomes the fake ids vocab_size + 0 .. T_enc-1.

LLM mode is Qwen3's chat template over text messages, optionally with thinking turned off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter

from canary_qwen.tokenizer import AUDIO_PLACEHOLDER, AUDIO_PLACEHOLDER_ID

ASR_INSTRUCTION = "Transcribe the following: "
ASR_PROMPT_LENGTH = 15
ASR_PLACEHOLDER_INDEX = 9


class ChatTokenizer(Protocol):
    """The part of a transformers tokenizer used here."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> object: ...

    def __call__(self, text: str, **kwargs: object) -> object: ...


class ChatMessage(BaseModel):
    """One text chat message (the `MESSAGES` tensor holds a JSON list of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


_MESSAGES = TypeAdapter(list[ChatMessage])


def parse_messages(data: bytes | str) -> list[dict[str, str]]:
    """Validate a JSON list of {role, content} messages; raises ValueError when malformed or empty."""
    messages = _MESSAGES.validate_json(data)
    if not messages:
        raise ValueError("messages must not be empty")
    if messages[-1].role == "assistant":
        raise ValueError("the last message must not be the assistant's")
    return [m.model_dump() for m in messages]


def asr_messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{ASR_INSTRUCTION}{AUDIO_PLACEHOLDER}"}]


def qa_messages(question: str, transcript: str) -> list[dict[str, str]]:
    """LLM-mode question about a transcript: the instruction, a blank line, then the transcript."""
    return [{"role": "user", "content": f"{question}\n\n{transcript}"}]


def _encode(tokenizer: ChatTokenizer, text: str) -> list[int]:
    encoded = tokenizer(text, add_special_tokens=False)
    return [int(i) for i in encoded["input_ids"]]  # type: ignore[index]


def chat_prompt_ids(
    tokenizer: ChatTokenizer, messages: Sequence[dict[str, str]], enable_thinking: bool | None = None
) -> list[int]:
    """Qwen3 chat-template ids ending with the assistant header (`enable_thinking=False` appends an
    empty think block; True or None leaves the model free to think, as NeMo's `qwen` format does)."""
    kwargs: dict[str, object] = {"tokenize": False, "add_generation_prompt": True}
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    text = tokenizer.apply_chat_template(list(messages), **kwargs)
    return _encode(tokenizer, str(text))


def asr_prompt_ids(tokenizer: ChatTokenizer) -> list[int]:
    ids = chat_prompt_ids(tokenizer, asr_messages())
    if len(ids) != ASR_PROMPT_LENGTH or ids[ASR_PLACEHOLDER_INDEX] != AUDIO_PLACEHOLDER_ID:
        raise ValueError(f"tokenizer gives an unexpected ASR prompt: {ids}")
    return ids


def placeholder_index(prompt_ids: Sequence[int], placeholder_id: int = AUDIO_PLACEHOLDER_ID) -> int:
    positions = [i for i, token in enumerate(prompt_ids) if token == placeholder_id]
    if len(positions) != 1:
        raise ValueError(f"prompt must hold exactly one audio placeholder, found {len(positions)}")
    return positions[0]


def splice_fake_ids(
    prompt_ids: Sequence[int], num_embeddings: int, vocab_size: int, placeholder_id: int = AUDIO_PLACEHOLDER_ID
) -> list[int]:
    """Replace the placeholder by vocab_size + i, i = 0..num_embeddings-1 (rows of the prompt table)."""
    if num_embeddings < 1:
        raise ValueError("need at least one audio embedding")
    at = placeholder_index(prompt_ids, placeholder_id)
    fake = [vocab_size + i for i in range(num_embeddings)]
    return [int(t) for t in prompt_ids[:at]] + fake + [int(t) for t in prompt_ids[at + 1 :]]


def messages_json(messages: Sequence[dict[str, str]]) -> bytes:
    """The `MESSAGES` tensor payload for a list of messages."""
    return json.dumps(list(messages), ensure_ascii=False).encode("utf-8")
