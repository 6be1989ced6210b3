"""Prompt ids for ASR and LLM mode, and the prompt-table splice."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from canary_qwen.manifest import Manifest
from canary_qwen.prompt import (
    ASR_PLACEHOLDER_INDEX,
    asr_prompt_ids,
    chat_prompt_ids,
    messages_json,
    parse_messages,
    placeholder_index,
    qa_messages,
    splice_fake_ids,
)
from canary_qwen.tokenizer import AUDIO_PLACEHOLDER_ID, VOCAB_SIZE

ASR_PROMPT_IDS = [151644, 872, 198, 3167, 3114, 279, 2701, 25, 220, 151669, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def tokenizer(artifacts_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(artifacts_dir / "llm_base"))


def test_asr_prompt_is_the_15_tokens(tokenizer: PreTrainedTokenizerBase, artifacts_dir: Path) -> None:
    assert asr_prompt_ids(tokenizer) == ASR_PROMPT_IDS
    manifest = Manifest.load(artifacts_dir)
    assert manifest.asr_prompt_ids == ASR_PROMPT_IDS
    assert manifest.asr_placeholder_index == ASR_PLACEHOLDER_INDEX == 9
    assert ASR_PROMPT_IDS[9] == AUDIO_PLACEHOLDER_ID


def test_splice_puts_fake_ids_where_the_placeholder_was() -> None:
    ids = splice_fake_ids(ASR_PROMPT_IDS, num_embeddings=4, vocab_size=VOCAB_SIZE)
    assert ids == ASR_PROMPT_IDS[:9] + [151936, 151937, 151938, 151939] + ASR_PROMPT_IDS[10:]
    assert len(splice_fake_ids(ASR_PROMPT_IDS, 500, VOCAB_SIZE)) == 14 + 500


@pytest.mark.parametrize(
    ("ids", "count"), [([1, 2, 3], 0), ([AUDIO_PLACEHOLDER_ID, 5, AUDIO_PLACEHOLDER_ID], 2)]
)
def test_splice_needs_exactly_one_placeholder(ids: list[int], count: int) -> None:
    with pytest.raises(ValueError, match=f"found {count}"):
        splice_fake_ids(ids, 3, VOCAB_SIZE)


def test_splice_needs_embeddings() -> None:
    with pytest.raises(ValueError):
        splice_fake_ids(ASR_PROMPT_IDS, 0, VOCAB_SIZE)
    assert placeholder_index(ASR_PROMPT_IDS) == 9


def test_chat_prompt_ids_follow_the_template(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = qa_messages("Summarize the following:", "hello world")
    assert messages == [{"role": "user", "content": "Summarize the following:\n\nhello world"}]
    thinking = chat_prompt_ids(tokenizer, messages)
    no_thinking = chat_prompt_ids(tokenizer, messages, enable_thinking=False)
    text = "<|im_start|>user\nSummarize the following:\n\nhello world<|im_end|>\n<|im_start|>assistant\n"
    assert thinking == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chat_prompt_ids(tokenizer, messages, enable_thinking=True) == thinking
    assert no_thinking[: len(thinking)] == thinking
    assert tokenizer.decode(no_thinking[len(thinking) :]) == "<think>\n\n</think>\n\n"


def test_parse_messages_round_trip() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "ü"}]
    assert parse_messages(messages_json(messages)) == messages


@pytest.mark.parametrize(
    "payload",
    [b"[]", b"not json", b'[{"role": "robot", "content": "x"}]', b'[{"role": "user"}]',
     b'[{"role": "user", "content": "x", "extra": 1}]', b'[{"role": "assistant", "content": "x"}]'],
)
def test_parse_messages_rejects_malformed(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_messages(payload)
