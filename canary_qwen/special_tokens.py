"""Canary-Qwen's token table: Qwen3's added tokens, the audio placeholder and their ids.

The one definition of every special id: the tokenizer (canary_qwen/tokenizer.py), the export's
manifest.json and the gateway (which drops the non-text ids from counted output) all import it.
No dependencies, so the gateway image, which has no `tokenizers`, can import it too.
"""

from __future__ import annotations

__all__ = [
    "ADDED_TOKENS",
    "AUDIO_PLACEHOLDER",
    "AUDIO_PLACEHOLDER_ID",
    "ENDOFTEXT",
    "ENDOFTEXT_ID",
    "IM_END",
    "IM_END_ID",
    "IM_START",
    "IM_START_ID",
    "NON_TEXT_IDS",
    "NUM_REGULAR_TOKENS",
    "QWEN3_ADDED_TOKENS",
    "VOCAB_SIZE",
]

VOCAB_SIZE = 151936
NUM_REGULAR_TOKENS = 151643

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_PLACEHOLDER = "<|audioplaceholder|>"

# Qwen3's added tokens in id order from 151643; the bool says whether Qwen3 marks it special
# (special tokens are dropped by `decode(skip_special_tokens=True)`; `<think>` is not).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
ADDED_TOKENS: tuple[tuple[str, bool], ...] = QWEN3_ADDED_TOKENS + ((AUDIO_PLACEHOLDER, True),)

ENDOFTEXT_ID = NUM_REGULAR_TOKENS  # 151643, also the pad id
IM_START_ID = NUM_REGULAR_TOKENS + 1  # 151644
IM_END_ID = NUM_REGULAR_TOKENS + 2  # 151645, end of turn / EOS
AUDIO_PLACEHOLDER_ID = NUM_REGULAR_TOKENS + len(QWEN3_ADDED_TOKENS)  # 151669
# Not part of a generation's text: pad and end of turn.
NON_TEXT_IDS = (ENDOFTEXT_ID, IM_END_ID)
