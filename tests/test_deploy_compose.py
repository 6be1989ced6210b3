"""docker/compose.yaml for one GPU host, checked offline: dclint (compose-spec schema
and best practices), then the facts: GPU reservations, health-gated start order, one
shared model volume, ports and settings equal to the code's, and the monitoring
profile (Prometheus targets, Grafana provisioning, a dashboard on real metric names)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "canary-qwen.json"


def _dclint() -> str:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "dclint"
    found = str(local) if local.exists() else shutil.which("dclint")
    if found is None:
        pytest.skip("dclint not installed: run `make tools` (npm package dclint)")
    return found


def dclint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_dclint(), "--no-color", "-c", str(DOCKER / "dclint.yaml"), str(path)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def healthcheck_url(service: dict[str, Any]) -> str:
    (url,) = re.findall(r"http://[^'\" ]+", " ".join(service["healthcheck"]["test"]))
    return url


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service["deploy"]["resources"]["reservations"]["devices"]


# ---- the linter ---------------------------------------------------------------------

def test_dclint_passes() -> None:
    result = dclint(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dclint_rejects_a_schema_violation(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: service_hungry", 1))
    result = dclint(broken)
    assert result.returncode != 0
    assert "invalid-schema" in result.stdout


# ---- services and start order ------------------------------------------------------------

def test_services_and_profiles(services: dict[str, Any]) -> None:
    assert set(services) == {"export", "triton", "gateway", "prometheus", "grafana"}
    for name in ("export", "triton", "gateway"):
        assert "profiles" not in services[name], f"{name} must start by default"
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]


def test_export_and_triton_reserve_the_gpu(services: dict[str, Any]) -> None:
    for name in ("export", "triton"):
        (device,) = gpu_devices(services[name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert "count" in device or "device_ids" in device
    assert "deploy" not in services["gateway"], "the gateway needs no GPU"
    # Engines are built for one GPU: the export job and Triton reserve the same device.
    assert gpu_devices(services["export"]) == gpu_devices(services["triton"])


def test_start_order_is_gated_on_health(services: dict[str, Any]) -> None:
    assert services["triton"]["depends_on"] == {"export": {"condition": "service_completed_successfully"}}
    assert services["gateway"]["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert services["export"].get("restart") == "no"
    assert "depends_on" not in services["export"]
    for name in ("triton", "gateway"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["retries"] >= 1
    # Engine loading takes minutes: the health check must not give up before it is done.
    assert services["triton"]["healthcheck"]["start_period"] in {"20m", "30m"}


def test_export_writes_and_triton_reads_one_shared_model_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert "models" in compose["volumes"]
    assert "models:/models" in services["export"]["volumes"]
    assert "models:/models:ro" in services["triton"]["volumes"]
    export_env, triton_env = services["export"]["environment"], services["triton"]["environment"]
    assert export_env["REPOSITORY_DIR"] == triton_env["REPOSITORY_DIR"]
    assert Path(triton_env["REPOSITORY_DIR"]).is_relative_to("/models")
    assert services["export"]["command"] == ["export"]
    assert services["triton"]["command"] == ["serve"]
    assert triton_env["EXPORT_ON_START"] == "false"  # one writer: the export job
    assert services["triton"]["shm_size"]
    # Hub credentials reach the export job only.
    assert "HF_TOKEN" in export_env and not any(k.startswith(("HF_CHECKPOINT", "HF_TOKEN")) for k in triton_env)


def test_triton_settings_and_health_check_match_the_launcher(services: dict[str, Any]) -> None:
    from launcher.settings import TritonSettings

    env = services["triton"]["environment"]
    settings = TritonSettings.model_validate(
        {k.removeprefix("TRITON_").lower(): v for k, v in env.items() if k.startswith("TRITON_")}
    )
    assert settings.host == "0.0.0.0"
    defaults = TritonSettings()
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (
        defaults.http_port, defaults.grpc_port, defaults.metrics_port
    )
    assert healthcheck_url(services["triton"]) == f"http://127.0.0.1:{settings.http_port}/v2/health/ready"
    assert set(services["triton"]["expose"]) == {str(settings.http_port), str(settings.grpc_port), str(settings.metrics_port)}


def test_gateway_reaches_triton_grpc_and_its_settings_are_real(services: dict[str, Any]) -> None:
    from gateway.settings import Settings

    env = services["gateway"]["environment"]
    triton_grpc = services["triton"]["environment"]["TRITON_GRPC_PORT"]
    assert env["GATEWAY_TRITON__URL"] == f"triton:{triton_grpc}"
    for key in env:
        *groups, field = key.removeprefix("GATEWAY_").lower().split("__")
        model: Any = Settings
        for group in groups:
            model = model.model_fields[group].annotation
        assert field in model.model_fields, f"{key} is not a gateway setting"
    port = int(env["GATEWAY_PORT"])
    assert port == Settings().port
    assert services["gateway"]["ports"] == [f"0.0.0.0:${{GATEWAY_HOST_PORT:-8080}}:{port}"]
    assert healthcheck_url(services["gateway"]) == f"http://127.0.0.1:{port}/health/ready"
    # Keys come from the operator's environment (.env), never written in the file.
    assert env["GATEWAY_AUTH__API_KEYS"].startswith("${")


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", duration).groups()  # type: ignore[union-attr]
    return float(value) * (60 if unit == "m" else 1)


def test_stop_grace_outlasts_the_drains(services: dict[str, Any]) -> None:
    """Docker's default 10 s would SIGKILL requests the gateway and Triton are still finishing."""
    from gateway.settings import Settings
    from launcher.settings import TritonSettings

    assert _seconds(services["gateway"]["stop_grace_period"]) > Settings().drain_timeout_s
    assert _seconds(services["triton"]["stop_grace_period"]) > TritonSettings().exit_timeout_secs


def test_gateway_runs_locked_down(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    assert gateway["read_only"] is True
    assert any(t.startswith("/tmp") for t in gateway["tmpfs"])
    assert gateway["user"] == "10001:10001"
    assert gateway["cap_drop"] == ["ALL"]


# ---- monitoring profile ---------------------------------------------------------------

def test_prometheus_scrapes_triton_metrics_and_the_gateway(services: dict[str, Any]) -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    triton_metrics = services["triton"]["environment"]["TRITON_METRICS_PORT"]
    gateway_port = services["gateway"]["environment"]["GATEWAY_PORT"]
    assert jobs["triton"]["static_configs"][0]["targets"] == [f"triton:{triton_metrics}"]
    assert jobs["gateway"]["static_configs"][0]["targets"] == [f"gateway:{gateway_port}"]
    assert jobs["gateway"]["metrics_path"] == "/metrics"
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_provisions_the_datasource_and_dashboard(services: dict[str, Any]) -> None:
    datasources = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "canary-qwen.yaml").read_text())
    (provider,) = providers["providers"]
    mounts = services["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def test_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("rtfx", "latency percentiles", "queue time", "batch size", "errors"):
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_expressions()
    assert any("histogram_quantile(0.99" in e for e in exprs)


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_gateway_metrics_exist_in_the_gateway() -> None:
    """Every gateway_* series the dashboard queries is one the gateway's registry exports."""
    from gateway.metrics import GatewayMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {
        family.name + suffix
        for family in GatewayMetrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    used = {name for expr in dashboard_expressions() for name in re.findall(r"\bgateway_[a-z_]+", expr)}
    assert used and used <= exported, used - exported
