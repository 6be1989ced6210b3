"""Greedy decoding with a KV cache and continuous batching, for the cpu-tier LLM.

The engine speaks TensorRT-LLM's multimodal contract: prompt ids where fake ids
`vocab_size + i` select row `i` of a per-request prompt embedding table. Requests
join the running batch as they arrive (one batched prefill per admission round)
and leave it when they hit `end_id` or their token budget; every decode step is
one forward pass over all running sequences.

The batch is kept left-padded: each row's real tokens sit at the right end of the
shared KV cache, masked by a 2-D attention mask, with explicit position ids so a
row's positions do not depend on its padding.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

logger = logging.getLogger(__name__)


class TokenSink(Protocol):
    """Where a request's tokens go; called from the engine's thread."""

    def on_tokens(self, tokens: list[int], finished: bool) -> None: ...

    def on_error(self, error: Exception) -> None: ...

    def is_cancelled(self) -> bool: ...


@dataclass
class GenerationRequest:
    input_ids: Sequence[int]
    max_new_tokens: int
    end_id: int | None
    sink: TokenSink
    # [P, hidden] rows for fake ids vocab_size .. vocab_size + P - 1; None for text-only prompts.
    prompt_table: np.ndarray | torch.Tensor | None = None


@dataclass
class _Sequence:
    request: GenerationRequest
    next_position: int
    last_token: int = -1
    generated: int = 0


@dataclass
class _Batch:
    """The running, left-padded batch: rows of `sequences` line up with the cache's batch dim."""

    sequences: list[_Sequence] = field(default_factory=list)
    cache: DynamicCache | None = None
    attention_mask: torch.Tensor | None = None  # [B, L] int64, 0 = padding


def embed_prompt(
    embeddings: torch.nn.Embedding, input_ids: Sequence[int], prompt_table: np.ndarray | torch.Tensor | None
) -> torch.Tensor:
    """[L, hidden]: word embeddings, with fake ids >= vocab_size taken from the prompt table."""
    vocab_size = embeddings.num_embeddings
    ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=embeddings.weight.device)
    fake = ids >= vocab_size
    if bool((ids < 0).any()):
        raise ValueError("input_ids must be non-negative")
    embeds = embeddings(torch.where(fake, torch.zeros_like(ids), ids))
    if bool(fake.any()):
        if prompt_table is None:
            raise ValueError(f"input_ids hold ids >= vocab_size ({vocab_size}) but no prompt_embedding_table was given")
        table = torch.as_tensor(prompt_table).to(device=embeds.device, dtype=embeds.dtype)
        rows = ids[fake] - vocab_size
        if table.ndim != 2 or table.shape[1] != embeds.shape[1]:
            raise ValueError(f"prompt_embedding_table must be [rows, {embeds.shape[1]}], got {tuple(table.shape)}")
        if int(rows.max()) >= table.shape[0]:
            raise ValueError(f"fake id {int(rows.max()) + vocab_size} is past the prompt table's {table.shape[0]} rows")
        embeds = embeds.clone()
        embeds[fake] = table[rows]
    return embeds


def _left_pad(tensors: list[torch.Tensor], length: int, dim: int) -> list[torch.Tensor]:
    """Pad each tensor with zeros on the left of `dim` up to `length`."""
    padded = []
    for t in tensors:
        missing = length - t.shape[dim]
        if missing:
            shape = list(t.shape)
            shape[dim] = missing
            t = torch.cat([t.new_zeros(shape), t], dim=dim)
        padded.append(t)
    return padded


def _cache_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def merge_batches(first: _Batch, second: _Batch) -> _Batch:
    """One left-padded batch holding the rows of both (cache time dims aligned on the right)."""
    if not first.sequences:
        return second
    if not second.sequences:
        return first
    assert first.cache is not None and second.cache is not None
    assert first.attention_mask is not None and second.attention_mask is not None
    length = max(first.attention_mask.shape[1], second.attention_mask.shape[1])
    layers = []
    for (k1, v1), (k2, v2) in zip(_cache_tensors(first.cache), _cache_tensors(second.cache)):
        k1, k2 = _left_pad([k1, k2], length, dim=2)
        v1, v2 = _left_pad([v1, v2], length, dim=2)
        layers.append((torch.cat([k1, k2]), torch.cat([v1, v2])))
    m1, m2 = _left_pad([first.attention_mask, second.attention_mask], length, dim=1)
    return _Batch(first.sequences + second.sequences, DynamicCache(layers), torch.cat([m1, m2]))


def select_rows(batch: _Batch, keep: list[int]) -> _Batch:
    """Keep only rows `keep`, dropping leading cache columns that are padding for every kept row."""
    if not keep:
        return _Batch()
    assert batch.cache is not None and batch.attention_mask is not None
    index = torch.tensor(keep, device=batch.attention_mask.device)
    mask = batch.attention_mask.index_select(0, index)
    start = int(mask.any(dim=0).nonzero()[0])
    layers = [
        (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
        for k, v in _cache_tensors(batch.cache)
    ]
    return _Batch([batch.sequences[i] for i in keep], DynamicCache(layers), mask[:, start:].contiguous())


@dataclass
class _StepOutput:
    logits: torch.Tensor  # [B, 1, vocab]
    cache: DynamicCache


class BatchingEngine:
    """Continuous-batching greedy decoder over a Hugging Face causal LM.

    `submit` is thread-safe; `step` runs one admission round and one decode step and is
    what the background thread (`start`) calls in a loop. Tests may drive `step` directly.
    """

    def __init__(self, model: PreTrainedModel, *, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._model = model.eval()
        self._embeddings: torch.nn.Embedding = model.get_input_embeddings()
        self._device = self._embeddings.weight.device
        self._max_batch_size = max_batch_size
        self._max_positions = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._pending: deque[GenerationRequest] = deque()
        self._running = _Batch()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.forward_passes = 0  # decode steps + prefills, for tests and logs
        forward_params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"

    @property
    def device(self) -> torch.device:
        return self._device

    def submit(self, request: GenerationRequest) -> None:
        with self._wakeup:
            if self._stopping:
                raise RuntimeError("engine is shutting down")
            self._pending.append(request)
            self._wakeup.notify()

    def has_work(self) -> bool:
        with self._wakeup:
            return bool(self._pending or self._running.sequences)

    # --- background loop -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="llm-batching-engine", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_all(RuntimeError("model is unloading"))

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and not (self._pending or self._running.sequences):
                    self._wakeup.wait()
                if self._stopping:
                    return
            self.step()

    # --- one iteration ---------------------------------------------------------------

    def step(self) -> None:
        """Admit waiting requests (one batched prefill), then one decode step for the batch."""
        try:
            with torch.inference_mode():
                self._drop_cancelled()
                self._admit()
                if self._running.sequences:
                    self._decode()
        except Exception as error:  # a failed forward pass fails the requests it held, not the engine
            logger.exception("generation step failed")
            self._fail_all(error)

    def _take_pending(self) -> list[GenerationRequest]:
        with self._wakeup:
            room = self._max_batch_size - len(self._running.sequences)
            taken = []
            while self._pending and len(taken) < room:
                taken.append(self._pending.popleft())
            return taken

    def _admit(self) -> None:
        admitted: list[_Sequence] = []
        embeds: list[torch.Tensor] = []
        for request in self._take_pending():
            try:
                self._validate(request)
                prompt = embed_prompt(self._embeddings, request.input_ids, request.prompt_table)
            except Exception as error:  # a malformed request fails alone
                request.sink.on_error(error)
                continue
            if request.max_new_tokens == 0:
                request.sink.on_tokens([], True)
                continue
            admitted.append(_Sequence(request, next_position=len(request.input_ids)))
            embeds.append(prompt)
        if not admitted:
            return
        length = max(e.shape[0] for e in embeds)
        inputs = torch.stack(_left_pad(embeds, length, dim=0))
        mask = torch.stack(
            _left_pad([torch.ones(e.shape[0], dtype=torch.long, device=self._device) for e in embeds], length, dim=0)
        )
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self._forward(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, cache=DynamicCache())
        newcomers = _Batch(admitted, out.cache, mask)
        newcomers = self._emit(newcomers, out.logits[:, -1, :])
        self._running = merge_batches(self._running, newcomers)

    def _decode(self) -> None:
        batch = self._running
        assert batch.cache is not None and batch.attention_mask is not None
        tokens = torch.tensor([[s.last_token] for s in batch.sequences], device=self._device)
        positions = torch.tensor([[s.next_position] for s in batch.sequences], device=self._device)
        mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones((len(batch.sequences), 1))], dim=1)
        out = self._forward(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=batch.cache)
        batch.attention_mask = mask
        batch.cache = out.cache
        for sequence in batch.sequences:
            sequence.next_position += 1
        self._running = self._emit(batch, out.logits[:, -1, :])

    def _forward(self, *, cache: DynamicCache, **inputs: torch.Tensor) -> _StepOutput:
        # transformers renamed `past_key_values` to `cache` (5.x); accept both.
        kwargs = {self._cache_kwarg: cache}
        out = self._model(**inputs, **kwargs, use_cache=True, logits_to_keep=1)
        self.forward_passes += 1
        return _StepOutput(out.logits, getattr(out, self._cache_kwarg))

    def _emit(self, batch: _Batch, logits: torch.Tensor) -> _Batch:
        """Pick each row's greedy token, hand it to the sink, and drop the finished rows."""
        chosen = logits.argmax(dim=-1).tolist()
        keep: list[int] = []
        for row, (sequence, token) in enumerate(zip(batch.sequences, chosen)):
            request = sequence.request
            sequence.generated += 1
            ended = request.end_id is not None and token == request.end_id
            finished = (
                ended
                or sequence.generated >= request.max_new_tokens
                or sequence.next_position + 1 >= self._max_positions
            )
            # Like TensorRT-LLM, the end token itself is not part of the output.
            request.sink.on_tokens([] if ended else [int(token)], finished)
            if not finished:
                sequence.last_token = int(token)
                keep.append(row)
        return batch if len(keep) == len(batch.sequences) else select_rows(batch, keep)

    def _drop_cancelled(self) -> None:
        batch = self._running
        keep = [i for i, s in enumerate(batch.sequences) if not s.request.sink.is_cancelled()]
        if len(keep) != len(batch.sequences):
            for i, sequence in enumerate(batch.sequences):
                if i not in keep:
                    sequence.request.sink.on_error(RuntimeError("request cancelled"))
            self._running = select_rows(batch, keep)

    def _validate(self, request: GenerationRequest) -> None:
        if len(request.input_ids) == 0:
            raise ValueError("input_ids is empty")
        if request.max_new_tokens < 0:
            raise ValueError("request_output_len must be >= 0")
        if len(request.input_ids) >= self._max_positions:
            raise ValueError(f"prompt of {len(request.input_ids)} tokens exceeds the model's {self._max_positions}")

    def _fail_all(self, error: Exception) -> None:
        with self._wakeup:
            pending = list(self._pending)
            self._pending.clear()
        running = self._running.sequences
        self._running = _Batch()
        for sequence in running:
            sequence.request.sink.on_error(error)
        for request in pending:
            request.sink.on_error(error)


def greedy_reference(
    model: PreTrainedModel,
    input_ids: Sequence[int],
    max_new_tokens: int,
    end_id: int | None,
    prompt_table: np.ndarray | torch.Tensor | None = None,
) -> list[int]:
    """One sequence, no cache, no batching: the slow, obvious oracle for the engine's tests."""
    embeddings = model.get_input_embeddings()
    generated: list[int] = []
    with torch.inference_mode():
        embeds = embed_prompt(embeddings, input_ids, prompt_table)[None]
        for _ in range(max_new_tokens):
            token = int(model(inputs_embeds=embeds).logits[0, -1].argmax())
            if end_id is not None and token == end_id:
                break
            generated.append(token)
            embeds = torch.cat([embeds, embeddings(torch.tensor([[token]], device=embeds.device))], dim=1)
    return generated
