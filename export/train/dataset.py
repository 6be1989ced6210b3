"""Synthetic speech shards for training: utterances of 1-10 sentences, log-mel features, token ids.

Each shard is one `.npz` holding log-mel frames (float16, what the serving preprocessor computes:
canary_qwen.mel.LogMel with the checkpoint's filterbank), per-utterance frame offsets and lengths,
and the target token ids. Shards are written under a temporary name and renamed, so a reader
only ever sees whole shards; a generator that is stopped resumes at the first missing shard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canary_qwen.mel import LogMel
from export.train.speech import SAMPLE_RATE, Voice, augment, random_voice, silence, speak

MAX_UTTERANCE_SECONDS = 30.0
SHARD_SIZE = 256


class Encoder:
    """Text -> token ids (the Qwen3 tokenizer, no special tokens)."""

    def __init__(self) -> None:
        from canary_qwen.tokenizer import build_tokenizer

        self._tokenizer = build_tokenizer()

    def __call__(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # float32, 16 kHz
    text: str
    # Where each sentence's speech lies in `audio`, in seconds (for cue and cut checks).
    spans: tuple[tuple[float, float], ...]


def compose(sentences: Sequence[str], voice: Voice, rng: np.random.Generator) -> Utterance:
    """The sentences spoken by one voice with pauses between them, and silence around."""
    parts = [silence(rng.uniform(0.05, 0.6), rng)]
    spans = []
    at = parts[0].size
    for i, sentence in enumerate(sentences):
        if i:
            gap = silence(rng.uniform(0.15, 0.9), rng)
            parts.append(gap)
            at += gap.size
        speech = speak(sentence, voice)
        parts.append(speech)
        spans.append((at / SAMPLE_RATE, (at + speech.size) / SAMPLE_RATE))
        at += speech.size
    parts.append(silence(rng.uniform(0.05, 0.6), rng))
    return Utterance(np.concatenate(parts), " ".join(sentences), tuple(spans))


def _sentence_count(rng: np.random.Generator) -> int:
    roll = rng.random()
    if roll < 0.7:
        return 1
    if roll < 0.94:
        return int(rng.integers(2, 4))
    return int(rng.integers(4, 9))


def random_utterance(train: Sequence[str], rng: np.random.Generator) -> Utterance:
    voice = random_voice(rng)
    count = _sentence_count(rng)
    sentences = [train[int(i)] for i in rng.integers(len(train), size=count)]
    # espeak speaks about 2.5 words a second at 160 wpm: keep the whole under the cap.
    budget = MAX_UTTERANCE_SECONDS * voice.words_per_minute / 60 * 0.85
    kept: list[str] = []
    for s in sentences:
        if kept and sum(len(k.split()) for k in kept) + len(s.split()) > budget:
            break
        kept.append(s)
    utterance = compose(kept, voice, rng)
    if utterance.audio.size > MAX_UTTERANCE_SECONDS * SAMPLE_RATE and len(kept) > 1:
        return compose(kept[:1], voice, rng)
    return utterance


def write_shard(path: Path, mels: list[np.ndarray], tokens: list[list[int]], texts: list[str]) -> None:
    lengths = np.array([m.shape[1] for m in mels], dtype=np.int32)
    token_lengths = np.array([len(t) for t in tokens], dtype=np.int32)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        mel=np.concatenate(mels, axis=1).astype(np.float16),
        lengths=lengths,
        tokens=np.concatenate([np.asarray(t, dtype=np.int32) for t in tokens]),
        token_lengths=token_lengths,
        texts=np.array(texts),
    )
    os.replace(partial, path)


@dataclass
class Shard:
    mel: np.ndarray  # float16 [features, total_frames]
    offsets: np.ndarray
    lengths: np.ndarray
    tokens: list[np.ndarray]
    texts: list[str]

    @classmethod
    def load(cls, path: Path) -> Shard:
        with np.load(path) as data:
            lengths = data["lengths"]
            token_lengths = data["token_lengths"]
            flat = data["tokens"]
            cuts = np.concatenate(([0], np.cumsum(token_lengths)))
            return cls(
                mel=data["mel"],
                offsets=np.concatenate(([0], np.cumsum(lengths)[:-1])),
                lengths=lengths,
                tokens=[flat[cuts[i] : cuts[i + 1]] for i in range(len(token_lengths))],
                texts=[str(t) for t in data["texts"]],
            )

    def features(self, i: int) -> np.ndarray:
        return self.mel[:, self.offsets[i] : self.offsets[i] + self.lengths[i]]


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.npz"


def generate_shards(
    directory: Path, train: Sequence[str], logmel: LogMel, seed: int, start: int, stop: int
) -> None:
    """Write shards [start, stop) that are not there yet; shard i depends only on (seed, i)."""
    directory.mkdir(parents=True, exist_ok=True)
    encode = Encoder()
    for index in range(start, stop):
        path = shard_path(directory, index)
        if path.exists():
            continue
        rng = np.random.default_rng([seed, index])
        mels, tokens, texts = [], [], []
        for _ in range(SHARD_SIZE):
            utterance = random_utterance(train, rng)
            audio, _ = augment(utterance.audio, rng)
            mel, length = logmel([audio])
            mels.append(mel[0, :, : int(length[0])])
            tokens.append(encode(utterance.text))
            texts.append(utterance.text)
        write_shard(path, mels, tokens, texts)
