"""Word error rate with one stated normalisation, shared by the trainer, benchmarks and tests.

Normalisation: lower case, apostrophes kept inside words, every other non-letter/digit
character becomes a space, whitespace collapsed. Punctuation and case are therefore not scored
(the Open ASR Leaderboard normalises similarly).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jiwer

_NON_WORD = re.compile(r"[^a-z0-9']+")


def normalize(text: str) -> str:
    words = _NON_WORD.sub(" ", text.lower()).split()
    return " ".join(w.strip("'") for w in words if w.strip("'"))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (total edits / total reference words) after `normalize`."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    refs = [normalize(r) for r in references]
    if not any(refs):
        raise ValueError("references hold no words")
    hyps = [normalize(h) for h in hypotheses]
    # jiwer rejects empty references; score those pairs as pure insertions.
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    insertions = sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    out = jiwer.process_words([r for r, _ in pairs], [h or "" for _, h in pairs])
    edits = out.substitutions + out.deletions + out.insertions + insertions
    return edits / sum(len(r.split()) for r, _ in pairs)
