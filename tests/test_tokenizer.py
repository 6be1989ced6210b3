"""The offline-built Qwen3 tokenizer: Qwen3's ids and test vectors, standard HF files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from canary_qwen.tokenizer import (
    ADDED_TOKENS,
    AUDIO_PLACEHOLDER,
    AUDIO_PLACEHOLDER_ID,
    ENDOFTEXT_ID,
    IM_END_ID,
    IM_START_ID,
    NUM_REGULAR_TOKENS,
    save_tokenizer,
)

ASR_PROMPT = "<|im_start|>user\nTranscribe the following: <|audioplaceholder|><|im_end|>\n<|im_start|>assistant\n"
ASR_PROMPT_IDS = [151644, 872, 198, 3167, 3114, 279, 2701, 25, 220, 151669, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def test_writes_standard_files(tokenizer_dir: Path) -> None:
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>" and config["pad_token"] == "<|endoftext|>"
    assert "enable_thinking" in config["chat_template"]
    assert (tokenizer_dir / "tokenizer.json").is_file()


def test_asr_prompt_vector(tokenizer: PreTrainedTokenizerBase) -> None:
    assert tokenizer(ASR_PROMPT, add_special_tokens=False)["input_ids"] == ASR_PROMPT_IDS


def test_text_vector_splits_digits(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = tokenizer("Hello world, it's 2026!", add_special_tokens=False)["input_ids"]
    assert ids == [9707, 1879, 11, 432, 594, 220, 17, 15, 17, 21, 0]


def test_special_ids_are_qwen3s(tokenizer: PreTrainedTokenizerBase) -> None:
    assert len(tokenizer) == NUM_REGULAR_TOKENS + len(ADDED_TOKENS) == 151670
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        ENDOFTEXT_ID,
        IM_START_ID,
        IM_END_ID,
    ] == [151643, 151644, 151645]
    assert tokenizer.convert_tokens_to_ids(["<think>", "</think>", AUDIO_PLACEHOLDER]) == [151667, 151668, AUDIO_PLACEHOLDER_ID]
    assert tokenizer.eos_token_id == IM_END_ID and tokenizer.pad_token_id == ENDOFTEXT_ID


def test_decode_drops_special_tokens_but_keeps_think(tokenizer: PreTrainedTokenizerBase) -> None:
    text = "<think>\nhmm\n</think>\n\nNaïve café, 東京 🚀<|im_end|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>\nhmm\n</think>\n\nNaïve café, 東京 🚀"


@pytest.mark.parametrize(
    ("enable_thinking", "suffix"),
    [(None, "<|im_start|>assistant\n"), (True, "<|im_start|>assistant\n"), (False, "<|im_start|>assistant\n<think>\n\n</think>\n\n")],
)
def test_chat_template_thinking_switch(tokenizer: PreTrainedTokenizerBase, enable_thinking: bool | None, suffix: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" + suffix


def test_chat_template_drops_reasoning_of_past_turns(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nr1\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
    )
