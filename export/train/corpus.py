"""English sentences for the demo model, assembled offline from Debian's `fortunes` quotations.

Entries are split into sentences, cleaned to plain words with simple punctuation, and kept when
they are 3-24 words long. Sentences that the tests or benchmarks speak are excluded, and the rest
is split by a stable hash into training and held-out sets; held-out sentences only use words the
training set holds (a tiny model cannot spell a word it never heard), which the README states.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Collections that are pictures, code or not English prose.
SKIPPED_COLLECTIONS = frozenset({"art", "ascii-art", "perl", "translate-me"})
MIN_WORDS, MAX_WORDS = 3, 24
HELD_OUT_PERCENT = 4
# Sentences are kept only when every word is among the corpus's most frequent ones: a model
# trained for an hour on two CPU cores learns a closed vocabulary far better than an open one.
# 800 words keep 1,618 sentences; at 2,500 (4,716 sentences) a 25-minute run heard each word
# too rarely to generalise across voices.
VOCABULARY_WORDS = 800

_ATTRIBUTION = re.compile(r"^\s*(--|-- |\(|\[)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_KEEP = re.compile(r"[A-Z][A-Za-z' ,]*[A-Za-z][.!?]")
_WORD = re.compile(r"[A-Za-z']+")


class CorpusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Corpus:
    train: tuple[str, ...]
    held_out: tuple[str, ...]

    def vocabulary(self) -> Counter[str]:
        return word_counts(self.train)


def words(sentence: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(sentence)]


def plain(word: str, first: bool) -> str:
    """A sentence's word as a shuffle says it: no punctuation around it, and lower case where
    only the sentence's start capitalised it ("I" and its contractions keep theirs)."""
    bare = word.strip(",.!?")
    if first and bare and not (bare == "I" or bare.startswith("I'")):
        bare = bare[0].lower() + bare[1:]
    return bare


def capitalised(word: str) -> str:
    """The word as a shuffle's first word writes it (and `token_forms` must know it so)."""
    return word[:1].upper() + word[1:]


def shuffled_words(sentences: Sequence[str], rng: np.random.Generator) -> str:
    """A sentence the corpus does not hold: the sentences' words in a random order, a random
    number of them (at least three, or all there are), written as a sentence is (`plain` words,
    the first capitalised, a full stop at the end). A tiny model memorises 1,564 sentences;
    words in an order it cannot know make it read (the text stage) and listen (the speech).
    Words keep no case or punctuation from where they stood: a capital or comma that the audio
    cannot tell was label noise."""
    pool = [plain(w, i == 0) for s in sentences for i, w in enumerate(s.split())]
    pool = [w for w in pool if w]
    size = int(rng.integers(min(3, len(pool)), len(pool) + 1))
    picked = [pool[int(i)] for i in rng.permutation(len(pool))[:size]]
    picked[0] = capitalised(picked[0])
    return " ".join(picked) + "."


def token_forms(train: Sequence[str]) -> list[str]:
    """Every text whose tokens an utterance can hold: each sentence and each of its words, alone
    and after a space, as it stands and as a shuffle writes it (`plain`, capitalised first,
    with the full stop). Utterances join sentences with spaces, and a shuffled one
    (`shuffled_words`) puts any word first or after any other; Qwen3's pre-tokenizer splits at
    spaces, so a word's tokens depend only on whether a space precedes it. Sentences alone
    spell 1,362 distinct tokens, their words in every position 2,196: the 834 others once fell
    outside the trained set."""
    forms: list[str] = []
    for sentence in train:
        forms += [sentence, " " + sentence]
        for i, word in enumerate(sentence.split()):
            bare = plain(word, i == 0)
            forms += [word, " " + word]
            if bare:
                upper = capitalised(bare)
                forms += [bare, " " + bare, upper, " " + upper, bare + ".", " " + bare + "."]
    return forms


def word_counts(sentences: Iterable[str]) -> Counter[str]:
    return Counter(w for s in sentences for w in words(s))


def clean(sentence: str) -> str | None:
    """A sentence as the model should write it, or None when it is not plain prose."""
    s = sentence.replace("`", "'").replace('"', "").replace(";", ",").replace(":", ",")
    s = re.sub(r"\s+-+\s+|--", ", ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+,", ",", s)
    s = re.sub(r",+", ",", s)
    if not _KEEP.fullmatch(s) or "''" in s:
        return None
    n = len(s.split())
    return s if MIN_WORDS <= n <= MAX_WORDS else None


def _entries(text: str) -> Iterable[str]:
    for entry in text.split("\n%\n"):
        lines = [ln for ln in entry.splitlines() if ln.strip() and not _ATTRIBUTION.match(ln)]
        # Indented blocks are verse or dialogue layout; joined they still read as prose.
        yield " ".join(ln.strip() for ln in lines)


def fortune_sentences(directory: Path = FORTUNES_DIR) -> list[str]:
    files = sorted(p for p in directory.glob("*") if p.is_file() and "." not in p.name)
    files = [p for p in files if p.name not in SKIPPED_COLLECTIONS]
    if not files:
        raise CorpusError(f"no fortune files under {directory}: install Debian's `fortunes` package")
    found: set[str] = set()
    for path in files:
        for entry in _entries(path.read_text(encoding="latin-1")):
            for piece in _SENTENCE_END.split(entry):
                if (sentence := clean(piece)) is not None:
                    found.add(sentence)
    return sorted(found)


def _bucket(sentence: str) -> int:
    return int.from_bytes(hashlib.sha256(sentence.lower().encode()).digest()[:4], "big") % 100


def common_words_only(sentences: Sequence[str], size: int = VOCABULARY_WORDS) -> list[str]:
    common = {w for w, _ in word_counts(sentences).most_common(size)}
    return [s for s in sentences if all(w in common for w in words(s))]


def split_corpus(sentences: Sequence[str], excluded: Iterable[str] = ()) -> Corpus:
    """Stable split: a sentence's hash decides; excluded sentences (tests, benchmarks) go nowhere."""
    banned = {" ".join(words(s)) for s in excluded}
    kept = [s for s in common_words_only(sentences) if " ".join(words(s)) not in banned]
    train = [s for s in kept if _bucket(s) >= HELD_OUT_PERCENT]
    known = word_counts(train)
    held_out = [s for s in kept if _bucket(s) < HELD_OUT_PERCENT and all(known[w] >= 2 for w in words(s))]
    return Corpus(train=tuple(train), held_out=tuple(held_out))


def excluded_sentences() -> list[str]:
    """What the tests and benchmarks speak: never trained on."""
    from bench.corpus import PASSAGE

    texts = _SENTENCE_END.split(PASSAGE)
    try:  # the test fixtures are not installed with the package
        from tests.fixtures.audio.speech import UTTERANCE_TEXTS
    except ImportError:
        UTTERANCE_TEXTS = ()
    return texts + list(UTTERANCE_TEXTS)


def load_corpus(directory: Path = FORTUNES_DIR) -> Corpus:
    return split_corpus(fortune_sentences(directory), excluded_sentences())
