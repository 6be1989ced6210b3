"""The gpu tier's python glue on a real tritonserver (cpu build; no TensorRT needed for these parts).

The `llm` collector (model_repository/llm_collect) runs as filled by `export repository`, in front
of a stand-in for the decoupled tensorrtllm model that answers like the backend does: one response
per batch item, out of order, each with `batch_index` (model_instance_state.cc fillTritonResponse),
then an empty final-flag response. The prompt table travels as BF16, made by the prompt builder's
`bf16_output` path through DLPack. Checked: the ensemble stays a plain request/response model
(gRPC ModelInfer) while its LLM step is decoupled behind the collector, batches > 1 come back in
order, the engine sees `streaming` false and the table's BF16 values intact.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import InferenceServerClient, InferInput

from export.repository import TEMPLATES, render
from launcher import TritonServer
from tests.fixtures.triton import log_tail, triton_settings

D = 4  # table width

# Answers like the tensorrtllm backend: per item, last item first; the generated ids encode what it
# received (prompt_vocab_size, the table row sums, streaming) so the test can check them.
ENGINE_MODEL = '''
import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            get = lambda name: pb_utils.get_input_tensor_by_name(request, name)
            table = from_dlpack(get("prompt_embedding_table").to_dlpack())
            assert table.dtype == torch.bfloat16, table.dtype
            sizes = get("prompt_vocab_size").as_numpy().reshape(-1)
            streaming = int(get("streaming").as_numpy().reshape(-1)[0])
            lengths = get("input_lengths").as_numpy().reshape(-1)
            for item in reversed(range(len(sizes))):
                n = int(sizes[item])
                ids = [n, int(table[item, :n].float().sum().item()), streaming, int(lengths[item])][: 2 + item]
                out = np.full((1, 1, 4), -1, np.int32)
                out[0, 0, : len(ids)] = ids
                sender.send(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("output_ids", out),
                    pb_utils.Tensor("sequence_length", np.array([[len(ids)]], np.int32)),
                    pb_utils.Tensor("batch_index", np.array([[item]], np.int32)),
                ]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

ENGINE_CONFIG = f"""
name: "engine"
backend: "python"
max_batch_size: 8
model_transaction_policy {{ decoupled: true }}
input [
  {{ name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true }},
  {{ name: "input_lengths" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "request_output_len" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "streaming" data_type: TYPE_BOOL dims: [ 1 ] optional: true }},
  {{ name: "prompt_embedding_table" data_type: TYPE_BF16 dims: [ -1, {D} ] optional: true }},
  {{ name: "prompt_vocab_size" data_type: TYPE_INT32 dims: [ 1 ] optional: true }}
]
output [
  {{ name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] }},
  {{ name: "sequence_length" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "batch_index" data_type: TYPE_INT32 dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

# The prompt builder's BF16 path: rows built in float32, cast through torch, out by DLPack.
TABLE_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils

from canary_qwen.serving import bf16_output


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "ROWS").as_numpy()
            b, n = rows.shape[0], rows.shape[1]
            outputs = {
                "prompt_embedding_table": rows,
                "prompt_vocab_size": np.full((b, 1), n, np.int32),
                "input_ids": np.arange(b * 3, dtype=np.int32).reshape(b, 3),
                "input_lengths": np.full((b, 1), 3, np.int32),
                "request_output_len": np.full((b, 1), 4, np.int32),
                "streaming": np.ones((b, 1), np.bool_),
            }
            responses.append(bf16_output.response(outputs, {"prompt_embedding_table"}))
        return responses
'''

TABLE_CONFIG = f"""
name: "table"
backend: "python"
max_batch_size: 8
input [ {{ name: "ROWS" data_type: TYPE_FP32 dims: [ -1, {D} ] }} ]
output [
  {{ name: "prompt_embedding_table" data_type: TYPE_BF16 dims: [ -1, {D} ] }},
  {{ name: "prompt_vocab_size" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "input_lengths" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "request_output_len" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "streaming" data_type: TYPE_BOOL dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

PIPELINE_CONFIG = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "ROWS" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
output [
  { name: "OUTPUT_IDS" data_type: TYPE_INT32 dims: [ -1, -1 ] },
  { name: "SEQUENCE_LENGTH" data_type: TYPE_INT32 dims: [ -1 ] }
]
ensemble_scheduling { step [
  { model_name: "table" model_version: -1
    input_map { key: "ROWS" value: "ROWS" }
    output_map { key: "prompt_embedding_table" value: "_table" }
    output_map { key: "prompt_vocab_size" value: "_vocab" }
    output_map { key: "input_ids" value: "_ids" }
    output_map { key: "input_lengths" value: "_lengths" }
    output_map { key: "request_output_len" value: "_budget" }
    output_map { key: "streaming" value: "_streaming" } },
  { model_name: "llm" model_version: -1
    input_map { key: "prompt_embedding_table" value: "_table" }
    input_map { key: "prompt_vocab_size" value: "_vocab" }
    input_map { key: "input_ids" value: "_ids" }
    input_map { key: "input_lengths" value: "_lengths" }
    input_map { key: "request_output_len" value: "_budget" }
    input_map { key: "streaming" value: "_streaming" }
    output_map { key: "output_ids" value: "OUTPUT_IDS" }
    output_map { key: "sequence_length" value: "SEQUENCE_LENGTH" } }
] }
"""


def _model(root: Path, name: str, config: str, code: str) -> None:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(config)
    (root / name / "1" / "model.py").write_text(textwrap.dedent(code))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("gpu_runners")
    repo = root / "repo"
    _model(repo, "engine", ENGINE_CONFIG, ENGINE_MODEL)
    _model(repo, "table", TABLE_CONFIG, TABLE_MODEL)
    # The collector exactly as the gpu-tier fill renders it (export/repository.py values).
    template = TEMPLATES / "llm_collect"
    config = render((template / "config.pbtxt").read_text(), {
        "model_name": "llm", "engine_model": "engine", "llm_max_batch_size": "8",
        "prompt_table_dtype": "TYPE_BF16", "collector_instances": "1",
    })  # fmt: skip
    _model(repo, "llm", config, (template / "1" / "model.py").read_text())
    (repo / "pipeline" / "1").mkdir(parents=True)
    (repo / "pipeline" / "config.pbtxt").write_text(PIPELINE_CONFIG)
    log_path = root / "tritonserver.log"
    try:
        with TritonServer(repo, triton_settings(), log_path=log_path) as running:
            yield running
    except Exception:
        print(log_tail(log_path))
        raise


def _infer(server: TritonServer, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    client = InferenceServerClient(server.grpc_url)
    try:
        data = InferInput("ROWS", list(rows.shape), "FP32")
        data.set_data_from_numpy(rows)
        result = client.infer("pipeline", [data])  # unary ModelInfer: refused for a decoupled ensemble
        return result.as_numpy("OUTPUT_IDS"), result.as_numpy("SEQUENCE_LENGTH")
    finally:
        client.close()


def test_collector_is_request_response_over_a_decoupled_engine(server: TritonServer) -> None:
    rows = np.zeros((3, 2, D), np.float32)
    rows[:, 0, :] = [[1.5, 2.5, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
    rows[:, 1, :] = 1.0
    ids, lengths = _infer(server, rows)
    # Items back in request order although the engine answered the last first; each saw its own
    # table rows in BF16 (sum of 2 rows: 4+4, 3+4, 1+4), streaming forced false, input length 3.
    assert lengths.tolist() == [[2], [3], [4]]
    assert ids.shape == (3, 1, 4)
    assert ids[:, 0].tolist() == [[2, 8, -1, -1], [2, 7, 0, -1], [2, 5, 0, 3]]


def test_a_single_item_request(server: TritonServer) -> None:
    ids, lengths = _infer(server, np.ones((1, 3, D), np.float32))
    assert lengths.tolist() == [[2]] and ids[0, 0, :2].tolist() == [3, 12]
