"""The cpu-tier decoding engine against a plain no-cache greedy loop on a tiny random Qwen3."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from canary_qwen.generation import BatchingEngine, GenerationRequest, embed_prompt, greedy_reference

VOCAB = 97
HIDDEN = 32


@pytest.fixture(scope="module")
def model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config).eval()


class Collect:
    """A sink that records tokens and whether/how the request finished."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.tokens: list[int] = []
        self.chunks = 0
        self.finished = False
        self.error: Exception | None = None
        self.cancel_after = cancel_after
        self.done = threading.Event()

    def on_tokens(self, tokens: list[int], finished: bool) -> None:
        assert not self.finished, "tokens after the final response"
        self.tokens += tokens
        self.chunks += 1
        self.finished = finished
        if finished:
            self.done.set()

    def on_error(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.tokens) >= self.cancel_after


def _prompt(rng: np.random.Generator, length: int, table_rows: int) -> tuple[list[int], np.ndarray | None]:
    ids = rng.integers(0, VOCAB, size=length).tolist()
    if table_rows == 0:
        return ids, None
    at = length // 2
    ids[at:at] = [VOCAB + i for i in range(table_rows)]  # the placeholder expanded into fake ids
    return ids, rng.standard_normal((table_rows, HIDDEN)).astype(np.float32)


def _drain(engine: BatchingEngine) -> None:
    for _ in range(1000):
        if not engine.has_work():
            return
        engine.step()
    raise AssertionError("engine did not finish")


def test_embed_prompt_takes_fake_ids_from_the_table(model: Qwen3ForCausalLM) -> None:
    table = np.arange(3 * HIDDEN, dtype=np.float32).reshape(3, HIDDEN)
    embeds = embed_prompt(model.get_input_embeddings(), [5, VOCAB + 2, VOCAB, 7], table)
    weight = model.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0], weight[5])
    torch.testing.assert_close(embeds[1], torch.from_numpy(table[2]))
    torch.testing.assert_close(embeds[2], torch.from_numpy(table[0]))
    torch.testing.assert_close(embeds[3], weight[7])


@pytest.mark.parametrize(
    "ids, table, message",
    [([VOCAB], None, "no prompt_embedding_table"), ([VOCAB + 3], np.zeros((2, HIDDEN), np.float32), "past the")],
)
def test_embed_prompt_rejects_bad_fake_ids(model: Qwen3ForCausalLM, ids: list[int], table, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        embed_prompt(model.get_input_embeddings(), ids, table)


def test_staggered_batch_matches_one_at_a_time(model: Qwen3ForCausalLM) -> None:
    """Requests of different lengths joining mid-flight decode exactly like a lone greedy loop."""
    rng = np.random.default_rng(1)
    specs = [(rng.integers(3, 20), rng.integers(0, 6), rng.integers(1, 12)) for _ in range(7)]
    prompts = [_prompt(rng, int(length), int(rows)) for length, rows, _ in specs]
    engine = BatchingEngine(model, max_batch_size=4)
    sinks = [Collect() for _ in prompts]
    # Two arrive first, the rest trickle in while those are decoding.
    for i, ((ids, table), (_, _, budget)) in enumerate(zip(prompts, specs)):
        engine.submit(GenerationRequest(ids, int(budget), end_id=None, sink=sinks[i], prompt_table=table))
        if i >= 1:
            engine.step()
    _drain(engine)
    for (ids, table), (_, _, budget), sink in zip(prompts, specs, sinks):
        assert sink.error is None and sink.finished
        assert sink.tokens == greedy_reference(model, ids, int(budget), None, table)
        assert len(sink.tokens) == budget
    # Batching really happened: far fewer forward passes than tokens generated.
    assert engine.forward_passes < sum(int(b) for _, _, b in specs)


def test_stops_at_end_id_without_emitting_it(model: Qwen3ForCausalLM) -> None:
    rng = np.random.default_rng(2)
    ids, _ = _prompt(rng, 8, 0)
    free_run = greedy_reference(model, ids, 10, None)
    end_id = free_run[3]
    expected = free_run[: free_run.index(end_id)]
    engine = BatchingEngine(model, max_batch_size=2)
    sink = Collect()
    engine.submit(GenerationRequest(ids, 10, end_id=end_id, sink=sink))
    _drain(engine)
    assert sink.finished and sink.tokens == expected


def test_streams_one_token_per_step_and_zero_budget(model: Qwen3ForCausalLM) -> None:
    rng = np.random.default_rng(3)
    ids, _ = _prompt(rng, 5, 0)
    engine = BatchingEngine(model, max_batch_size=2)
    streamed, empty = Collect(), Collect()
    engine.submit(GenerationRequest(ids, 6, end_id=None, sink=streamed))
    engine.submit(GenerationRequest(ids, 0, end_id=None, sink=empty))
    _drain(engine)
    assert streamed.chunks == 6 and len(streamed.tokens) == 6
    assert empty.finished and empty.tokens == []


def test_bad_request_fails_alone(model: Qwen3ForCausalLM) -> None:
    rng = np.random.default_rng(4)
    ids, table = _prompt(rng, 6, 2)
    engine = BatchingEngine(model, max_batch_size=4)
    good, no_table, empty = Collect(), Collect(), Collect()
    engine.submit(GenerationRequest(ids, 4, end_id=None, sink=good, prompt_table=table))
    engine.submit(GenerationRequest(ids, 4, end_id=None, sink=no_table))
    engine.submit(GenerationRequest([], 4, end_id=None, sink=empty))
    _drain(engine)
    assert good.error is None and good.tokens == greedy_reference(model, ids, 4, None, table)
    assert isinstance(no_table.error, ValueError) and isinstance(empty.error, ValueError)


def test_cancelled_request_leaves_the_batch(model: Qwen3ForCausalLM) -> None:
    rng = np.random.default_rng(5)
    ids, _ = _prompt(rng, 7, 0)
    engine = BatchingEngine(model, max_batch_size=4)
    cancelled, other = Collect(cancel_after=2), Collect()
    engine.submit(GenerationRequest(ids, 20, end_id=None, sink=cancelled))
    engine.submit(GenerationRequest(ids[:4], 9, end_id=None, sink=other))
    _drain(engine)
    assert cancelled.error is not None and len(cancelled.tokens) == 2
    assert other.tokens == greedy_reference(model, ids[:4], 9, None)


def test_background_thread_serves_concurrent_submitters(model: Qwen3ForCausalLM) -> None:
    rng = np.random.default_rng(6)
    prompts = [_prompt(rng, int(rng.integers(3, 15)), int(rng.integers(0, 4))) for _ in range(6)]
    engine = BatchingEngine(model, max_batch_size=3)
    engine.start()
    try:
        sinks = [Collect() for _ in prompts]
        threads = [
            threading.Thread(target=engine.submit, args=(GenerationRequest(ids, 8, None, sink, table),))
            for (ids, table), sink in zip(prompts, sinks)
        ]
        for thread in threads:
            thread.start()
        for sink in sinks:
            assert sink.done.wait(60)
    finally:
        engine.shutdown()
    for (ids, table), sink in zip(prompts, sinks):
        assert sink.tokens == greedy_reference(model, ids, 8, None, table)
