"""The pure modules behind the python models (canary_qwen/serving/), imported without Triton."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from canary_qwen.serving import asr_prompt, audio_batch, batch_fallback, chat_request, llm_request, ragged, token_bytes
from canary_qwen.tokenizer import AUDIO_PLACEHOLDER_ID, IM_END_ID, VOCAB_SIZE

# --- ragged batches (encoder / adapter) ---------------------------------------------------------


def test_pad_stack_pads_the_ragged_axis_and_rounds_to_a_multiple() -> None:
    items = [np.ones((2, 3), np.float32), np.ones((2, 5), np.float32)]
    stacked = ragged.pad_stack(items, axis=1)
    assert stacked.shape == (2, 2, 5)
    assert stacked[0, :, 3:].sum() == 0 and stacked[1].sum() == 10
    assert ragged.pad_stack(items, axis=1, multiple=4).shape == (2, 2, 8)
    with pytest.raises(ValueError, match="incompatible"):
        ragged.pad_stack([np.ones((2, 3)), np.ones((3, 3))], axis=1)


def _halve(data: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in 'encoder' on [B, C, T]: outputs [B, T//2, C] and lengths // 2; refuses NaN input."""
    if np.isnan(data).any():
        raise RuntimeError("poisoned batch")
    return data[:, :, ::2].transpose(0, 2, 1)[:, : data.shape[2] // 2].copy(), lengths // 2


def test_run_ragged_splits_results_per_request() -> None:
    rng = np.random.default_rng(0)
    mels = [rng.standard_normal((1, 4, t)).astype(np.float32) for t in (6, 10, 8)]
    requests = [ragged.request_items(m, np.array([[m.shape[2]]]), axis=1) for m in mels]
    results = ragged.run_ragged(requests, _halve, in_axis=1, out_axis=0)
    for mel, (out, lengths) in zip(mels, results):
        alone, alone_lengths = _halve(mel, np.array([mel.shape[2]]))
        assert lengths.shape == (1, 1) and lengths[0, 0] == alone_lengths[0]
        np.testing.assert_array_equal(out, alone[:, : alone_lengths[0]])


def test_run_ragged_isolates_bad_requests() -> None:
    good = np.ones((1, 4, 6), np.float32)
    poisoned = np.full((1, 4, 6), np.nan, np.float32)
    requests = [
        ragged.request_items(good, np.array([[6]]), axis=1),
        ValueError("rejected earlier"),
        ragged.request_items(poisoned, np.array([[6]]), axis=1),
        ragged.request_items(good, np.array([[4]]), axis=1),
    ]
    results = ragged.run_ragged(requests, _halve, in_axis=1, out_axis=0)
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], RuntimeError)
    assert results[0][1][0, 0] == 3 and results[3][1][0, 0] == 2


def test_fallback_runs_each_request_alone_only_when_the_batch_fails() -> None:
    calls: list[list[int]] = []

    def run(batch: list[int]) -> list[int]:
        calls.append(batch)
        if 0 in batch:
            raise ZeroDivisionError("poisoned")
        return [100 // n for n in batch]

    rejected = ValueError("rejected earlier")
    assert batch_fallback.run_with_fallback([5, rejected, 20], run) == [20, rejected, 5]
    assert calls == [[5, 20]]
    calls.clear()
    results = batch_fallback.run_with_fallback([5, 0, rejected], run)
    assert results[0] == 20 and isinstance(results[1], ZeroDivisionError) and results[2] is rejected
    assert calls == [[5, 0], [5], [0]]
    # A lone request that fails gets the batch's error without running twice.
    calls.clear()
    (lone,) = batch_fallback.run_with_fallback([0], run)
    assert isinstance(lone, ZeroDivisionError) and calls == [[0]]
    assert batch_fallback.run_with_fallback([rejected], run) == [rejected]


def test_request_items_checks_lengths() -> None:
    with pytest.raises(ValueError, match="outside"):
        ragged.request_items(np.ones((1, 4, 6)), np.array([[7]]), axis=1)
    with pytest.raises(ValueError, match="outside"):
        ragged.request_items(np.ones((1, 4, 6)), np.array([[0]]), axis=1)
    with pytest.raises(ValueError, match="lengths"):
        ragged.request_items(np.ones((2, 4, 6)), np.array([[6]]), axis=1)


# --- audio checks (preprocessor) ----------------------------------------------------------------

LIMITS = audio_batch.AudioLimits(sample_rate=16000, max_seconds=40.0, min_samples=160)


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros((1, 0), np.float32), "empty"),
        (np.zeros((1, 100), np.float32), "at least 160"),
        (np.zeros((1, 16000 * 40 + 1), np.float32), "maximum is 40 s"),
        (np.full((1, 1600), np.inf, np.float32), "NaN or infinite"),
        (np.zeros((1, 1600), np.float64), "float32"),
        (np.zeros(1600, np.float32), "batch, samples"),
    ],
)
def test_bad_audio_is_refused_with_a_reason(audio: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audio_batch.request_waveforms(audio, LIMITS)


def test_good_audio_passes() -> None:
    waves = audio_batch.request_waveforms(np.zeros((2, 16000 * 40), np.float32), LIMITS)
    assert [w.shape for w in waves] == [(640000,), (640000,)]


# --- ASR prompt (prompt_builder) ----------------------------------------------------------------

ASR_PROMPT = (151644, 872, 198, 3167, 3114, 279, 2701, 25, 220, AUDIO_PLACEHOLDER_ID, 151645, 198, 151644, 77091, 198)
SPEC = asr_prompt.PromptSpec(ASR_PROMPT, AUDIO_PLACEHOLDER_ID, VOCAB_SIZE, IM_END_ID, 151643, 512, np.dtype(np.float16))


def test_asr_request_splices_fake_ids_and_the_prompt_table() -> None:
    embeds = np.random.default_rng(1).standard_normal((1, 7, 8)).astype(np.float32)
    out = asr_prompt.build_asr_request(SPEC, embeds, np.array([[5]]), np.array([[32]]))
    ids = out["input_ids"][0].tolist()
    assert ids == list(ASR_PROMPT[:9]) + [VOCAB_SIZE + i for i in range(5)] + list(ASR_PROMPT[10:])
    assert out["input_lengths"].tolist() == [[19]] and out["prompt_vocab_size"].tolist() == [[5]]
    assert out["prompt_embedding_table"].dtype == np.float16 and out["prompt_embedding_table"].shape == (1, 5, 8)
    np.testing.assert_allclose(out["prompt_embedding_table"][0], embeds[0, :5], rtol=1e-3, atol=1e-3)
    assert out["request_output_len"].tolist() == [[32]] and out["end_id"].tolist() == [[IM_END_ID]]
    assert out["streaming"].tolist() == [[True]]
    assert all(v.dtype == np.int32 for k, v in out.items() if k not in ("prompt_embedding_table", "streaming"))


@pytest.mark.parametrize("budget, lengths", [(0, 5), (513, 5), (8, 0), (8, 8)])
def test_asr_request_refuses_bad_budgets_and_lengths(budget: int, lengths: int) -> None:
    with pytest.raises(ValueError):
        asr_prompt.build_asr_request(SPEC, np.zeros((1, 7, 8), np.float32), np.array([[lengths]]), np.array([[budget]]))


# --- chat prompt (chat_prompt_builder) ----------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(artifacts_dir: Path):  # -> transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(artifacts_dir / "llm_base"))


CHAT = chat_request.ChatSpec(end_id=IM_END_ID, pad_id=151643, max_new_tokens_limit=512, max_prompt_tokens=64)


def test_chat_request_uses_the_chat_template(tokenizer) -> None:
    messages = np.array([[b'[{"role": "user", "content": "Hi there"}]']], dtype=np.object_)
    thinking = chat_request.build_chat_request(tokenizer, CHAT, messages, np.array([[16]]), np.array([[True]]))
    plain = chat_request.build_chat_request(tokenizer, CHAT, messages, np.array([[16]]), np.array([[False]]))
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert tokenizer.decode(plain["input_ids"][0]) == expected
    assert expected.endswith("<think>\n\n</think>\n\n")  # thinking off: an empty think block
    assert thinking["input_lengths"][0, 0] < plain["input_lengths"][0, 0]
    assert plain["input_lengths"][0, 0] == plain["input_ids"].shape[1]
    assert plain["end_id"].tolist() == [[IM_END_ID]] and plain["request_output_len"].tolist() == [[16]]


@pytest.mark.parametrize(
    "payload, budget, message",
    [
        (b"not json", 16, "MESSAGES"),
        (b"[]", 16, "MESSAGES"),
        (b'[{"role": "wizard", "content": "x"}]', 16, "MESSAGES"),
        (b'[{"role": "user", "content": "x"}]', 0, "MAX_NEW_TOKENS"),
        (b'[{"role": "user", "content": "' + b"word " * 100 + b'"}]', 16, "maximum is 64"),
    ],
)
def test_chat_request_refuses_bad_input(tokenizer, payload: bytes, budget: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chat_request.build_chat_request(
            tokenizer, CHAT, np.array([[payload]], dtype=np.object_), np.array([[budget]]), np.array([[True]])
        )


def test_too_long_prompt_carries_openais_code(tokenizer) -> None:
    payload = b'[{"role": "user", "content": "' + b"word " * 100 + b'"}]'
    with pytest.raises(chat_request.PromptTooLongError) as caught:
        chat_request.build_chat_request(
            tokenizer, CHAT, np.array([[payload]], dtype=np.object_), np.array([[4]]), np.array([[False]])
        )
    assert caught.value.code == "context_length_exceeded"


def test_error_messages_tag_bad_input_with_a_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed errors reach the gateway as bare text: bad input must be told apart there."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", ModuleType("triton_python_backend_utils"))
    triton_io = importlib.import_module("canary_qwen.serving.triton_io")  # needs only the stub's name at import
    assert triton_io.error_message(ValueError("AUDIO is empty")) == "[invalid_argument] AUDIO is empty"
    assert triton_io.error_message(chat_request.PromptTooLongError("too long")) == "[context_length_exceeded] too long"
    assert triton_io.error_message(RuntimeError("boom")) == "boom"  # the model's fault: no tag


# --- detokenizer --------------------------------------------------------------------------------


def test_token_bytes_concatenate_to_the_utf8_text(tokenizer, artifacts_dir: Path) -> None:
    table = token_bytes.TokenBytes.from_tokenizer_json(artifacts_dir / "llm_base" / "tokenizer.json")
    text = "Grüße, 世界! Café 🎉 naïve — 2026"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert table.decode(ids) == text.encode("utf-8")
    # One token at a time (streaming): fragments may split a character, their join never does.
    fragments = [table.decode([i]) for i in ids]
    assert b"".join(fragments) == text.encode("utf-8")
    assert any(_not_utf8(f) for f in fragments), "the test text should split a character across tokens"
    think = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    thought = table.decode([IM_END_ID, think[0], *ids[:2], think[1], 151643])
    assert thought == b"<think>" + table.decode(ids[:2]) + b"</think>"
    assert table.decode([VOCAB_SIZE - 1]) == b""  # embedding padding rows have no text


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- llm tensors and responses ------------------------------------------------------------------


def test_parse_llm_inputs_follows_the_tensorrt_llm_contract() -> None:
    table = np.arange(4 * 3, dtype=np.float32).reshape(1, 4, 3)
    parsed = llm_request.parse_llm_inputs(
        {
            "input_ids": np.array([[5, VOCAB_SIZE, VOCAB_SIZE + 1, 6, 0]], np.int32),
            "input_lengths": np.array([[4]], np.int32),
            "request_output_len": np.array([[9]], np.int32),
            "end_id": np.array([[IM_END_ID]], np.int32),
            "prompt_embedding_table": table,
            "prompt_vocab_size": np.array([[2]], np.int32),
            "streaming": np.array([[True]]),
        }
    )
    assert parsed.input_ids == [5, VOCAB_SIZE, VOCAB_SIZE + 1, 6]
    assert parsed.max_new_tokens == 9 and parsed.end_id == IM_END_ID and parsed.streaming
    np.testing.assert_array_equal(parsed.prompt_table, table[0, :2])
    minimal = llm_request.parse_llm_inputs(
        {"input_ids": np.array([[1, 2]], np.int32), "request_output_len": np.array([[3]], np.int32)}
    )
    assert minimal.end_id is None and minimal.prompt_table is None and not minimal.streaming


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"input_ids": np.ones((2, 3), np.int32), "request_output_len": np.array([[1]])}, "one sequence"),
        ({"input_ids": np.ones((1, 3), np.int32)}, "request_output_len"),
        ({"input_ids": np.ones((1, 3), np.int32), "input_lengths": np.array([[4]]), "request_output_len": np.array([[1]])}, "input_lengths"),
        ({"input_ids": np.ones((1, 3), np.int32), "request_output_len": np.array([[1]]), "prompt_embedding_table": np.ones((1, 2, 3)), "prompt_vocab_size": np.array([[3]])}, "prompt_vocab_size"),
    ],
)  # fmt: skip
def test_parse_llm_inputs_refuses_malformed_requests(arrays: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        llm_request.parse_llm_inputs(arrays)


def test_output_arrays_shapes() -> None:
    out = llm_request.output_arrays([4, 5, 6])
    assert out["output_ids"].shape == (1, 1, 3) and out["output_ids"].dtype == np.int32
    assert out["sequence_length"].tolist() == [[3]]
    assert llm_request.output_arrays([])["output_ids"].shape == (1, 1, 0)


@pytest.mark.parametrize(
    "decoupled, streaming, expected",
    [
        (False, False, [([1, 2, 3], True)]),
        (False, True, [([1, 2, 3], True)]),  # a non-decoupled model cannot stream
        (True, False, [([1, 2, 3], False), (None, True)]),
        (True, True, [([1], False), ([2, 3], False), (None, True)]),
    ],
)
def test_response_plan(decoupled: bool, streaming: bool, expected: list) -> None:
    sent: list = []
    plan = llm_request.ResponsePlan(decoupled, streaming, lambda tokens, final: sent.append((tokens, final)))
    plan.on_tokens([1], False)
    plan.on_tokens([2, 3], False)
    plan.on_tokens([], True)  # finished on end_id: nothing new
    assert sent == expected
