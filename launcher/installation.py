"""Find a tritonserver and prepare what it needs to run the python backend.

Two installations are supported:
- NVIDIA's ``tritonserver`` container: the binary is on PATH and brings its
  own backends (python, tensorrt, tensorrtllm, ...).
- The ``nvidia-pytriton`` wheel: it bundles tritonserver with the python
  backend but must first be copied to a writable folder with the python
  backend stub that matches this interpreter (see notes/triton.md).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_WHEEL = "nvidia-pytriton"
_STUB = "triton_python_backend_stub"


class TritonNotFoundError(RuntimeError):
    """No usable tritonserver on this machine."""


@dataclass(frozen=True)
class TritonInstallation:
    """A runnable tritonserver: the binary, its extra flags and environment."""

    binary: Path
    backend_dir: Path | None = None
    cache_dir: Path | None = None
    library_dirs: tuple[Path, ...] = field(default_factory=tuple)

    def args(self) -> list[str]:
        args: list[str] = []
        if self.backend_dir is not None:
            args.append(f"--backend-directory={self.backend_dir}")
        if self.cache_dir is not None:
            args.append(f"--cache-directory={self.cache_dir}")
        return args

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` plus the library path and this interpreter's bin first on PATH.

        The python backend's stub takes its ``sys.prefix`` from the first
        python on PATH, so models see this virtual environment's packages.
        """
        env = dict(base)
        env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
        if self.library_dirs:
            libs = [str(d) for d in self.library_dirs]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libs, env.get("LD_LIBRARY_PATH")]))
        return env


def find_installation(binary: Path | None, work_dir: Path) -> TritonInstallation:
    """The configured binary, else tritonserver on PATH, else the pytriton wheel's."""
    if binary is not None:
        if not os.access(binary, os.X_OK):
            raise TritonNotFoundError(f"TRITON_BINARY={binary} is not an executable file")
        return TritonInstallation(binary=binary)
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstallation(binary=Path(on_path))
    return prepare_wheel_installation(work_dir)


def prepare_wheel_installation(work_dir: Path) -> TritonInstallation:
    """Copy the wheel's tritonserver under ``work_dir`` once and return it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFoundError(
            "no tritonserver: not on PATH and the nvidia-pytriton wheel is not installed "
            "(pip install nvidia-pytriton, or run inside NVIDIA's tritonserver container)"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    source = package_dir / "tritonserver"
    libs = package_dir.parent / "nvidia_pytriton.libs"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / python / _STUB
    if not stub.is_file():
        raise TritonNotFoundError(f"the nvidia-pytriton wheel has no python backend stub for Python {python}")

    version = importlib.metadata.version(_WHEEL)
    target = work_dir / f"tritonserver-{version}-py{python}"
    if not (target / ".complete").exists():
        _copy_atomically(source, stub, target)
    return TritonInstallation(
        binary=target / "bin" / "tritonserver",
        backend_dir=target / "backends",
        cache_dir=target / "caches",
        library_dirs=(*_libpython_dir(), libs),
    )


def _libpython_dir() -> tuple[Path, ...]:
    """This interpreter's shared libpython folder, if it has one.

    The stub links ``libpython3.X.so.1.0`` by name; found in the system folder
    it may be an older patch release than this interpreter, whose stdlib
    extensions (``_ssl`` ...) then fail on missing symbols. Listed first, the
    interpreter's own library wins.
    """
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return ()
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and (Path(libdir) / library).exists():
        return (Path(libdir),)
    return ()


def _copy_atomically(source: Path, stub: Path, target: Path) -> None:
    """Copy into a temporary sibling, then rename: concurrent launchers never see half a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tree = staging / "tree"
        shutil.copytree(source, tree, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
        shutil.copy2(stub, tree / "backends" / "python" / _STUB)
        (tree / ".complete").touch()
        if target.exists() and not (target / ".complete").exists():
            shutil.rmtree(target)  # an interrupted copy from before the rename was atomic
        try:
            tree.rename(target)
        except OSError:
            # Another launcher finished first (target exists and is not empty).
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
