"""The fixed benchmark corpus: espeak-ng utterances of about 3 to 30 seconds.

Each utterance is a window of a fixed passage, so every run speaks the same words.
Files are cached under the work dir by content hash; espeak-ng writes 22.05 kHz (kept
as the decode + resample input), sox makes the 16 kHz mono 16-bit wav that clients send.
"""

from __future__ import annotations

import hashlib
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canary_qwen.mel import SAMPLE_RATE
LOUD = 0.01  # a sample above this (full scale 1) is sound: espeak-ng's pauses are digital silence
VOICE = "en-us"
WORDS_PER_MINUTE = 160
# 16 utterances, one full wave at concurrency 16: word counts from about 3 s to 30 s of speech.
UTTERANCE_WORDS: tuple[int, ...] = (9, 14, 19, 24, 29, 34, 39, 44, 50, 55, 60, 65, 70, 75, 80, 85)

PASSAGE = (
    "The harbour was quiet when the morning ferry came in, and the first passengers stepped "
    "onto the wet stones with their bags and coffee cups. A man in a green coat counted the "
    "crates of apples while two children argued about the colour of the lighthouse. Somewhere "
    "behind the market a radio played an old song about trains, and the baker opened his "
    "shutters one by one. Speech recognition systems must cope with long sentences like these, "
    "with numbers such as seventeen or four hundred and twelve, and with names like Margaret, "
    "Oliver and Rosalind. By noon the wind had turned to the west, the fishing boats were "
    "heading out past the breakwater, and the clouds over the hills promised rain before "
    "evening. The council meeting was moved to Thursday at half past six, in the library on "
    "the second floor, because the town hall was still being painted. Nobody minded very much, "
    "since the library had better chairs, a working heater and a view of the whole bay. "
    "Later that week a storm closed the road to the airport for nine hours, and the ferry "
    "company added three extra sailings to carry the stranded travellers to the mainland."
)


@dataclass(frozen=True)
class Clip:
    """One corpus utterance: 16 kHz samples, the wav clients upload, espeak's original file."""

    name: str
    text: str
    samples: np.ndarray  # float32, 16 kHz mono
    wav_bytes: bytes  # 16 kHz mono 16-bit wav
    source_path: Path  # espeak-ng's 22.05 kHz wav (decode + resample input)

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


def utterance_texts(word_counts: tuple[int, ...] = UTTERANCE_WORDS) -> list[str]:
    """Windows of the passage, each starting further in, so the texts differ."""
    words = PASSAGE.split()
    texts = []
    for index, count in enumerate(word_counts):
        start = (index * 13) % max(1, len(words) - count)
        texts.append(" ".join(words[start : start + count]))
    return texts


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM mono wav -> float32 samples in [-1, 1] and the rate."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2 or reader.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM")
        frames = reader.readframes(reader.getnframes())
        rate = reader.getframerate()
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0, rate


def synthesize(text: str, out_dir: Path) -> tuple[Path, Path]:
    """(espeak-ng's wav, the 16 kHz mono 16-bit wav), cached by content."""
    key = hashlib.sha256(f"{VOICE}|{WORDS_PER_MINUTE}|{text}".encode()).hexdigest()[:16]
    source = out_dir / f"utt-{key}.espeak.wav"
    target = out_dir / f"utt-{key}.16k.wav"
    if source.exists() and target.exists():
        return source, target
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f"utt-{key}.partial.wav"
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(partial), text],
        check=True, capture_output=True,
    )  # fmt: skip
    partial.replace(source)
    subprocess.run(
        ["sox", str(source), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(partial)],
        check=True, capture_output=True,
    )  # fmt: skip
    partial.replace(target)  # atomic: a cached file is always complete
    return source, target


def build_corpus(out_dir: Path) -> list[Clip]:
    clips = []
    for index, text in enumerate(utterance_texts()):
        source, target = synthesize(text, out_dir)
        samples, rate = read_wav(target)
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"{target}: sox wrote {rate} Hz")
        clips.append(Clip(f"utt{index:02d}", text, samples, target.read_bytes(), source))
    return clips


def audible(samples: np.ndarray) -> slice:
    """From the first to the last loud sample (empty without one): a clip trimmed to its sound."""
    loud = np.flatnonzero(np.abs(samples) > LOUD)
    return slice(int(loud[0]), int(loud[-1]) + 1) if loud.size else slice(0, 0)
