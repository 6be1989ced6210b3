"""TensorRT-LLM-contract tensors <-> the decoding engine (pure: no Triton)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Arrays = dict[str, np.ndarray | None]


@dataclass(frozen=True)
class LlmInputs:
    input_ids: list[int]
    max_new_tokens: int
    end_id: int | None
    prompt_table: np.ndarray | None
    streaming: bool


def _scalar(arrays: Arrays, name: str, default: int | bool | None = None) -> int | bool | None:
    value = arrays.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"missing input {name}")
        return default
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"{name} must hold one value per request, got {flat.size}")
    return flat[0].item()


def parse_llm_inputs(arrays: Arrays) -> LlmInputs:
    """One request's tensors (batch 1, as TensorRT-LLM's inflight batcher requires)."""
    ids = arrays.get("input_ids")
    if ids is None:
        raise ValueError("missing input input_ids")
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must be [1, tokens] (one sequence per request), got {list(ids.shape)}")
    length = int(_scalar(arrays, "input_lengths", ids.shape[1]))  # type: ignore[arg-type]
    if not 1 <= length <= ids.shape[1]:
        raise ValueError(f"input_lengths {length} outside 1..{ids.shape[1]}")
    budget = int(_scalar(arrays, "request_output_len"))  # type: ignore[arg-type]
    if budget < 0:
        raise ValueError("request_output_len must be >= 0")
    end = arrays.get("end_id")
    table = arrays.get("prompt_embedding_table")
    if table is not None:
        if table.ndim != 3 or table.shape[0] != 1:
            raise ValueError(f"prompt_embedding_table must be [1, rows, hidden], got {list(table.shape)}")
        rows = int(_scalar(arrays, "prompt_vocab_size", table.shape[1]))  # type: ignore[arg-type]
        if not 0 <= rows <= table.shape[1]:
            raise ValueError(f"prompt_vocab_size {rows} outside 0..{table.shape[1]}")
        table = np.array(table[0, :rows])  # a copy: request buffers are freed after execute()
    return LlmInputs(
        input_ids=ids[0, :length].astype(np.int64).tolist(),
        max_new_tokens=budget,
        end_id=None if end is None else int(_scalar(arrays, "end_id")),  # type: ignore[arg-type]
        prompt_table=table,
        streaming=bool(_scalar(arrays, "streaming", False)),
    )


def output_arrays(tokens: list[int]) -> dict[str, np.ndarray]:
    """output_ids [1, beams=1, n] and sequence_length [1, 1], generated tokens only."""
    return {
        "output_ids": np.asarray(tokens, dtype=np.int32).reshape(1, 1, len(tokens)),
        "sequence_length": np.array([[len(tokens)]], dtype=np.int32),
    }


class ResponsePlan:
    """When to send what, per TensorRT-LLM's behaviour (the sink's pure half).

    Non-decoupled: one response with every token, flagged final. Decoupled: with `streaming`,
    one response per token chunk; without, one response with every token; then an empty final.
    `send(tokens | None, final)`: tokens None means a flag-only response.
    """

    def __init__(self, decoupled: bool, streaming: bool, send: Callable[[list[int] | None, bool], None]) -> None:
        self._decoupled = decoupled
        self._streaming = decoupled and streaming
        self._send = send
        self._tokens: list[int] = []

    def on_tokens(self, tokens: list[int], finished: bool) -> None:
        if self._streaming:
            if tokens:
                self._send(tokens, False)
        else:
            self._tokens += tokens
        if not finished:
            return
        if not self._decoupled:
            self._send(self._tokens, True)
            return
        if not self._streaming:
            self._send(self._tokens, False)
        self._send(None, True)
