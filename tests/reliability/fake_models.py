"""A throwaway Triton repository of scripted python models with the ensembles' tensors.

The fault tests point the gateway (GATEWAY_TRITON__ASR_MODEL and friends) at these
instead of the real ensembles, so that "Triton fails", "Triton is slow" and "the
client went away" happen on cue, in a Triton that starts in seconds. Every model
appends what it does ("start", "done", "cancelled", "error") to an events file the
test reads: that is how a test sees upstream work stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from canary_qwen.mel import SAMPLE_RATE
from export.build import MAX_AUDIO_SECONDS

# Runs inside Triton's python backend stub (numpy and the stub's utilities only).
_MODEL_PY = '''
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.mode = params["mode"]["string_value"]
        self.delay_s = float(params["delay_s"]["string_value"])
        self.events = params["events_file"]["string_value"]
        self.name = args["model_name"]

    def log(self, what, request=None):
        """One line: model, event, time and, for a request, its audio samples and token budget."""
        asked = ""
        audio = request and pb_utils.get_input_tensor_by_name(request, "AUDIO")
        budget = request and pb_utils.get_input_tensor_by_name(request, "MAX_NEW_TOKENS")
        if audio is not None and budget is not None:
            asked = f" {audio.as_numpy().shape[-1]} {int(budget.as_numpy().reshape(-1)[0])}"
        with open(self.events, "a") as out:
            out.write(f"{self.name} {what} {time.time():.3f}{asked}\\n")

    def outputs(self, text):
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("TEXT", np.array([[text.encode()]], dtype=np.object_)),
            pb_utils.Tensor("OUTPUT_IDS", np.array([[[11, 12]]], dtype=np.int32)),
        ])

    def wait(self, cancelled):
        """Sleep delay_s in small steps; False when the request was cancelled meanwhile."""
        deadline = time.monotonic() + self.delay_s
        while time.monotonic() < deadline:
            if cancelled():
                return False
            time.sleep(0.05)
        return True

    def execute(self, requests):
        if self.mode == "stream":
            for request in requests:
                self.stream(request)
            return None
        responses = []
        for request in requests:
            self.log("start", request)
            if self.mode == "raise":
                self.log("error")
                raise RuntimeError("scripted model failure")
            if not self.wait(request.is_cancelled):
                self.log("cancelled")
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)))
                continue
            self.log("done")
            responses.append(self.outputs("scripted words"))
        return responses

    def stream(self, request):
        """One word every delay_s, 200 at most, until the client cancels."""
        sender = request.get_response_sender()
        self.log("start", request)
        for _ in range(200):
            if sender.is_cancelled():
                self.log("cancelled")
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            sender.send(self.outputs("word "))
            time.sleep(self.delay_s)
        self.log("done")
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 8
{decoupled}
input [
  {{ name: "AUDIO" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "MAX_NEW_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }}
]
output [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "OUTPUT_IDS" data_type: TYPE_INT32 dims: [ -1, -1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
parameters {{ key: "mode" value {{ string_value: "{mode}" }} }}
parameters {{ key: "delay_s" value {{ string_value: "{delay_s}" }} }}
parameters {{ key: "events_file" value {{ string_value: "{events}" }} }}
parameters {{ key: "max_audio_seconds" value {{ string_value: "{max_audio_seconds}" }} }}
parameters {{ key: "sample_rate" value {{ string_value: "{sample_rate}" }} }}
parameters {{ key: "piece_pause_s" value {{ string_value: "" }} }}
"""


class Mode(str, Enum):
    SLOW = "slow"  # answers after delay_s, or stops early when cancelled
    RAISE = "raise"  # raises in execute
    STREAM = "stream"  # decoupled: a word every delay_s until cancelled


@dataclass(frozen=True)
class FakeModel:
    name: str
    mode: Mode
    delay_s: float = 0.0
    instances: int = 4  # several requests in flight at once


def write_fake_repository(root: Path, models: list[FakeModel], events_file: Path) -> Path:
    """Write the repository under `root`; returns it."""
    for model in models:
        version = root / model.name / "1"
        version.mkdir(parents=True, exist_ok=True)
        (version / "model.py").write_text(_MODEL_PY)
        decoupled = "model_transaction_policy { decoupled: true }" if model.mode is Mode.STREAM else ""
        (root / model.name / "config.pbtxt").write_text(_CONFIG.format(
            name=model.name, decoupled=decoupled, instances=model.instances, mode=model.mode.value,
            delay_s=model.delay_s, events=events_file, max_audio_seconds=MAX_AUDIO_SECONDS, sample_rate=SAMPLE_RATE,
        ))
    return root


def read_events(events_file: Path) -> list[tuple[str, str]]:
    """(model, what) pairs in the order the models wrote them."""
    if not events_file.exists():
        return []
    return [tuple(line.split()[:2]) for line in events_file.read_text().splitlines() if line.strip()]  # type: ignore[misc]


def read_requests(events_file: Path, model: str) -> list[tuple[int, int]]:
    """(audio samples, MAX_NEW_TOKENS) of each request `model` started, in order."""
    if not events_file.exists():
        return []
    fields = [line.split() for line in events_file.read_text().splitlines()]
    return [(int(f[3]), int(f[4])) for f in fields if len(f) == 5 and f[:2] == [model, "start"]]
