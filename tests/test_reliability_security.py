"""Security properties checked on the code, the dependency pins and the images.

The runtime ones (keys and audio never logged, request ids on every line and
response, CORS off, temporary files removed) run against a live gateway in
tests/test_reliability_hostile.py.
"""

from __future__ import annotations

import ast
import hmac
import importlib.metadata
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.auth import key_matches

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "canary-qwen-serve"


# ------------------------------------------------------------------ constant-time key comparison


def _calls(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func)


def test_auth_compares_keys_with_compare_digest_only() -> None:
    source = (REPO_ROOT / "gateway" / "auth.py").read_text()
    tree = ast.parse(source)
    assert "hmac.compare_digest" in set(_calls(tree))
    # No ordinary comparison that could short-circuit on a key: ==, != and `in` on
    # anything key-like is a timing leak.
    value_ops = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, value_ops) for op in node.ops):
            text = ast.unparse(node)
            assert not re.search(r"key|token|candidate|presented|secret", text, re.I), \
                f"non-constant-time comparison in gateway/auth.py: {text}"


def test_every_key_is_compared_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit on the first match: the time does not tell which key matched."""
    compared: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = [b"first-key", b"second-key", b"third-key"]
    for presented, expected in (("first-key", True), ("third-key", True), ("nope", False), ("", False),
                                ("first-key-longer", False), ("\u00e9t\u00e9", False)):
        compared.clear()
        assert key_matches(presented, keys) is expected
        assert compared == keys


# ------------------------------------------------------------------ dependencies pinned


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not an exact pin: {line}"
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != PROJECT]


def test_every_pyproject_dependency_is_pinned() -> None:
    pins = _constraints()
    missing = sorted({r.name for r in _project_requirements() if canonicalize_name(r.name) not in pins})
    assert not missing, f"pyproject dependencies without a pin in constraints.txt: {missing}"
    for requirement in _project_requirements():
        pinned = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned, prereleases=True), \
            f"constraints.txt pins {requirement.name}=={pinned}, outside pyproject's {requirement.specifier}"


def test_every_installed_dependency_is_pinned() -> None:
    """The whole tree a fresh `pip install -c constraints.txt -e .[all]` resolves, transitive
    dependencies included, is pinned: two installs give the same versions."""
    pins = _constraints()
    seen: set[str] = set()
    unpinned: set[str] = set()
    pending = [(r, frozenset(r.extras)) for r in _project_requirements()]
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        if name not in pins:
            unpinned.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            child = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append((child, frozenset(child.extras)))
    assert not unpinned, f"installed dependencies without a pin in constraints.txt: {sorted(unpinned)}"


def test_installed_versions_match_the_pins() -> None:
    drift = []
    for name, version in _constraints().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if canonicalize_name(installed) != canonicalize_name(version) and installed.split("+")[0] != version:
            drift.append(f"{name}: installed {installed}, pinned {version}")
    assert not drift, "\n".join(drift)


# ------------------------------------------------------------------ images run as non-root


def _final_stage_user(dockerfile: Path) -> str | None:
    user = None
    for line in dockerfile.read_text().splitlines():
        words = line.strip().split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            user = None  # a new stage starts as its base image's user (root)
        elif words[0].upper() == "USER":
            user = words[1]
    return user


@pytest.mark.parametrize("dockerfile", sorted((REPO_ROOT / "docker").glob("*Dockerfile")), ids=lambda p: p.name)
def test_image_runs_as_non_root(dockerfile: Path) -> None:
    user = _final_stage_user(dockerfile)
    assert user is not None, f"{dockerfile.name}: the final stage has no USER (runs as root)"
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), f"{dockerfile.name}: USER {user}"
    assert name.isdigit(), f"{dockerfile.name}: USER {user} should be numeric (runAsNonRoot can only verify uids)"


def test_there_are_images_to_check() -> None:
    assert len(list((REPO_ROOT / "docker").glob("*Dockerfile"))) >= 2


def test_compose_and_chart_do_not_override_to_root() -> None:
    compose = (REPO_ROOT / "docker" / "compose.yaml").read_text()
    assert not re.search(r"^\s*user:\s*[\"']?(0|root)\b", compose, re.M)
    values = (REPO_ROOT / "helm" / "canary-qwen" / "values.yaml").read_text()
    assert not re.search(r"runAsUser:\s*0\b", values) and not re.search(r"runAsNonRoot:\s*false", values)
    assert re.search(r"runAsNonRoot:\s*true", values)
