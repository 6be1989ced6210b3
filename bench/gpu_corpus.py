"""The benchmark corpus (bench/corpus.py) carried to a machine without espeak-ng and sox.

`save_corpus` writes each clip's 16 kHz wav and corpus.json (names, texts) here (`python -m bench
gpu-payload`); `load_corpus` reads them back as the same Clips there (about 9 MB in all).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.corpus import SAMPLE_RATE, Clip, build_corpus, read_wav

INDEX = "corpus.json"


def save_corpus(clips: list[Clip], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        (out / f"{clip.name}.wav").write_bytes(clip.wav_bytes)
    index = [{"name": clip.name, "text": clip.text, "file": f"{clip.name}.wav"} for clip in clips]
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return out


def load_corpus(directory: Path) -> list[Clip]:
    clips = []
    for entry in json.loads((directory / INDEX).read_text()):
        path = directory / entry["file"]
        samples, rate = read_wav(path)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
        clips.append(Clip(entry["name"], entry["text"], samples, path.read_bytes(), path))
    return clips


def corpus(directory: Path | None, cache_dir: Path) -> list[Clip]:
    """The carried corpus when `directory` holds one, else synthesized here (espeak-ng + sox)."""
    if directory is not None and (directory / INDEX).is_file():
        return load_corpus(directory)
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(f"no {INDEX} in {directory} and no espeak-ng: carry the corpus (bench/README.md)")
    return build_corpus(cache_dir)

