"""`python -m bench gpu --out DIR`: the real-size model on one GPU, in one call of a few minutes.

On the GPU machine (PyTorch with CUDA, no NeMo, no TensorRT, no package registry; bench/README.md
says which wheels to carry):
1. build the random real-size checkpoint, its artifacts and the cpu-tier repository there
   (bench/gpu_build.py): LLM, encoder and adapter in PyTorch on CUDA (a `torch_device` config
   parameter of the cpu tier's python models);
2. start tritonserver with the `canary_qwen` ensemble (and the models it composes) only;
3. drive the ensemble over gRPC at each concurrency (1, 16, 64) with the benchmark corpus:
   RTFx, latency percentiles, tokens, achieved batch sizes and compute time per request of each
   model (Triton's metrics), GPU memory (nvidia-smi, sampled);
4. stop Triton and profile each step in-process (bench/gpu_profile.py);
5. write gpu_bench.json, gpu_bench.md, the Triton log's tail and nvidia-smi's output to DIR.
Each request asks for as many new tokens as its clip's transcript has (plus the end token): the
random model never stops on its own, the real one stops there. Phases that would outrun
`budget_s` are skipped and say so. With `--device cpu --preset tiny` the same run works on a
CPU machine (tests/test_bench_gpu.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict

from bench import triton_metrics
from bench.corpus import Clip
from bench.gpu_build import build_model
from bench.gpu_corpus import corpus
from bench.load import LoadResult, Timed, run_load
from bench.servers import free_port
from bench.settings import CliSettings
from bench.stats import percentile, rtfx
from launcher.server import TritonServer
from launcher.settings import TritonSettings

ENSEMBLE = "canary_qwen"
# Open ASR Leaderboard: the real model with NeMo, bf16, one A100-80GB, batch 192, greedy.
REFERENCE = {"rtfx": 418.0, "gpu": "A100-80GB", "runtime": "NeMo, bf16, batch 192, max_new_tokens 128"}
JSON_FILE, SUMMARY_FILE, LOG_FILE, SMI_FILE = "gpu_bench.json", "gpu_bench.md", "tritonserver.log", "nvidia-smi.txt"
LOG_TAIL_BYTES = 1 << 20
# Seconds kept back for the profile and the report once the timed phases are done.
PROFILE_RESERVE_S = 60.0


class GpuBenchSettings(CliSettings):
    # Not a CommandSettings: it builds its own model and writes to `out`, not bench/results.
    model_config = SettingsConfigDict(env_prefix="BENCH_GPU_", cli_prog_name="python -m bench gpu")

    out: Path = Field(description="Where the figures go ($OUT on the GPU machine).")
    work_dir: Path = Field(default=Path("/tmp/canary-qwen-gpu-bench"), description="Model build and logs.")
    preset: str = Field(default="full", description="export/tiny.py preset: full (real sizes) or tiny.")
    seed: int = 0
    device: Literal["cuda", "cpu"] = Field(default="cuda", description="Where the models run.")
    torch_dtype: str = Field(default="bfloat16", description="Encoder and adapter dtype.")
    llm_dtype: str = Field(default="bfloat16", description="LLM dtype.")
    compute_threads: int = Field(default=0, ge=0, description="CPU threads per python model (0: torch's default).")
    concurrency: list[PositiveInt] = Field(default=[1, 16, 64], description="Requests in flight, one phase each.")
    max_batch: PositiveInt = Field(default=64, description="Every model's batch limit and the LLM's running sequences.")
    corpus_dir: Path | None = Field(default=None, description="A carried corpus (bench/gpu_corpus.py).")
    max_new_tokens: int = Field(
        default=0, ge=0, description="New tokens per request; 0: the clip's transcript length + 1."
    )
    warmup_requests: int = Field(default=4, ge=0)
    profile_batch_sizes: list[PositiveInt] = Field(default=[1, 16, 64])
    profile_audio_s: PositiveFloat = Field(default=10.0, description="Clip length of the step profile.")
    budget_s: PositiveFloat = Field(default=450.0, description="Whole run, build included; later phases skip.")
    ready_timeout_s: PositiveFloat = 300.0
    request_timeout_s: PositiveFloat = 300.0
    commit: str = Field(default="", description="The commit measured (recorded; default: git rev-parse HEAD).")


class GpuMemory:
    """nvidia-smi's used memory, sampled in a thread (None where there is no nvidia-smi)."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.available = shutil.which("nvidia-smi") is not None
        self._period = period_s
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def used_mib() -> float | None:
        if shutil.which("nvidia-smi") is None:
            return None
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        values = [float(v) for v in out.stdout.split() if v.strip()]
        return sum(values) if values else None

    def __enter__(self) -> GpuMemory:
        self._peak = self.used_mib() or 0.0
        if self.available:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self._period):
            self._peak = max(self._peak, self.used_mib() or 0.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mib(self) -> float | None:
        return self._peak if self.available else None


class EnsembleClient:
    """The `canary_qwen` ensemble over gRPC, each request with its own token budget."""

    def __init__(self, grpc_url: str, timeout_s: float) -> None:
        from tritonclient.grpc.aio import InferenceServerClient

        self._client = InferenceServerClient(url=grpc_url)
        self._timeout_s = timeout_s

    async def __call__(self, job: tuple[Clip, int]) -> int:
        from tritonclient.grpc import InferInput

        clip, max_new = job
        audio = np.ascontiguousarray(clip.samples, dtype=np.float32).reshape(1, -1)
        inputs = [InferInput("AUDIO", list(audio.shape), "FP32"), InferInput("MAX_NEW_TOKENS", [1, 1], "INT32")]
        inputs[0].set_data_from_numpy(audio)
        inputs[1].set_data_from_numpy(np.array([[max_new]], dtype=np.int32))
        result = await self._client.infer(ENSEMBLE, inputs, client_timeout=self._timeout_s)
        ids = result.as_numpy("OUTPUT_IDS")
        return 0 if ids is None else int(np.count_nonzero(ids >= 0))

    async def aclose(self) -> None:
        await self._client.close()


def token_budgets(clips: list[Clip], tokenizer_dir: Path, fixed: int) -> dict[str, int]:
    """Per clip: `fixed`, or its transcript's token count + 1 (the end token the real model emits)."""
    if fixed:
        return {clip.name: fixed for clip in clips}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return {clip.name: len(tokenizer(clip.text)["input_ids"]) + 1 for clip in clips}


def phase_jobs(clips: list[Clip], budgets: dict[str, int], concurrency: int) -> list[Timed[tuple[Clip, int]]]:
    """Whole passes over the corpus, at least two requests per worker (so the batch stays full)."""
    passes = max(1, math.ceil(2 * concurrency / len(clips))) if concurrency > 1 else 1
    return [Timed((clip, budgets[clip.name]), clip.duration_s) for _ in range(passes) for clip in clips]


def latency_summary(result: LoadResult) -> dict[str, float]:
    values = result.latencies_s
    return {
        "p50_s": round(percentile(values, 50), 3),
        "p90_s": round(percentile(values, 90), 3),
        "p99_s": round(percentile(values, 99), 3),
        "mean_s": round(sum(values) / len(values), 3),
    }


def _metrics(url: str) -> triton_metrics.Snapshot:
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    return triton_metrics.parse(response.text)


def run_phase(server: TritonServer, jobs: list[Timed[tuple[Clip, int]]], concurrency: int, timeout_s: float) -> dict[str, Any]:
    async def drive() -> LoadResult:
        client = EnsembleClient(server.grpc_url, timeout_s)
        try:
            return await run_load(jobs, client, concurrency)
        finally:
            await client.aclose()

    before = _metrics(server.metrics_url)
    with GpuMemory() as memory:
        result = asyncio.run(drive())
    change = triton_metrics.delta(before, _metrics(server.metrics_url))
    return {
        "concurrency": concurrency,
        "requests": result.requests,
        "audio_s": round(result.audio_s, 2),
        "wall_s": round(result.wall_s, 3),
        "rtfx": round(rtfx(result.audio_s, result.wall_s), 2),
        "latency": latency_summary(result),
        "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.wall_s, 1),
        "achieved_batch_size": triton_metrics.achieved_batch_sizes(change),
        "compute_ms_per_request": triton_metrics.mean_ms_per_request(change, triton_metrics.COMPUTE_INFER_US),
        "queue_ms_per_request": triton_metrics.mean_ms_per_request(change, triton_metrics.QUEUE_US),
        "peak_gpu_memory_mib": memory.peak_mib,
    }


def _device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_mib=round(props.total_memory / 2**20))
    return info


def _commit(settings: GpuBenchSettings) -> str:
    if settings.commit:
        return settings.commit
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def run(settings: GpuBenchSettings) -> dict[str, Any]:
    started = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - started

    settings.out.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(settings),
        "settings": json.loads(settings.model_dump_json()),
        "machine": _device_info(settings.device),
        "reference": REFERENCE,
        "phases": [],
        "skipped": [],
    }
    model = build_model(
        settings.work_dir,
        settings.preset,
        seed=settings.seed,
        device=settings.device,
        torch_dtype=settings.torch_dtype,
        llm_dtype=settings.llm_dtype,
        compute_threads=settings.compute_threads,
        max_batch=settings.max_batch,
    )
    document["build_s"] = model.seconds
    clips = corpus(settings.corpus_dir, settings.work_dir / "corpus")
    budgets = token_budgets(clips, model.artifacts / "llm_asr", settings.max_new_tokens)
    document["corpus"] = {"clips": len(clips), "audio_s": round(sum(c.duration_s for c in clips), 2),
                          "new_tokens": sum(budgets.values())}  # fmt: skip
    triton_settings = TritonSettings(
        host="127.0.0.1", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        exit_timeout_secs=10, ready_timeout_secs=int(settings.ready_timeout_s),
    )  # fmt: skip
    log_path = settings.work_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    # Only the ensemble and what it composes: the streaming and LLM-mode models would load two
    # more LLM copies that this benchmark never calls.
    extra = ["--model-control-mode=explicit", f"--load-model={ENSEMBLE}"]
    server = TritonServer(model.repository, triton_settings, log_path=log_path, extra_args=extra)
    loaded = elapsed()
    server.start()
    try:
        server.wait_ready(settings.ready_timeout_s)
        document["triton_ready_s"] = round(elapsed() - loaded, 2)
        document["gpu_memory_after_load_mib"] = GpuMemory.used_mib()
        warm = phase_jobs(clips, budgets, 1)[: settings.warmup_requests]
        if warm:
            run_phase(server, warm, min(4, len(warm)), settings.request_timeout_s)
        for concurrency in settings.concurrency:
            if elapsed() > settings.budget_s - PROFILE_RESERVE_S:
                document["skipped"].append(f"concurrency {concurrency}: time budget")
                continue
            jobs = phase_jobs(clips, budgets, concurrency)
            document["phases"].append(run_phase(server, jobs, concurrency, settings.request_timeout_s))
    finally:
        server.stop()
        _copy_log_tail(log_path, settings.out / LOG_FILE)
    if elapsed() < settings.budget_s - PROFILE_RESERVE_S / 2:
        from bench.gpu_profile import profile

        document["profile"] = profile(
            model.artifacts, clips, device=settings.device, torch_dtype=settings.torch_dtype,
            llm_dtype=settings.llm_dtype, batch_sizes=settings.profile_batch_sizes,
            audio_s=settings.profile_audio_s,
        )  # fmt: skip
    else:
        document["skipped"].append("profile: time budget")
    document["total_s"] = round(elapsed(), 2)
    return document


def _copy_log_tail(source: Path, dest: Path) -> None:
    if source.is_file():
        data = source.read_bytes()
        dest.write_bytes(data[-LOG_TAIL_BYTES:])


def summary(document: dict[str, Any]) -> str:
    machine = document["machine"]
    lines = [
        f"# GPU benchmark, {document['date']}, commit {document['commit'][:12]}",
        "",
        f"Machine: {machine.get('gpu', machine['device'])}, torch {machine['torch']}; preset "
        f"{document['settings']['preset']}, random weights; build {document['build_s']} s, "
        f"Triton ready in {document.get('triton_ready_s')} s.",
        f"Reference: {document['reference']['rtfx']:g}x RTFx on one {document['reference']['gpu']} "
        f"({document['reference']['runtime']}).",
        "",
        "| concurrency | requests | RTFx | p50 s | p90 s | p99 s | tokens/s | achieved batch (encoder, llm) | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in document["phases"]:
        batch = p["achieved_batch_size"]
        lines.append(
            f"| {p['concurrency']} | {p['requests']} | {p['rtfx']} | {p['latency']['p50_s']} | "
            f"{p['latency']['p90_s']} | {p['latency']['p99_s']} | {p['tokens_per_s']} | "
            f"{batch.get('encoder')}, {batch.get('llm')} | {p['peak_gpu_memory_mib']} |"
        )
    profile = document.get("profile")
    if profile:
        lines += [
            "",
            f"Profile ({profile['audio_s']:g} s clips, {profile['prompt_tokens']} prompt tokens; preprocess "
            f"{profile['preprocess_ms_per_audio_s']} ms per audio second on the CPU):",
            "",
            "| batch | encoder ms | adapter ms | prefill ms | decode ms/step |",
            "|---|---|---|---|---|",
        ]
        for batch, f in profile["batches"].items():
            lines.append(
                f"| {batch} | {f['encoder_ms']} | {f['adapter_ms']} | {f['prefill_ms']} | {f['decode_ms_per_step']} |"
            )
    if document["skipped"]:
        lines += ["", "Skipped: " + "; ".join(document["skipped"])]
    return "\n".join(lines) + "\n"


def save(document: dict[str, Any], out: Path) -> None:
    (out / JSON_FILE).write_text(json.dumps(document, indent=2) + "\n")
    (out / SUMMARY_FILE).write_text(summary(document))
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False, timeout=30)
        (out / SMI_FILE).write_text(smi.stdout)


def main(argv: list[str]) -> int:
    settings = GpuBenchSettings(_cli_parse_args=argv)  # type: ignore[call-arg]
    document = run(settings)
    save(document, settings.out)
    print(summary(document))
    return 0
