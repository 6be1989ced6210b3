"""`python -m bench gpu`: end to end on the CPU with the tiny preset (real tritonserver, real gRPC),
plus its pure pieces. On a GPU machine the same command runs the full preset on CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import Clip
from bench.gpu import JSON_FILE, LOG_FILE, SUMMARY_FILE, phase_jobs, summary, token_budgets
from bench.gpu_build import set_batch_limits, use_torch_runtime
from bench.gpu_payload import _keep

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 1500  # two cores shared with everything else: six python models load torch


def _clip(name: str, seconds: float, text: str = "a few words") -> Clip:
    samples = np.zeros(int(seconds * 16000), dtype=np.float32)
    return Clip(name, text, samples, b"", Path(f"{name}.wav"))


def test_phase_jobs_keep_every_worker_busy_twice() -> None:
    clips = [_clip(f"c{i}", 1.0 + i) for i in range(16)]
    budgets = {clip.name: 5 for clip in clips}
    assert len(phase_jobs(clips, budgets, 1)) == 16  # one pass
    assert len(phase_jobs(clips, budgets, 16)) == 32
    jobs = phase_jobs(clips, budgets, 64)
    assert len(jobs) == 128 and jobs[0].job == (clips[0], 5) and jobs[0].audio_s == 1.0


def test_token_budgets_fixed() -> None:
    clips = [_clip("a", 1.0), _clip("b", 2.0)]
    assert token_budgets(clips, Path("unused"), 7) == {"a": 7, "b": 7}


def test_payload_keeps_only_the_server_and_one_stub() -> None:
    assert _keep("pytriton/tritonserver/bin/tritonserver")
    assert _keep("pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub")
    assert not _keep("pytriton/tritonserver/python_backend_stubs/3.13/triton_python_backend_stub")
    assert _keep("nvidia_pytriton.libs/libtritonserver-717102f0.so")
    assert not _keep("nvidia_pytriton.libs/libpython3-419a3a08.13.so.1.0")
    assert _keep("nvidia_pytriton-0.7.0.dist-info/METADATA")
    assert not _keep("pytriton/proxy/inference.py")


def test_torch_runtime_rewrites_the_filled_configs(tmp_path: Path) -> None:
    for model in ("encoder", "adapter"):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / f"{model}.onnx").write_bytes(b"weights")
        (tmp_path / model / "config.pbtxt").write_text(
            f'name: "{model}"\nparameters {{ key: "onnx_file" value {{ string_value: "{model}.onnx" }} }}\n'
        )
    use_torch_runtime(tmp_path, "cuda", "bfloat16")
    config = (tmp_path / "encoder" / "config.pbtxt").read_text()
    assert 'key: "runtime" value { string_value: "torch" }' in config
    assert 'key: "torch_device" value { string_value: "cuda" }' in config
    assert (tmp_path / "encoder" / "1" / "encoder.torch.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "adapter" / "1" / "adapter.onnx").exists()


def test_batch_limits_are_raised_everywhere(tmp_path: Path) -> None:
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "config.pbtxt").write_text(
        'name: "llm"\nmax_batch_size: 16\ndynamic_batching { default_queue_policy { max_queue_size: 64 } }\n'
        'parameters { key: "max_running_requests" value { string_value: "16" } }\n'
    )
    set_batch_limits(tmp_path, 64)
    config = (tmp_path / "llm" / "config.pbtxt").read_text()
    assert "max_batch_size: 64\n" in config and "max_queue_size: 256" in config
    assert 'key: "max_running_requests" value { string_value: "64" }' in config


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_runs_end_to_end_on_cpu_with_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "bench", "gpu", "--out", str(out), "--work-dir", str(tmp_path / "work"),
        "--preset", "tiny", "--device", "cpu", "--torch-dtype", "float32", "--llm-dtype", "float32",
        "--compute-threads", "1", "--concurrency", "[1,3]", "--max-batch", "4", "--profile-batch-sizes", "[1,2]",
        "--profile-audio-s", "2", "--warmup-requests", "1", "--budget-s", "100000", "--commit", "test",
        "--ready-timeout-s", str(RUN_TIMEOUT_S),
    ]  # fmt: skip
    # As on the GPU machine: no NeMo (a package of that name that refuses to import comes first).
    blocker = tmp_path / "no_nemo" / "nemo"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("NeMo is not on the GPU machine")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    document = json.loads((out / JSON_FILE).read_text())
    assert document["commit"] == "test" and document["skipped"] == []
    assert document["reference"]["rtfx"] == 418.0
    c1, c3 = document["phases"]
    assert (c1["concurrency"], c1["requests"], c3["concurrency"], c3["requests"]) == (1, 16, 3, 16)
    for phase in (c1, c3):
        assert phase["rtfx"] > 0 and phase["tokens"] > 0
        assert 0 < phase["latency"]["p50_s"] <= phase["latency"]["p99_s"]
        assert set(phase["achieved_batch_size"]) >= {"preprocessor", "encoder", "adapter", "llm", "canary_qwen"}
        assert phase["compute_ms_per_request"]["encoder"] > 0
        assert phase["peak_gpu_memory_mib"] is None  # no nvidia-smi here
    # One request in flight never batches; each asked for its transcript's tokens + 1 at most.
    assert c1["achieved_batch_size"]["encoder"] == 1.0
    assert c1["tokens"] <= document["corpus"]["new_tokens"]
    profile = document["profile"]
    assert set(profile["batches"]) == {"1", "2"} and profile["preprocess_ms_per_audio_s"] > 0
    for figures in profile["batches"].values():
        assert min(figures.values()) > 0, figures
    text = (out / SUMMARY_FILE).read_text()
    assert text == summary(document) and "418x RTFx" in text
    assert (out / LOG_FILE).stat().st_size > 0
