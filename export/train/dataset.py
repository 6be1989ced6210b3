"""Synthetic speech shards for training: utterances of 1-10 sentences, log-mel features, token ids.

Each shard is one `.npz` holding log-mel frames (float16, what the serving preprocessor computes:
canary_qwen.mel.LogMel with the checkpoint's filterbank), per-utterance frame offsets and lengths,
the target token ids, a token label per mel frame (-1 where no word is being spoken) from
libespeak-ng's word timings, and the phonemes espeak said (space-separated names). Shards are
written under a temporary name and renamed, so a reader only ever sees whole shards; a generator
that is stopped resumes at the first missing shard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canary_qwen.mel import LogMel, MelSettings
from export.train.corpus import shuffled_words
from export.train.speech import SAMPLE_RATE, TimedWord, Voice, augment, phonemes, random_voice, silence, speak_timed

MAX_UTTERANCE_SECONDS = 30.0
SHARD_SIZE = 256
# Utterances whose sentences are shuffles of training sentences' words: on sentences alone the
# encoder learned the corpus (greedy-CTC token error 1.8 % on trained sentences, 24.9 % on
# held-out ones, same voices, step 11,416 of 16,000).
SHUFFLED_UTTERANCES = 0.5
HOP = MelSettings().hop_length
# A frame inside a word but this far below the utterance's loudest frame is a pause: unlabelled.
QUIET_DB = -40.0


class Encoder:
    """Text -> token ids (the Qwen3 tokenizer, no special tokens)."""

    def __init__(self) -> None:
        from canary_qwen.tokenizer import build_tokenizer

        self._tokenizer = build_tokenizer()

    def __call__(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # float32, 16 kHz
    text: str
    # Where each sentence's speech lies in `audio`, in seconds (for cue and cut checks).
    spans: tuple[tuple[float, float], ...]
    words: tuple[TimedWord, ...] = ()
    phonemes: tuple[str, ...] = ()  # what espeak said, in the voice's accent


def compose(sentences: Sequence[str], voice: Voice, rng: np.random.Generator) -> Utterance:
    """The sentences spoken by one voice with pauses between them, and silence around."""
    parts = [silence(rng.uniform(0.05, 0.6), rng)]
    spans: list[tuple[float, float]] = []
    words: list[TimedWord] = []
    said: list[str] = []
    at, chars = parts[0].size, 0
    for i, sentence in enumerate(sentences):
        if i:
            gap = silence(rng.uniform(0.15, 0.9), rng)
            parts.append(gap)
            at += gap.size
            chars += 1  # the joining space
        speech, timed = speak_timed(sentence, voice)
        said += phonemes(sentence, voice)
        parts.append(speech)
        spans.append((at / SAMPLE_RATE, (at + speech.size) / SAMPLE_RATE))
        words += [w.shifted(chars, at / SAMPLE_RATE) for w in timed]
        at += speech.size
        chars += len(sentence)
    parts.append(silence(rng.uniform(0.05, 0.6), rng))
    return Utterance(np.concatenate(parts), " ".join(sentences), tuple(spans), tuple(words), tuple(said))


def frame_labels(
    utterance: Utterance, ids: list[int], offsets: list[tuple[int, int]], frames: int
) -> np.ndarray:
    """A token id per mel frame: each word's frames split evenly among the tokens that spell it
    (punctuation gets none); -1 outside words and on quiet frames inside them."""
    labels = np.full(frames, -1, dtype=np.int32)
    for word in utterance.words:
        tokens = [t for t, (a, b) in zip(ids, offsets) if a < word.end_char and b > word.start_char]
        first = min(frames, int(np.ceil(word.start_s * SAMPLE_RATE / HOP)))
        last = min(frames, int(word.end_s * SAMPLE_RATE / HOP))
        if not tokens or last <= first:
            continue
        share = np.minimum(np.arange(last - first) * len(tokens) // (last - first), len(tokens) - 1)
        labels[first:last] = np.asarray(tokens, dtype=np.int32)[share]
    n = min(frames, utterance.audio.size // HOP)
    power = np.mean(utterance.audio[: n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1) + 1e-12
    quiet = 10 * np.log10(power / power.max()) < QUIET_DB
    labels[:n][quiet] = -1
    return labels


def _sentence_count(rng: np.random.Generator) -> int:
    roll = rng.random()
    if roll < 0.7:
        return 1
    if roll < 0.94:
        return int(rng.integers(2, 4))
    return int(rng.integers(4, 9))


def utterance_sentences(
    train: Sequence[str], rng: np.random.Generator, words_per_minute: int, shuffled_share: float = SHUFFLED_UTTERANCES
) -> list[str]:
    """What one training utterance says: 1-8 sentences (or, at `shuffled_share`, shuffles of
    their words), no more than a voice at this rate says within the length cap. The text stage's
    audio sketches draw from here too, so the base reads what the speech holds."""
    count = _sentence_count(rng)
    sentences = [train[int(i)] for i in rng.integers(len(train), size=count)]
    if rng.random() < shuffled_share:
        sentences = [shuffled_words([s, train[int(rng.integers(len(train)))]], rng) for s in sentences]
    # espeak speaks about 2.5 words a second at 160 wpm: keep the whole under the cap.
    budget = MAX_UTTERANCE_SECONDS * words_per_minute / 60 * 0.85
    kept: list[str] = []
    for s in sentences:
        if kept and sum(len(k.split()) for k in kept) + len(s.split()) > budget:
            break
        kept.append(s)
    return kept


def random_utterance(train: Sequence[str], rng: np.random.Generator) -> Utterance:
    voice = random_voice(rng)
    kept = utterance_sentences(train, rng, voice.words_per_minute)
    utterance = compose(kept, voice, rng)
    if utterance.audio.size > MAX_UTTERANCE_SECONDS * SAMPLE_RATE and len(kept) > 1:
        return compose(kept[:1], voice, rng)
    return utterance


def write_shard(
    path: Path,
    mels: list[np.ndarray],
    tokens: list[list[int]],
    texts: list[str],
    labels: list[np.ndarray],
    said: list[str],
) -> None:
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
        labels=np.concatenate(labels).astype(np.int32),
        phonemes=np.array(said),
    )
    os.replace(partial, path)


@dataclass
class Shard:
    mel: np.ndarray  # float16 [features, total_frames]
    offsets: np.ndarray
    lengths: np.ndarray
    tokens: list[np.ndarray]
    texts: list[str]
    labels: np.ndarray  # int32 [total_frames], a token id or -1
    phonemes: list[list[str]]  # per utterance, what espeak said

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
                labels=data["labels"],
                phonemes=[str(p).split() for p in data["phonemes"]],
            )

    def features(self, i: int) -> np.ndarray:
        return self.mel[:, self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def frame_labels(self, i: int) -> np.ndarray:
        return self.labels[self.offsets[i] : self.offsets[i] + self.lengths[i]]


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
        mels, tokens, texts, labels, said = [], [], [], [], []
        for _ in range(SHARD_SIZE):
            utterance = random_utterance(train, rng)
            audio, _ = augment(utterance.audio, rng)
            mel, length = logmel([audio])
            frames = int(length[0])
            mels.append(mel[0, :, :frames])
            ids, offsets = encode.with_offsets(utterance.text)
            tokens.append(ids)
            texts.append(utterance.text)
            labels.append(frame_labels(utterance, ids, offsets, frames))
            said.append(" ".join(utterance.phonemes))
        write_shard(path, mels, tokens, texts, labels, said)
