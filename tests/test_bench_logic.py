"""Unit tests of the benchmark's pure parts: percentiles, Triton metric parsing, /proc
parsing, merging runs, the result keys and targets. No servers, no audio."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from bench import report, triton_metrics
from bench.load import LoadResult, Timed, merge, run_load
from bench.machine import cpu_model, memory_gib
from bench.proc_memory import parse_status
from bench.runner import headline_keys
from bench.stats import percentile, ratio, rtfx

METRICS_BEFORE = """\
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="llm",version="1"} 10
nv_inference_count{model="encoder",version="1"} 10
nv_inference_count{model="canary_qwen",version="1"} 10
# HELP nv_inference_exec_count Number of model executions performed
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="llm",version="1"} 10
nv_inference_exec_count{model="encoder",version="1"} 5
nv_inference_exec_count{model="canary_qwen",version="1"} 10
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="encoder",version="1"} 10
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="encoder",version="1"} 1000
# HELP nv_gpu_utilization GPU utilization rate
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="x"} 0.5
"""

METRICS_AFTER = (
    METRICS_BEFORE.replace('"llm",version="1"} 10', '"llm",version="1"} 42')
    .replace('nv_inference_count{model="encoder",version="1"} 10', 'nv_inference_count{model="encoder",version="1"} 42')
    .replace('nv_inference_exec_count{model="encoder",version="1"} 5', 'nv_inference_exec_count{model="encoder",version="1"} 9')
    .replace('request_success{model="encoder",version="1"} 10', 'request_success{model="encoder",version="1"} 42')
    .replace("queue_duration_us{model=\"encoder\",version=\"1\"} 1000", "queue_duration_us{model=\"encoder\",version=\"1\"} 65000")
)


@pytest.mark.parametrize("q", [0, 1, 37.5, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [float(v) for v in np.random.default_rng(3).exponential(100, size=57)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_small_and_invalid() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_rtfx_and_ratio() -> None:
    assert rtfx(300.0, 1.5) == 200.0
    with pytest.raises(ValueError):
        rtfx(1.0, 0.0)
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None


def test_parse_triton_metrics_per_model() -> None:
    snapshot = triton_metrics.parse(METRICS_BEFORE)
    assert snapshot["encoder"][triton_metrics.INFERENCE_COUNT] == 10
    assert snapshot["encoder"][triton_metrics.EXEC_COUNT] == 5
    assert "nv_gpu_utilization" not in {name for values in snapshot.values() for name in values}


def test_achieved_batch_size_from_deltas() -> None:
    change = triton_metrics.delta(triton_metrics.parse(METRICS_BEFORE), triton_metrics.parse(METRICS_AFTER))
    # encoder: 32 more requests in 4 more executions; llm: 32 in 32; canary_qwen idle.
    assert triton_metrics.achieved_batch_sizes(change) == {"encoder": 8.0, "llm": 1.0}
    assert triton_metrics.mean_ms_per_request(change, triton_metrics.QUEUE_US) == {"encoder": 2.0}


def test_parse_proc_status_in_bytes() -> None:
    text = "Name:\tpython\nVmPeak:\t  200 kB\nVmHWM:\t   150 kB\nVmRSS:\t   100 kB\nThreads:\t4\n"
    assert parse_status(text) == {"VmPeak": 204800, "VmHWM": 153600, "VmRSS": 102400}


def test_machine_facts_parsing() -> None:
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n") == "AMD EPYC 9B14"
    assert memory_gib("MemTotal:       25165824 kB\n") == 24.0


def test_run_load_keeps_concurrency_and_counts() -> None:
    in_flight = 0
    peak = 0

    async def call(job: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return job

    items = [Timed(job, 2.0) for job in range(10)]
    result = asyncio.run(run_load(items, call, 4))
    assert peak == 4
    assert result.requests == 10 and len(result.latencies_s) == 10
    assert result.audio_s == 20.0 and result.tokens == sum(range(10))


def test_run_load_fails_on_an_error() -> None:
    async def call(job: int) -> int:
        raise RuntimeError("gateway answered 500")

    with pytest.raises(BaseExceptionGroup):
        asyncio.run(run_load([Timed(1, 1.0)], call, 2))


def _load(wall: float, latencies: list[float], audio: float = 100.0) -> LoadResult:
    return LoadResult(concurrency=16, requests=len(latencies), audio_s=audio, wall_s=wall, latencies_s=latencies, tokens=0)


def test_merge_sums_walls_and_keeps_latencies() -> None:
    merged = merge([_load(2.0, [1.0, 2.0]), _load(3.0, [3.0])])
    assert merged.wall_s == 5.0 and merged.audio_s == 200.0 and merged.latencies_s == [1.0, 2.0, 3.0]


def test_headline_keys_intervals_targets_and_written_json(tmp_path: Path) -> None:
    c1 = [LoadResult(1, 4, 100.0, wall, [2.5] * 4, 0) for wall in (10.0, 10.2, 9.8)]
    gateway = [_load(wall, [1.0, 2.0, 3.0]) for wall in (4.0, 4.1, 3.9)]
    triton = [_load(wall, [1.0]) for wall in (3.9, 4.0, 3.8)]
    keys, intervals = report.headline(16, c1, gateway, triton)
    document: dict[str, object] = {**keys, "intervals": intervals}
    assert document["rtfx_gateway_c1"] == 10.0
    assert document["rtfx_gateway_c16"] == 25.0
    assert document["batching_gain_c16"] == 2.5
    assert document["gateway_overhead_ratio_c16"] == pytest.approx(12.0 / 11.7, abs=1e-3)
    assert document["latency_ms_p50_c16"] == 2000.0
    low, high = intervals["batching_gain_c16"]
    assert low <= 2.5 <= high and high - low < 0.2
    document.update({"preprocess_rtfx_per_core": 1500.0, "long_audio_peak_rss_growth_mb": 120.0})
    checks = report.check_targets(document, 16)
    assert checks["batching_gain_c16"]["met"] is True and checks["batching_gain_c16"]["ci95"] == [low, high]
    assert checks["preprocess_rtfx_per_core"]["met"] is False
    assert checks["long_audio_peak_rss_growth_mb"]["met"] is True

    document["targets"] = checks
    now = dt.datetime(2025, 11, 25, 18, 30, 5, tzinfo=dt.timezone.utc)
    latest, copy = report.write(document, tmp_path, report.dated_name(now, on_gpu=False))
    assert copy.name == "cpu-20251125T183005Z.json"
    assert json.loads(latest.read_text()) == json.loads(copy.read_text())
    table = report.table(document, headline_keys(16))
    assert "| `preprocess_rtfx_per_core` | 1,500.0 |  | >= 2000 (MISSED) |" in table
    assert f"| `batching_gain_c16` | 2.500 | {low:.3f} - {high:.3f} | >= 2 (met) |" in table


def test_a_section_joins_latest_json_and_keeps_the_rest(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 1, 23, 5, 9, tzinfo=dt.timezone.utc)
    latest, copy = report.write_section("cues", {"cue_max_s": 6.5}, tmp_path, now)
    fresh = json.loads(latest.read_text())
    assert copy.name == "cues-20261201T230509Z.json" and "machine" in fresh  # a new file: the machine's facts
    assert fresh["cues"]["cue_max_s"] == 6.5 and fresh["cues"]["date"] == "2026-12-01T23:05:09+00:00"
    assert fresh["cues"]["commit"]
    latest, copy = report.write_section("wer", {"long_wer": 0.5}, tmp_path, now)
    both = json.loads(latest.read_text())
    assert both["cues"] == fresh["cues"] and both["wer"]["long_wer"] == 0.5
    assert json.loads(copy.read_text()) == both and copy.name == "wer-20261201T230509Z.json"
    missed = report.check(report.Target("cue_max_s", "<=", 6.0), 6.5)
    assert missed == {"target": "<= 6", "measured": 6.5, "met": False, "verdict": "missed"}
    assert report.check(report.Target("x", ">=", 1.0), None)["verdict"] is None


def test_a_full_run_replaces_its_own_figures_and_keeps_the_other_commands_sections(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 1, 23, 5, 9, tzinfo=dt.timezone.utc)
    report.write_section("realtime", {"p95_ms": 640.0}, tmp_path, now)
    report.write_run({"rtfx_gateway_c1": 100.0, "date": "old"}, tmp_path, "cpu-1.json")
    latest, copy = report.write_run({"rtfx_gateway_c1": 115.0, "date": "new"}, tmp_path, "cpu-2.json")
    merged = json.loads(latest.read_text())
    assert merged["rtfx_gateway_c1"] == 115.0 and merged["date"] == "new"
    assert merged["realtime"]["p95_ms"] == 640.0
    assert json.loads(copy.read_text()) == {"rtfx_gateway_c1": 115.0, "date": "new"}  # the run alone


def test_a_command_runs_writes_its_section_then_shows_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cues import CuesSettings

    settings = CuesSettings(model_dir=tmp_path / "model", results_dir=tmp_path / "results")
    shown: list[dict[str, object]] = []

    def run(s: CuesSettings) -> dict[str, object]:
        return {"cue_max_s": 6.5, "clips": s.clips}

    def show(section: dict[str, object], _: CuesSettings) -> None:
        shown.append(section)

    assert report.run_section("cues", settings, run, show) == 2
    assert not shown and "run `make model` first" in capsys.readouterr().out
    (tmp_path / "model" / "model_repository").mkdir(parents=True)
    assert report.run_section("cues", settings, run, show) == 0
    assert shown == [{"cue_max_s": 6.5, "clips": 8}]
    written = json.loads((tmp_path / "results" / "latest.json").read_text())["cues"]
    assert written["clips"] == 8 and set(report.SECTION_FACTS) <= set(written)
    assert "written: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "name", "prefix"),
    [
        ("bench.settings", "BenchSettings", "BENCH_"),
        ("bench.settings", "SoakSettings", "BENCH_SOAK_"),
        ("bench.cues", "CuesSettings", "BENCH_CUES_"),
        ("bench.wer", "WerSettings", "BENCH_WER_"),
        ("bench.realtime", "RealtimeBenchSettings", "BENCH_REALTIME_"),
    ],
)
def test_every_command_reads_the_shared_fields_under_its_own_prefix(
    module: str, name: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    cls = getattr(importlib.import_module(module), name)
    for variable in ("MODEL_DIR", f"{prefix}MODEL_DIR", f"{prefix}WORK_DIR", "WORK_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WORK_DIR", "/not-mine")  # unprefixed: ignored
    assert cls(_cli_parse_args=[]).cache_dir == cls(_cli_parse_args=[]).model_dir / "bench"
    monkeypatch.setenv(f"{prefix}MODEL_DIR", "/prefixed")
    monkeypatch.setenv(f"{prefix}WORK_DIR", "/work")
    settings = cls(_cli_parse_args=[])
    assert settings.model_dir == Path("/prefixed") and settings.cache_dir == Path("/work")
    monkeypatch.delenv(f"{prefix}MODEL_DIR")
    monkeypatch.setenv("MODEL_DIR", "/from-make")  # the Makefile exports it for every target
    assert cls(_cli_parse_args=[]).repository_dir == Path("/from-make/model_repository")
    flag = f"--{prefix.lower().replace('_', '-')}model-dir"
    for argv in (["--model-dir", "/cli"], [flag, "/cli"]):
        assert cls(_cli_parse_args=argv).model_dir == Path("/cli")
    assert cls(_cli_parse_args=["--model-dir", "/cli"]).missing_repository() == (
        "no model repository at /cli/model_repository: run `make model` first"
    )


def test_a_target_is_met_only_when_the_whole_interval_is_on_its_side() -> None:
    at_most = report.Target("x", "<=", 1.05)
    assert at_most.verdict(1.02, [1.01, 1.04]) == "met"
    assert at_most.verdict(1.04, [1.02, 1.07]) == "undecided" and at_most.met(1.04, [1.02, 1.07]) is False
    assert at_most.verdict(1.10, [1.06, 1.14]) == "missed"
    at_least = report.Target("y", ">=", 2.0)
    assert at_least.verdict(2.1, [2.01, 2.2]) == "met"
    assert at_least.verdict(2.1, [1.9, 2.2]) == "undecided"
    assert at_least.verdict(2.1) == "met" and at_least.verdict(None) is None


def test_bootstrap_intervals_cover_the_truth_and_shrink_with_rounds() -> None:
    from bench.stats import rate_interval, rate_ratio_interval

    rng = np.random.default_rng(1)
    walls = [list(10.0 * (1 + 0.05 * rng.standard_normal(n))) for n in (6, 60)]
    narrow = [rate_interval([100.0] * len(w), w) for w in walls]
    for interval in narrow:
        assert interval.low <= 10.0 <= interval.high
    assert narrow[1].high - narrow[1].low < 0.5 * (narrow[0].high - narrow[0].low)
    # A shared drift hits both arms of a round: the paired ratio's interval stays narrow.
    drift = np.linspace(1.0, 2.0, 12)
    a = rate_ratio_interval(([100.0] * 12, list(10.0 * drift)), ([100.0] * 12, list(10.5 * drift)))
    assert a.value == pytest.approx(1.05) and a.high - a.low < 1e-9


def test_sweep_schedule_alternates_arms_abba_and_levels() -> None:
    from bench.sweep import arm_order, passes_for, schedule

    assert [arm_order(r) for r in range(4)] == [
        ("gateway", "triton"), ("triton", "gateway"), ("triton", "gateway"), ("gateway", "triton"),
    ]  # fmt: skip
    order = schedule([1, 16], 2)
    assert order[:4] == [(0, 1, "gateway"), (0, 1, "triton"), (0, 16, "gateway"), (0, 16, "triton")]
    assert order[4:] == [(1, 16, "triton"), (1, 16, "gateway"), (1, 1, "triton"), (1, 1, "gateway")]
    assert passes_for(16, 16) == 1 and passes_for(32, 16) == 2 and passes_for(1, 16) == 1


def test_cpu_plan_gives_the_client_one_cpu() -> None:
    from bench.affinity import plan

    assert plan([0, 1, 2, 3]).client == {3} and plan([0, 1, 2, 3]).services == {0, 1, 2}
    two = plan([0, 1])
    assert two.client == {1} and two.services == {0, 1} and two.shared
    assert plan([5]).client == plan([5]).services == {5}


def test_readme_block_is_replaced_between_its_markers() -> None:
    from bench.readme import BEGIN, END, splice

    text = f"# T\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n"
    assert splice(text, "new table") == f"# T\n\nbefore\n{BEGIN}\nnew table\n{END}\nafter\n"
    assert splice("no markers", "x") is None


def test_headline_keys_cover_the_issue() -> None:
    required = {
        "rtfx_gateway_c1", "rtfx_gateway_c16", "rtfx_triton_c16", "gateway_overhead_ratio_c16",
        "latency_ms_p50_c16", "latency_ms_p95_c16", "latency_ms_p99_c16", "batching_gain_c16",
        "achieved_batch_size_c16", "preprocess_rtfx_per_core", "long_audio_peak_rss_growth_mb",
        "long_audio_wall_s", "machine", "cpu_count", "date", "commit",
    }  # fmt: skip
    assert required <= set(headline_keys(16))


def test_proc_stat_parsing_survives_odd_names() -> None:
    from bench.cpu_usage import _TICKS, parse_stat

    fields = ["S", "4242"] + ["0"] * 9 + [str(3 * _TICKS), str(_TICKS)] + ["0"] * 30
    line = "777 (my (odd) name) " + " ".join(fields)
    assert parse_stat(line) == (4242, 4.0)


def test_stub_command_line_names_its_model() -> None:
    from bench.cpu_usage import cpu_delta, model_of

    stub = ["/x/backends/python/triton_python_backend_stub", "/repo/encoder/1/model.py", "shm", "1048576"]
    assert model_of(stub) == "encoder"
    assert model_of(["/usr/bin/python", "-m", "gateway"]) is None
    assert cpu_delta({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 5.5, "c": 1.0}) == {"b": 3.5, "c": 1.0}


def test_py_spy_raw_summary() -> None:
    from bench.profiling import summarize

    raw = (
        "<module> (model.py:3);execute (model.py:40);_log_mel (canary_qwen/mel.py:171) 30\n"
        "<module> (model.py:3);execute (model.py:40);_log_mel (canary_qwen/mel.py:164) 20\n"
        "<module> (model.py:3);run (onnx.py:9) 50\n"
    )
    summary = summarize(raw, rate_hz=50)
    assert summary["busy_s"] == 2.0
    assert summary["top"] == [["_log_mel (canary_qwen/mel.py)", 50.0], ["run (onnx.py)", 50.0]]
    assert summarize("", rate_hz=50) == {"busy_s": 0.0, "top": []}


def test_service_cpu_excludes_the_load_generator() -> None:
    cpu = {"gateway": 1.0, "model:llm": 2.0, "bench client": 5.0}
    assert report.service_cpu_ms_per_request(cpu, 10) == 300.0
    assert report.service_cpu_ms_per_request(cpu, 0) is None


def test_too_few_rounds_give_no_interval_and_no_verdict_of_met() -> None:
    c1 = [LoadResult(1, 4, 100.0, 10.0, [2.5] * 4, 0)]
    keys, intervals = report.headline(16, c1, [_load(4.0, [1.0])], [_load(3.9, [1.0])])
    assert keys["batching_gain_c16"] == 2.5 and intervals["batching_gain_c16"] is None
    checks = report.check_targets({**keys, "intervals": intervals}, 16)
    assert checks["batching_gain_c16"]["verdict"] == "undecided" and checks["batching_gain_c16"]["met"] is False


def test_soak_slope_tells_a_plateau_from_a_leak() -> None:
    from bench.soak import Phase, rss_slope_per_1k, verdict

    def phases(rss: list[float]) -> list[Phase]:
        return [Phase(i, 500, 500 * i, 10.0, value) for i, value in enumerate(rss)]

    # Pools fill during warm-up and phase 1, then flat: a plateau, whatever phase 1 did.
    flat = rss_slope_per_1k(phases([150.0, 230.0, 260.0, 261.0, 259.0, 260.5]))
    assert flat is not None and abs(flat.value) < 2.0 and verdict(flat, 5.0) == "plateau"
    # 10 MiB more after every 500 requests (+-1): 20 MiB per 1,000, and the interval says so.
    leak = rss_slope_per_1k(phases([150.0, 200.0, 211.0, 219.0, 231.0, 239.0]))
    assert leak is not None and leak.value == pytest.approx(19.2) and verdict(leak, 5.0) == "grows"
    assert leak.low is not None and leak.high is not None and leak.low < 19.2 < leak.high
    # This machine's idle RSS over a soak with no leak (2026-12-04): wandering, not climbing.
    wander = rss_slope_per_1k(phases([305.0, 321.6, 289.8, 279.9, 318.1, 302.1, 309.7]))
    assert wander is not None and wander.value > 5.0 and verdict(wander, 5.0) == "undecided"
    assert rss_slope_per_1k(phases([150.0, 200.0])) is None  # nothing after phase 1 to judge
    assert verdict(rss_slope_per_1k(phases([150.0, 200.0, 210.0, 220.0])), 5.0) is None  # 2 points: no interval


def test_slope_interval_covers_the_true_slope() -> None:
    """Over many noisy lines the 95 % interval holds the true slope about 95 % of the time."""
    from bench.stats import slope_interval

    rng = np.random.default_rng(3)
    xs = [0.5 * i for i in range(8)]
    covered = 0
    for _ in range(400):
        ys = [3.0 * x + rng.normal(0, 10) for x in xs]
        interval = slope_interval(xs, ys)
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= 3.0 <= interval.high
    assert 0.90 <= covered / 400 <= 0.99


def test_soak_top_growers_name_the_allocating_line(tmp_path: Path) -> None:
    import tracemalloc

    from bench.soak import heap_changes

    kept: list[bytearray] = []
    tracemalloc.start(1)
    try:
        tracemalloc.take_snapshot().dump(str(tmp_path / "first.pickle"))
        for _ in range(20):
            kept.append(bytearray(64 * 1024))  # the "leak": 1.25 MiB from this line
        tracemalloc.take_snapshot().dump(str(tmp_path / "last.pickle"))
    finally:
        tracemalloc.stop()
    growth_kib, growers = heap_changes(tmp_path / "first.pickle", tmp_path / "last.pickle")
    assert growth_kib >= 20 * 64
    assert growers[0]["where"].endswith(f"test_bench_logic.py:{_line_of('kept.append(bytearray(64 * 1024))')}")
    assert growers[0]["grew_kib"] >= 20 * 64 and growers[0]["blocks_grew"] >= 20


def _line_of(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line and "_line_of" not in line)


def test_wer_figures_read_cue_edges_to_the_millisecond() -> None:
    """`bench wer`'s pure figures: the same cues in verbose_json, SRT and VTT give the same edge
    counts (an edge at 1.5 s inside a word spoken 1.2-1.8 s is inside speech, whole seconds
    would miss it), WER per voice and stream equality come from the pairs, and live captions'
    WER from each session's transcripts against the held-out clips dealt to it."""
    from bench.realtime import SessionResult
    from bench.wer import Clip, LongRecording, figures
    from export.train.speech import HELD_OUT_VOICES

    silence = np.zeros(160, dtype=np.float32)
    clips = [Clip(voice, "pass the word", silence) for voice in (*HELD_OUT_VOICES, "en-us")]
    pairs = [("Pass the word.", "Pass the word.")] * len(clips)
    pairs[0] = ("pass a bird", "pass a word")
    long = LongRecording(silence, "pass the word pass the word", [(0.2, 1.0), (1.2, 1.8)])  # words
    cues = [(0.1, 1.5), (1.5, 1.9)]  # 1.5 lies inside the second word
    stamp = lambda t, sep: f"00:00:{int(t):02d}{sep}{round(1000 * (t % 1)):03d}"  # noqa: E731
    srt_body = "".join(f"{k + 1}\n{stamp(a, ',')} --> {stamp(b, ',')}\npass the word\n\n" for k, (a, b) in enumerate(cues))
    vtt_body = "WEBVTT\n\n" + "".join(f"{stamp(a, '.')} --> {stamp(b, '.')}\npass the word\n\n" for a, b in cues)
    verbose = {"text": "pass the word pass the word", "segments": [{"start": a, "end": b} for a, b in cues]}
    clean = {"json": "pass the word pass a word", "verbose": verbose, "srt": srt_body, "vtt": vtt_body}
    noisy = {"json": "pass the word", "verbose": {"text": "pass", "segments": [{"start": 0.1, "end": 1.9}]},
             "srt": srt_body.split("\n\n2")[0], "vtt": vtt_body}  # one SRT cue, edges 0.1 and 1.5
    # Two sessions, two held-out clips each; the second heard both clips as one turn, one word wrong.
    live = [SessionResult(utterances=2, transcripts=["Pass the word.", "pass the word"]),
            SessionResult(utterances=1, transcripts=["pass the word pass a word"], errors=["timed out"])]
    measured = {"pairs": pairs, "live": live, "long": clean, "long_pieces": "pass the word the word the word",
                "noisy": noisy}
    out = figures(clips, long, measured, sessions=2)
    assert out["realtime_wer"] == pytest.approx(round(1 / 12, 4)) and out["realtime_turns"] == 3
    assert out["realtime_sessions"] == 2 and out["realtime_clips"] == len(HELD_OUT_VOICES)
    assert out["realtime_errors"] == ["timed out"]
    assert out["segment_edges_inside_speech"] == out["srt_edges_inside_speech"] == out["vtt_edges_inside_speech"] == 2
    assert out["noisy_segment_edges_inside_speech"] == 0 and out["noisy_segments"] == 1
    assert out["noisy_srt_edges_inside_speech"] == 1 and out["noisy_srt_cues"] == 1
    assert out["noisy_long_wer"] == pytest.approx(3 / 6, abs=1e-4) and out["noisy_long_wer_cues"] == pytest.approx(5 / 6, abs=1e-4)
    assert out["short_wer_by_voice"][HELD_OUT_VOICES[0]] == pytest.approx(2 / 3, abs=1e-4)
    assert out["short_wer_held_out_voices"] == pytest.approx(round(2 / 12, 4))
    assert out["stream_equals_nonstream"] == len(clips) - 1
    assert out["long_wer"] == pytest.approx(1 / 6, abs=1e-4) and out["long_wer_cues"] == 0.0  # json, verbose_json
    assert out["long_wer_long_pieces"] == pytest.approx(2 / 6, abs=1e-4)  # json in the real model's pieces


def test_wer_live_sessions_share_the_held_out_clips_and_none_is_empty() -> None:
    from bench.wer import REFERENCE_VOICE, Clip, realtime_groups

    clips = [Clip(voice, str(k), np.zeros(1, dtype=np.float32)) for k, voice in enumerate(["a", REFERENCE_VOICE, "b", "c"])]
    assert [[c.text for c in g] for g in realtime_groups(clips, 2)] == [["0", "3"], ["2"]]
    assert [[c.text for c in g] for g in realtime_groups(clips, 8)] == [["0"], ["2"], ["3"]]


def test_wer_background_noise_sits_its_snr_under_the_sound() -> None:
    """The noisy recording: noise `snr_db` under the power of the loud samples, pink (each octave
    up holds the same power, so a band's power per hertz halves) above NOISE_LOW_HZ, the speech
    itself unchanged."""
    from bench.wer import LOUD, NOISE_LOW_HZ, with_background

    rate = 16000
    samples = np.zeros(8 * rate, dtype=np.float32)
    samples[rate : 3 * rate] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)
    noisy = with_background(samples, 20.0, seed=1)
    noise = noisy.astype(np.float64) - samples
    sound = np.abs(samples) > LOUD
    assert 10 * np.log10(np.mean(samples[sound] ** 2) / np.mean(noise**2)) == pytest.approx(20.0, abs=0.01)
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / rate)
    per_hz = [power[(freqs >= f) & (freqs < 2 * f)].mean() for f in (250, 500, 1000, 2000)]
    assert all(0.35 < later / earlier < 0.65 for earlier, later in zip(per_hz, per_hz[1:]))
    assert power[freqs < NOISE_LOW_HZ].sum() < 1e-9 * power.sum()  # nothing under the microphone's roll-off
    assert not np.array_equal(with_background(samples, 20.0, seed=2), noisy)


def test_wer_long_recording_knows_where_each_word_sounds() -> None:
    """The long recording's word extents, shifted with each trimmed clip, hold every loud sample
    and start and end on one; pauses (between clips, or inside a word's span after a comma)
    lie outside them."""
    from bench.wer import LOUD, Clip, audible_words, long_recording

    rate = 16000
    clips = []
    for k in range(3):
        samples = np.zeros(rate, dtype=np.float32)
        samples[1600 + 100 * k : 7300] = 0.5  # a word running 6 ms into the next one's span
        samples[7400:9000] = -0.5  # after a 6 ms gap, a word and then a pause in its span (a comma)
        samples[12800 : 14400 + 100 * k] = 0.5  # the last word
        words = audible_words(samples, [(0.05, 0.45), (0.45, 0.8), (0.8, 1.0)])
        assert np.allclose(words, [(0.1 + k / 160, 7300 / rate), (7400 / rate, 9000 / rate), (0.8, 0.9 + k / 160)])
        clips.append(Clip(f"voice-{k}", f"clip {k}", samples, words))
    long = long_recording(clips, minutes=0.2, seed=1)
    loud = np.abs(long.samples) > LOUD
    inside = np.zeros_like(loud)
    for a, b in long.words:
        start, end = round(a * rate), round(b * rate)
        assert loud[start] and loud[end - 1]
        inside[start:end] = True
    assert np.array_equal(loud, inside & loud) and not inside[~loud].any()
    assert len(long.words) == 3 * long.text.count("clip")  # three words a clip
