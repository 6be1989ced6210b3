"""The endpoints the deployment files rely on, exercised on real servers: the session's
tritonserver (cpu tier) and the gateway started exactly as its image starts it.

Probe and health-check paths come from the rendered Helm chart, compose.yaml and the
Dockerfiles; metric names from the Grafana dashboard and the autoscaling rule."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.gateway import GatewayProcess, _wait_live, wait_ready
from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
CHART = ROOT / "helm" / "canary-qwen"


def dockerfile_instruction(dockerfile: Path, keyword: str) -> str:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    (line,) = [l for l in text.splitlines() if l.startswith(keyword + " ")][-1:]
    return line.removeprefix(keyword + " ").strip()


def healthcheck_command(dockerfile: Path) -> list[str]:
    """The HEALTHCHECK's exec-form command."""
    healthcheck = dockerfile_instruction(dockerfile, "HEALTHCHECK")
    return list(json.loads(healthcheck[healthcheck.index("CMD ") + 4:]))


def chart_probe_paths(container_name: str) -> set[str]:
    helm = ROOT / ".tools" / "helm"
    if not helm.exists():
        pytest.skip("helm not installed: run `make tools`")
    text = subprocess.run(
        [str(helm), "template", "rel", str(CHART)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    paths: set[str] = set()
    for doc in yaml.safe_load_all(text):
        if doc and doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["name"] == container_name:
                    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                        if probe in c:
                            paths.add(c[probe]["httpGet"]["path"])
    assert paths
    return paths


def compose_service(name: str) -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"][name]


# ---- Triton -----------------------------------------------------------------------

def test_triton_answers_the_chart_probes(triton_server: Any) -> None:
    paths = chart_probe_paths("triton")
    assert paths == {"/v2/health/ready", "/v2/health/live"}
    for path in paths:
        assert httpx.get(triton_server.http_url + path, timeout=10).status_code == 200, path


def test_triton_image_healthcheck_passes_on_a_ready_server(triton_server: Any) -> None:
    command = healthcheck_command(DOCKER / "triton.Dockerfile")
    port = triton_server.http_url.rsplit(":", 1)[1]
    env = {**os.environ, "TRITON_HTTP_PORT": port}
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # ... and fails where nothing listens: the check can fail.
    env["TRITON_HTTP_PORT"] = str(free_port())
    assert subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode != 0


def test_triton_compose_healthcheck_path_is_real(triton_server: Any) -> None:
    test = " ".join(compose_service("triton")["healthcheck"]["test"])
    (path,) = re.findall(r"http://127\.0\.0\.1:\d+(/[^'\" ]+)", test)
    assert httpx.get(triton_server.http_url + path, timeout=10).status_code == 200


def test_triton_exports_the_metrics_the_dashboard_and_autoscaler_use(triton_server: Any) -> None:
    text = httpx.get(f"{triton_server.metrics_url}", timeout=10).text
    exported = set(re.findall(r"^(nv_[a-z_]+)", text, re.MULTILINE))
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "canary-qwen.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"\bnv_[a-z_]+", t["expr"])}
    used |= set(re.findall(r"\bnv_inference_[a-z_]+", (CHART / "values-production.yaml").read_text()))
    # GPU metrics (nv_gpu_*) exist only on a machine with a GPU; none here.
    checkable = {m for m in used if not m.startswith("nv_gpu_")}
    assert "nv_inference_queue_duration_us" in checkable
    assert checkable <= exported, checkable - exported


# ---- gateway, started like its image starts it ---------------------------------------------

@pytest.fixture(scope="module")
def image_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway image's CMD with the image's ENV and WORKDIR, run here (loopback, free port)."""
    dockerfile = DOCKER / "gateway.Dockerfile"
    cmd = json.loads(dockerfile_instruction(dockerfile, "CMD"))
    assert cmd[0] == "python"
    image_env = dict(re.findall(r"(\w+)=(\S+)", dockerfile_instruction(dockerfile, "ENV")))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({k: v for k, v in image_env.items() if k.startswith(("GATEWAY_", "PYTHON"))})
    env.update({"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "GATEWAY_TRITON__URL": triton_server.grpc_url})
    log_path = tmp_path_factory.mktemp("image-gateway") / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, *cmd[1:]], cwd=dockerfile_instruction(dockerfile, "WORKDIR"),
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    gateway = GatewayProcess(base_url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_live(gateway, 60)
        wait_ready(gateway.base_url)
        yield gateway
    finally:
        gateway.stop()


def test_gateway_image_command_serves_the_chart_probes(image_gateway: GatewayProcess) -> None:
    paths = chart_probe_paths("gateway")
    assert paths == {"/health/ready", "/health/live"}
    for path in paths:
        assert httpx.get(image_gateway.base_url + path, timeout=10).status_code == 200, path


def test_gateway_image_and_compose_healthchecks_pass(image_gateway: GatewayProcess) -> None:
    port = image_gateway.base_url.rsplit(":", 1)[1]
    command = healthcheck_command(DOCKER / "gateway.Dockerfile")
    env = {**os.environ, "GATEWAY_PORT": port}
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    compose_test = compose_service("gateway")["healthcheck"]["test"]
    code = compose_test[compose_test.index("-c") + 1]
    code = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", code)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode == 0


def test_gateway_image_command_drains_on_sigterm(image_gateway: GatewayProcess) -> None:
    """The image's exec-form CMD makes uvicorn PID 1: SIGTERM reaches it and it shuts down gracefully."""
    # uvicorn re-raises the signal after its graceful shutdown: exit status "killed by SIGTERM".
    assert image_gateway.stop(timeout=40) in (0, -signal.SIGTERM)
    log = image_gateway.log_text()
    assert "Shutting down" in log and "Finished server process" in log
