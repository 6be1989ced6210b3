"""Triton's Prometheus metrics: parse the text format, take deltas, achieved batch sizes.

Achieved batch size of a model = requests it served / executions it ran
(`nv_inference_count` / `nv_inference_exec_count`), over the deltas of one phase.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

INFERENCE_COUNT = "nv_inference_count"
EXEC_COUNT = "nv_inference_exec_count"
REQUEST_SUCCESS = "nv_inference_request_success"
QUEUE_US = "nv_inference_queue_duration_us"
COMPUTE_INFER_US = "nv_inference_compute_infer_duration_us"
REQUEST_US = "nv_inference_request_duration_us"
COUNTERS = (INFERENCE_COUNT, EXEC_COUNT, REQUEST_SUCCESS, QUEUE_US, COMPUTE_INFER_US, REQUEST_US)

# model -> metric -> value (summed over versions)
Snapshot = dict[str, dict[str, float]]


def parse(text: str, names: tuple[str, ...] = COUNTERS) -> Snapshot:
    """Per-model values of the wanted counters from /metrics text."""
    wanted = set(names)
    snapshot: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser names counter samples `<family>_total`; Triton's own names lack it.
            name = sample.name.removesuffix("_total") if family.type == "counter" else sample.name
            if name not in wanted or "model" not in sample.labels:
                continue
            per_model = snapshot.setdefault(sample.labels["model"], {})
            per_model[name] = per_model.get(name, 0.0) + float(sample.value)
    return snapshot


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """after - before for every model and counter present after."""
    return {
        model: {name: value - before.get(model, {}).get(name, 0.0) for name, value in values.items()}
        for model, values in after.items()
    }


def achieved_batch_sizes(change: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean requests per execution for every model that executed in the phase."""
    sizes: dict[str, float] = {}
    for model, values in sorted(change.items()):
        executions = values.get(EXEC_COUNT, 0.0)
        if executions > 0:
            sizes[model] = round(values.get(INFERENCE_COUNT, 0.0) / executions, 3)
    return sizes


def mean_ms_per_request(change: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, float]:
    """Mean of a cumulative duration counter per successful request, in ms, per model."""
    means: dict[str, float] = {}
    for model, values in sorted(change.items()):
        requests = values.get(REQUEST_SUCCESS, 0.0)
        if requests > 0 and metric in values:
            means[model] = round(values[metric] / requests / 1000.0, 3)
    return means
