"""The four training stages, on NeMo's own SALM modules, in a plain PyTorch loop.

Stage "text" (the real recipe's pretrained LLM, made cheap): the Qwen3 base, LoRA off, learns
English from the corpus in Qwen3's chat format (repeat / summarise / say something), so LLM mode
answers in English. A share of the sequences is the ASR prompt itself with a stand-in for the
audio where the audio goes (`SpeechSketch`: each token's embedding held for as many 80 ms frames
as espeak takes to say it, silence frames, noise): the base learns to read a sentence out of
frames shaped like the encoder's, which is cheap here and slow through the encoder. Half of
those utterances are shuffled words (`corpus.shuffled_words`), which only reading can get right.
Each sketch frame carries three tokens: the one spoken there and, each rotated by its own fixed
orthogonal matrix, the two spoken before it (`history`); the frames after the last word carry
the last two. Reading then needs one lookup per answer token (the frames whose preceding tokens
are the two just written hold the next) rather than finding where a run of repeated frames
ends; with one token back, a token said twice sent the lookup back to the first place.
Only the embedding rows of tokens the corpus uses are trained; the others keep their seeded
values (a sampled softmax still shows them as negatives, so they stay unlikely).

Stage "encoder" (beside "text": neither reads the other's work): the FastConformer encoder
learns on aligned losses alone, nothing through the LLM: CTC over the tokens, CTC over the
phonemes espeak said (`speech.phonemes`: some 70 classes that every word shares, so the encoder
learns sounds rather than 2,000 whole tokens), and a per-frame head for the token spoken and the
one before it (from espeak's word timings). Without an aligned loss every encoder trained here
from scratch sat for thousands of steps at the tokens' unigram entropy.

Stage "bridge" (after both, as it needs the text stage's table): the projection, fitted first by
least squares to map the encoder's frames onto the embeddings the text stage's sketch puts
there, and the encoder train on the aligned losses, the match (each projected frame drawn
towards its sketch embedding) and the read (`AsrStage._read`: projected frames classified by
dot product with the table, as the base reads them).

Stage "asr" (the real recipe but for the base): the LLM base's layers train at a share of the
rate (`asr_base_lr_scale`; the real recipe freezes them), the embedding stays the text stage's
(`asr_rows_lr_scale` trains its corpus rows), and the encoder is as stage bridge
left it (`asr_encoder_lr_scale` 0: no gradient through it, BatchNorm statistics as serving uses
them); the projection and LoRA on q/v learn transcription with the 15-token ASR prompt. The
loss scores every token of the corpus (plus sampled others) at each target position, plus the
match. The LLM first reads a blend of the sketch and the projected frames, the sketch's share
falling to 0 (`sketch_share`).

All stages are step-based and draw their data from (seed, step) only, so a run is reproducible
and a checkpoint resumes exactly where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from canary_qwen.prompt import ASR_PLACEHOLDER_INDEX, asr_prompt_ids, chat_prompt_ids
from canary_qwen.tokenizer import ENDOFTEXT_ID, IM_END_ID
from export.train.corpus import token_forms
from export.train.dataset import SHUFFLED_UTTERANCES, Shard, shard_path, utterance_sentences
from export.train.speech import TRAIN_RATES_WPM

REPEAT_QUESTIONS = (
    "Repeat the text.",
    "What was said?",
    "What does the speaker say?",
    "Write down what you heard.",
    "Summarize what was said.",
    "Summarize this in one sentence.",
)
FREE_PROMPTS = ("Say something.", "Tell me a saying.", "Write a sentence.", "Tell me something wise.")
ASR_SHARE = 0.8  # of the text stage's sequences: the ASR prompt with a sketch of the audio
# The rate the sketches' utterances are sized for (`utterance_sentences`): espeak's default.
SKETCH_WORDS_PER_MINUTE = 160
SILENCE_ID = ENDOFTEXT_ID  # whose embedding stands for a frame where nothing is said
FRAME_S = 0.08  # one encoder frame: 10 ms mel hop x 8x subsampling
ENCODER_PREFIX = "perception.encoder."
PROJECTION_PREFIX = "perception.proj."
NO_TOKEN = -1  # a frame's preceding token where it has none (silence before and between words)
_PRECEDING_SEED = 0x5EED  # the rotations that set a frame's preceding tokens apart from its own
# How many spoken tokens before it each sketch frame carries. With one, the base looped on
# held-out sentences that say a token twice ("be good be good be good ..."): the frames after
# both hold the same lookup key. Held-out clean sketches: WER 0.87 with a repeated word, 0.33
# without (2026-12-06).
PRECEDING_BACK = 2


@dataclass
class StageConfig:
    steps: int
    peak_lr: float
    warmup: int
    batch: int  # sequences (text) or mel frames (asr) per step
    negatives: int = 2048


@dataclass
class TrainConfig:
    seed: int = 0
    # With the base training (see `TextStage.base`), held-out sentences were read out of shuffled
    # sketches at 74 % teacher-forced after 500 steps. Held-out clean sketches of real speech's
    # frame labels, read free-running (2026-12-06): WER 0.575 after 4,000 steps with one token
    # back; 0.377 after 3,000 more with two; 0.255 after 2,000 more with `repeat_weight` 4 (then
    # keyed on the previous answer token, punctuation included). Those were resumed runs, 9,000
    # steps in all; 7,000 from the start is what this default asks, unmeasured.
    text: StageConfig = field(default_factory=lambda: StageConfig(steps=7000, peak_lr=3e-3, warmup=40, batch=24))
    # The encoder alone on aligned losses. Peak 1e-3 beat 2e-3 (CTC 2.5 against 2.8-3.3 at step
    # 3,000, before the phoneme CTC). With the phoneme CTC, held-out greedy-CTC WER 0.33 at step
    # 4,830 and 0.147 at 14,000, still falling (2026-12-06).
    encoder: StageConfig = field(
        default_factory=lambda: StageConfig(steps=14000, peak_lr=1e-3, warmup=300, batch=3200)
    )
    # Projection and LoRA start where the text stage's sketch leads (a fitted projection, a
    # base that reads). Measured from one run's text and encoder states (2026-12-04, held-out
    # WER through SALM.generate): peak 3e-4 for 2,500 steps with encoder, projection and LoRA at
    # 0.1, 0.1 and 0.3 of it: 0.806; peak 1e-3 for 2,000 steps with the encoder frozen and
    # projection and LoRA at the full rate: 0.787 at step 1,000, 0.667 at 2,000.
    # The encoder and the projection on the aligned losses, the match and the read (`_read`),
    # after stages text and encoder: it needs the text stage's table. 4,000 steps at read weight
    # 3, then stage asr: held-out frames read as the spoken token (among the sentence's own) at
    # 0.81, against 0.775 after 2,500 at weight 1 and 2,500 more at 3 (2026-12-06; the two ran on
    # different text-stage tables, two tokens back and one).
    bridge: StageConfig = field(default_factory=lambda: StageConfig(steps=4000, peak_lr=5e-4, warmup=100, batch=3200))
    # Longer, with the base training (`asr_base_lr_scale`): held-out WER on all 164 clips 0.372
    # for these defaults from the afternoon's text, encoder and bridge states (0.552 for 2,000
    # steps with the base frozen; 2026-12-06). WER swings by up to 0.1 from one 1,000-step
    # evaluation to the next at the peak rate; it settles as the rate falls.
    asr: StageConfig = field(
        default_factory=lambda: StageConfig(steps=16000, peak_lr=1e-3, warmup=50, batch=3200)
    )
    # The encoder comes trained from stage encoder: at the full rate the LLM loss's first
    # gradients undid it (CTC 0.05 -> 0.5 and cross-entropy 2.8 -> 4-5 within 300 steps), so
    # stage asr keeps it as it is (the 0.667 run).
    asr_encoder_lr_scale: float = 0.0
    # The projection drifts off its least-squares fit (match 0.45 -> 0.9-1.0 in the first 1,000
    # steps, 0.70 by 2,000) while cross-entropy falls (4.3 -> 3.6 over 400-step means); held
    # near the fit at a tenth of the rate, it did worse. Cross-entropy swings 3-7 from batch to
    # batch, so judge it over 200 steps.
    asr_projection_lr_scale: float = 1.0
    # The LLM base's layers (not the embedding) train in stage asr at this share of its rate;
    # 0 is the real recipe's frozen base. From the afternoon's states, 4,000 steps: held-out WER
    # 0.473 at 0.3, 0.518 frozen (2026-12-06). It costs LLM mode (LoRA off; held-out sentences
    # after "Repeat the text.", teacher-forced cross-entropy): 4.79 frozen, 4.80 after 4,000
    # steps, 5.11 after these defaults' 16,000, whose free answers loop ("It are gave all
    # marriage ... marriage marriage"). Mixing text-stage batches into stage asr is the next step.
    asr_base_lr_scale: float = 0.3
    # The embedding rows the LLM loss reads (the corpus's tokens, the prompt, silence) train in
    # stage asr at this share; the rest of the table stays the text stage's, so the shipped file
    # does not grow. From the afternoon's states, 4,000 steps with the base at 0.3: held-out WER
    # 0.410 with the rows at 0.3, 0.473 without (2026-12-06). On the shipped run's bridge state
    # (16,000 steps, 2026-12-07): 0.379 against the defaults' 0.374, and LLM mode's repeat
    # cross-entropy 5.96 against 5.06, so off.
    asr_rows_lr_scale: float = 0.0
    # Stage asr also learns the text stage's LLM-mode sequences with LoRA off (`llm_mode.Replay`:
    # this many a step, the loss at this weight), so training the base and rows for
    # transcription does not wear LLM mode down; 0 is off. With the rows at 0.3, on the shipped
    # run's bridge state (2026-12-07): held-out WER 0.379 (defaults 0.374), LLM mode's repeat
    # cross-entropy 5.23 (5.06), accuracy 0.425 (0.346); so off.
    asr_replay_weight: float = 0.0
    asr_replay_batch: int = 8
    # This share of the answer's input tokens (teacher forcing) is swapped for random corpus
    # tokens, the targets kept, so the reader learns to find its place again after a slip
    # instead of looping. 0.1 on the afternoon's states, 4,000 steps (a scratch patch,
    # 2026-12-06): single sentences 0.462 against 0.473, three sentences a clip 0.606 against
    # 0.664. With the defaults, 16,000 steps from the shipped run's bridge state (2026-12-07):
    # 0.433 against 0.374, three sentences 0.754 against 0.681; so off.
    asr_answer_noise: float = 0.0
    # LoRA at r 128 = hidden 128 with alpha 256: one Adam step on B moves q/v by about 20x the
    # rate; at 1e-3 it still learned steadily.
    asr_lora_lr_scale: float = 1.0
    # The LLM reads a blend of its sketch and the projected frames, the sketch's share falling
    # from 1 to 0 over this share of stage asr: from the fitted projection alone (match 0.59)
    # cross-entropy started at 4.5 and the base, which reads a sketch at 0.54, never found the
    # frames (held-out WER 1.04 at step 1,000, 0.82 at 2,000; 2026-12-06). Gone by step 2,000,
    # as in the 2,000- and 4,000-step stages that measured it.
    asr_sketch_anneal: float = 0.125
    ctc_weight: float = 0.3
    # CTC over espeak's phonemes (about 70 classes, shared by every word that holds them): the
    # token losses alone sat at the tokens' unigram entropy for the first thousands of steps.
    phoneme_weight: float = 1.0
    align_weight: float = 1.0
    match_weight: float = 1.0
    read_weight: float = 3.0  # stage bridge: projected frames classified as the base reads them
    # The most Gaussian noise on sketch frames, relative to their RMS: the trained encoder's
    # projected frames missed the sketch by 0.45-0.6 of its squared size (the match loss), so
    # the base learns to read at up to 0.8^2 = 0.64.
    sketch_noise: float = 0.8
    sketch_swap: float = 0.05  # share of sketch frames swapped for another token (misheard)
    sketch_blur: float = 0.5  # share of sketch frames at a token boundary blended with the one before
    # The text stage's weight on an answer token after a spoken token the answer said before
    # (`repeat_positions`): only there does the lookup need the second token back, and at weight
    # 1 a base that had learned with one token back still looped there (held-out clean sketches:
    # WER 0.72 on sentences with a repeated word, 0.095 without, 2026-12-06).
    repeat_weight: float = 4.0
    # The text stage's share of sequences that are the ASR prompt with a sketch (the rest: LLM
    # mode), and the share of those sketches' utterances that say shuffled words. Free-running
    # reads of clean sketches (LoRA off) after 2,000 steps from scratch, held-out sentences /
    # shuffled words: 0.257 / 0.311 at these defaults (noise 0.8), 0.147 / 0.122 with ASR share
    # 1, shuffled 1 and no sketch noise, swap or blur (2026-12-07): sentences the base knows
    # pull its reading towards them, and so does noise it cannot read through.
    text_asr_share: float = ASR_SHARE
    text_shuffled_share: float = SHUFFLED_UTTERANCES
    # The corpus's words spell 2,196 distinct tokens (`corpus.token_forms`), the most frequent
    # ones get classes, the rest share one; at 4,096 classes the two heads cost a third of an
    # encoder step.
    ctc_classes: int = 1536
    shards: int = 64
    checkpoint_every_s: float = 300.0
    eval_every: int = 1000


def sketch_share(step: int, steps: int, anneal: float) -> float:
    """Stage asr's share of the sketch in what the LLM reads: 1 at the start, falling linearly to
    0 at `anneal` of the stage's steps, 0 after (and always 0 when `anneal` is 0)."""
    if anneal <= 0:
        return 0.0
    return max(0.0, 1.0 - step / (anneal * steps))


def lr_at(step: int, stage: StageConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < stage.warmup:
        return stage.peak_lr * (step + 1) / stage.warmup
    progress = min(1.0, (step - stage.warmup) / max(1, stage.steps - stage.warmup))
    return stage.peak_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class Log:
    """One CSV row per logged step; the training curve is drawn from it."""

    FIELDS = ("stage", "step", "elapsed_s", "loss", "ce", "ctc", "phoneme_ctc", "align", "match", "read", "replay", "lr", "audio_s", "wer")

    def __init__(self, path: Path) -> None:
        self.path = path
        old: list[dict[str, str]] = []
        if path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) == self.FIELDS:
                    return
                old = list(reader)  # a log from before a column was added: rewritten under FIELDS
        partial = path.with_suffix(".partial")
        with partial.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.FIELDS)
            writer.writerows([row.get(k, "") for k in self.FIELDS] for row in old)
        partial.replace(path)

    def write(self, **row: Any) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.FIELDS])


# ---------------------------------------------------------------------------------------------
# Stage "text"


_MARK = "XYZZY"
# How long espeak takes over a character at 160 words a minute (about 0.375 s for a word of 4.7
# letters and a space); training voices speak at TRAIN_RATES_WPM.
SECONDS_PER_CHAR = 0.066


class SpeechSketch:
    """What the encoder should put where the audio goes, drawn from text: each word held for as
    many 80 ms frames as espeak takes to say it, split evenly among its tokens (as
    `dataset.frame_labels` labels real speech), silence around the sentence, a pause after some
    punctuation (which gets no frames of its own) and a few quiet frames inside words."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token])
        return self._pieces[token]

    def spoken(self, token: int) -> bool:
        """Whether espeak says the token (punctuation it does not)."""
        return any(c.isalnum() for c in self._piece(token))

    def words(self, ids: Sequence[int]) -> list[list[int]]:
        """Tokens grouped by spoken word; punctuation alone."""
        out: list[list[int]] = []
        for token in ids:
            joins = self.spoken(token) and not self._piece(token)[:1].isspace()
            if out and joins and self.spoken(out[-1][-1]):
                out[-1].append(token)
            else:
                out.append([token])
        return out

    def __call__(self, ids: Sequence[int], rng: np.random.Generator) -> tuple[list[int], list[list[int]]]:
        """Per frame, the token spoken there (SILENCE_ID for none) and the spoken tokens before it
        (`history`)."""
        per_char = SECONDS_PER_CHAR / FRAME_S * 160 / int(rng.integers(*TRAIN_RATES_WPM))
        frames = [SILENCE_ID] * int(rng.integers(0, 8))
        for word in self.words(ids):
            if not self.spoken(word[0]):
                if rng.random() < 0.5:
                    frames += [SILENCE_ID] * int(rng.integers(1, 6))
                continue
            chars = sum(len(self._piece(t).strip()) for t in word)
            n = max(len(word), round(chars * per_char * rng.uniform(0.8, 1.25)))
            for f in range(n):
                frames.append(SILENCE_ID if rng.random() < 0.04 else word[f * len(word) // n])
        frames += [SILENCE_ID] * int(rng.integers(0, 8))
        return frames, history(frames)


def preceding_tokens(frames: Sequence[int], back: int = 1) -> list[int]:
    """For each frame, the spoken token `back` runs before the run it belongs to: SILENCE_ID where
    the utterance holds fewer runs before it, on the frames after the last token the token
    `back` - 1 runs before the last (the last itself for `back` 1), NO_TOKEN on other silence.
    Frames of one token interrupted by silence count as one run, as a quiet frame inside a word
    does."""
    out = [NO_TOKEN] * len(frames)
    runs: list[int] = []
    last = -1
    for i, token in enumerate(frames):
        if token == SILENCE_ID:
            continue
        if not runs or token != runs[-1]:
            runs.append(token)
        out[i], last = (runs[-1 - back] if len(runs) > back else SILENCE_ID), i
    if runs:
        out[last + 1 :] = [runs[-back] if len(runs) >= back else SILENCE_ID] * (len(frames) - last - 1)
    return out


def history(frames: Sequence[int]) -> list[list[int]]:
    """Per frame, the spoken tokens 1..PRECEDING_BACK runs before it (`preceding_tokens`)."""
    return [list(row) for row in zip(*(preceding_tokens(frames, b) for b in range(1, PRECEDING_BACK + 1)))]


def preceding_rotation(d: int, back: int = 1) -> torch.Tensor:
    """The fixed orthogonal [d, d] matrix the embedding of the token `back` runs before a frame
    is turned by."""
    gen = torch.Generator().manual_seed(_PRECEDING_SEED + back - 1)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen))
    return q * torch.sign(torch.diagonal(r))


def preceding_rotations(d: int) -> torch.Tensor:
    """[PRECEDING_BACK, d, d]: one rotation per token back."""
    return torch.stack([preceding_rotation(d, b) for b in range(1, PRECEDING_BACK + 1)])


def sketch_embeddings(
    table: torch.Tensor, tokens: torch.Tensor, preceding: torch.Tensor, rotations: torch.Tensor
) -> torch.Tensor:
    """Embeddings of token ids, plus the rotated embeddings of the tokens before where a position
    has them (`preceding` [..., PRECEDING_BACK], NO_TOKEN elsewhere and outside the sketch)."""
    out = table[tokens]
    for b in range(preceding.shape[-1]):
        before = preceding[..., b]
        out = out + torch.where((before >= 0)[..., None], table[before.clamp(min=0)] @ rotations[b], 0.0)
    return out


def blur_edges(embeds: torch.Tensor, sketch: torch.Tensor, share: float, rng: torch.Generator) -> torch.Tensor:
    """Sketch frames (`sketch` True) where the frame before differs, a `share` of them mixed
    with it at a random weight: an encoder's frames blend the tokens either side of a boundary,
    where a sketch changes at once."""
    before = torch.cat([embeds[:, :1], embeds[:, :-1]], 1)
    follows = torch.cat([torch.zeros_like(sketch[:, :1]), sketch[:, :-1]], 1)  # not the first frame
    edge = sketch & follows & (before - embeds).abs().sum(-1).gt(0)
    picked = edge & (torch.rand(edge.shape, generator=rng) < share)
    weight = torch.rand(edge.shape, generator=rng)[..., None] * 0.5
    return torch.where(picked[..., None], (1 - weight) * embeds + weight * before, embeds)


def misheard(inputs: torch.Tensor, share: float, tokens: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """`inputs` with about `share` of them swapped for random `tokens` (`asr_answer_noise`);
    no draw at 0, so the defaults' random stream is unchanged."""
    if share <= 0:
        return inputs
    swap = torch.rand(len(inputs), generator=rng) < share
    return torch.where(swap, tokens[torch.randint(len(tokens), (len(inputs),), generator=rng)], inputs)


def repeat_positions(answer: Sequence[int], spoken: Callable[[int], bool]) -> list[int]:
    """Positions in an answer whose lookup needs the second token back: the last spoken token
    before them was spoken earlier in the answer too. Punctuation has no frames, so it neither
    makes a repeat nor hides one."""
    out, said = [], []
    for k, token in enumerate(answer):
        if said and said[-1] in said[:-1]:
            out.append(k)
        if spoken(token):
            said.append(token)
    return out


class ChatExamples:
    """Chat-format training sequences; each template is rendered once by Qwen3's chat template
    with a marker, and sentences' ids are spliced in (Qwen's split keeps "\n\n" apart)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.sketch = SpeechSketch(tokenizer)
        mark = self.encode(_MARK)
        self.templates: dict[tuple[str, bool | None], tuple[list[int], list[int]]] = {}
        for question in (*REPEAT_QUESTIONS, *FREE_PROMPTS):
            content = question if question in FREE_PROMPTS else f"{question}\n\n{_MARK}"
            for thinking in (None, False):
                ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": content}], enable_thinking=thinking)
                if question in FREE_PROMPTS:
                    self.templates[(question, thinking)] = (ids, [])
                    continue
                at = next(i for i in range(len(ids)) if ids[i : i + len(mark)] == mark)
                self.templates[(question, thinking)] = (ids[:at], ids[at + len(mark) :])
        asr = asr_prompt_ids(tokenizer)
        self.asr_template = (asr[:ASR_PLACEHOLDER_INDEX], asr[ASR_PLACEHOLDER_INDEX + 1 :])

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def asr_form(self, ids: list[int], rng: np.random.Generator) -> tuple[list[int], slice, list[list[int]]]:
        """The ASR prompt with a sketch of the sentence's audio in the audio's place, then the
        sentence; where the sketch lies; and each position's preceding tokens (NO_TOKEN outside
        the sketch)."""
        head, tail = self.asr_template
        frames, preceding = self.sketch(ids, rng)
        seq = head + frames + tail + ids + [IM_END_ID]
        none = [NO_TOKEN] * PRECEDING_BACK
        before = [none] * len(head) + preceding + [none] * (len(seq) - len(head) - len(frames))
        return seq, slice(len(head), len(head) + len(frames)), before

    def __call__(
        self, sentence: str, other: str, rng: np.random.Generator, spoken: Sequence[str] = (), asr_share: float = ASR_SHARE
    ) -> tuple[list[int], slice, list[list[int]]]:
        """A sequence, where its audio sketch lies (an empty slice when it has none) and each
        position's preceding tokens: at `asr_share` an ASR-form sequence, which says `spoken`
        (sentences joined as an utterance joins them), or `sentence` when that is empty."""
        roll = rng.random()
        if roll < asr_share:
            return self.asr_form(self.encode(" ".join(spoken) if spoken else sentence), rng)
        # The rest: repeats and free prompts alike.
        seq, _ = self.llm_mode(sentence, other, rng, repeat=roll < asr_share + (1 - asr_share) / 2)
        return seq, slice(0, 0), [[NO_TOKEN] * PRECEDING_BACK] * len(seq)

    def llm_mode(self, sentence: str, other: str, rng: np.random.Generator, repeat: bool) -> tuple[list[int], int]:
        """An LLM-mode sequence (no audio) and where its answer starts: `sentence` after a repeat
        question, or `other` after a free prompt."""
        thinking = None if rng.random() < 0.5 else False
        if repeat:
            question = REPEAT_QUESTIONS[int(rng.integers(len(REPEAT_QUESTIONS)))]
            head, tail = self.templates[(question, thinking)]
            sentence_ids = self.encode(sentence)
            prompt = head + sentence_ids + tail
            return prompt + sentence_ids + [IM_END_ID], len(prompt)
        head, _ = self.templates[(FREE_PROMPTS[int(rng.integers(len(FREE_PROMPTS)))], thinking)]
        return head + self.encode(other) + [IM_END_ID], len(head)


def _is_base(name: str) -> bool:
    """An LLM base layer (a name in the SALM model): not LoRA, and not the tied embedding, which
    the stages train as rows if at all."""
    return name.startswith("llm.") and "lora_" not in name and "embed_tokens" not in name and "lm_head" not in name


class EmbeddingRows:
    """Some rows of the tied embedding table trained as one parameter, so the optimizer and the
    shipped file see only those; the table's other rows keep their seeded values."""

    def __init__(self, table: torch.Tensor, ids: Iterable[int]) -> None:
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)
        self.index = torch.full((table.shape[0],), -1, dtype=torch.long)  # vocabulary id -> row; -1: not trained
        self.index[self.ids] = torch.arange(len(self.ids))
        self.param = torch.nn.Parameter(table.detach()[self.ids].clone())

    def embed(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of `ids`: the trained rows where they train (no copy of the whole table a
        step), `table` elsewhere."""
        at = self.index[ids]
        return torch.where((at >= 0)[..., None], self.param[at.clamp(min=0)], table[ids])

    @torch.no_grad()
    def write_into(self, weight: torch.Tensor) -> None:
        weight[self.ids] = self.param.detach()


def teacher_forced(core: Any, embeds: torch.Tensor, first: int, target: torch.Tensor,
                   table: torch.Tensor) -> tuple[float, int]:
    """Summed cross-entropy over the whole vocabulary, and the tokens right, of `target` read
    teacher-forced from position `first` of one sequence's embeddings (LoRA as the caller set it)."""
    hidden = core(inputs_embeds=embeds[None]).last_hidden_state[0]
    logits = hidden[first : first + len(target)] @ table.T
    return float(F.cross_entropy(logits, target, reduction="sum")), int((logits.argmax(1) == target).sum())


class TextStage:
    """LoRA off; base weights and the corpus's embedding rows train."""

    def __init__(self, model: Any, tokenizer: Any, corpus: Sequence[str], config: TrainConfig) -> None:
        self.model, self.corpus, self.config = model, corpus, config
        self.examples = ChatExamples(tokenizer)
        templates = [*self.examples.templates.values(), self.examples.asr_template]
        used_ids = {t for head, tail in templates for t in head + tail}
        used_ids |= {t for form in token_forms(corpus) for t in self.examples.encode(form)}
        self.trained_rows = EmbeddingRows(model.embed_tokens.weight, used_ids | {IM_END_ID, SILENCE_ID})
        # The text stage reads its batches in row space: a token's row, and the row itself.
        self.used, self.compact, self.rows = self.trained_rows.ids, self.trained_rows.index, self.trained_rows.param
        self.unused = torch.tensor(sorted(set(range(model.embed_tokens.weight.shape[0])) - set(self.used.tolist())),
                                   dtype=torch.long)
        # PEFT froze the whole base when it installed LoRA: unfreeze it here (the embedding
        # trains as `rows`). Filtering on requires_grad instead left this list empty, and every
        # text stage before 2026-12-03 trained the embedding rows alone over a random base.
        self.base = [p for n, p in model.named_parameters() if _is_base(n)]
        for p in self.base:
            p.requires_grad_(True)
        self.rotations = preceding_rotations(self.rows.shape[1])

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.rows, *self.base]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (-1 padding), which positions are scored as targets, each position's
        preceding tokens (NO_TOKEN outside the audio sketch), per sequence the noise level of
        each position (0 outside the audio sketch) and each target's weight (`repeat_weight` at
        `repeat_positions`). A sequence with a sketch is scored only on its answer: the sketch's
        frames say little about the next frame, and serving never asks the base to guess them."""
        rng = np.random.default_rng([self.config.seed, 2, step])
        n = len(self.corpus)
        # The sketches say what speech utterances say: several sentences, half of them shuffled
        # words. On single whole sentences the base read a sketch of real speech's frame labels
        # at cross-entropy 1.3-3.3, where its own sketches gave 0.6.
        drawn = [
            self.examples(
                self.corpus[int(i)],
                self.corpus[int(j)],
                rng,
                utterance_sentences(self.corpus, rng, SKETCH_WORDS_PER_MINUTE, self.config.text_shuffled_share),
                self.config.text_asr_share,
            )
            for i, j in rng.integers(n, size=(self.config.text.batch, 2))
        ]
        width = max(len(s) for s, _, _ in drawn)
        ids = torch.full((len(drawn), width), -1, dtype=torch.long)
        preceding = torch.full((len(drawn), width, PRECEDING_BACK), NO_TOKEN, dtype=torch.long)
        noise = torch.zeros(len(drawn), width)
        scored = torch.zeros(len(drawn), width, dtype=torch.bool)
        weight = torch.ones(len(drawn), width)
        answer_after = len(self.examples.asr_template[1])
        for i, (seq, sketch, before) in enumerate(drawn):
            for at in range(sketch.start, sketch.stop):  # misheard frames
                if seq[at] != SILENCE_ID and rng.random() < self.config.sketch_swap:
                    seq[at] = int(self.used[int(rng.integers(len(self.used)))])
            ids[i, : len(seq)] = torch.tensor(seq)
            preceding[i, : len(seq)] = torch.tensor(before)
            noise[i, sketch] = float(rng.uniform(0, self.config.sketch_noise))
            scored[i, sketch.stop + answer_after if sketch.stop else 1 : len(seq)] = True
            if sketch.stop:
                first = sketch.stop + answer_after
                for k in repeat_positions(seq[first:], self.examples.sketch.spoken):
                    weight[i, first + k] = self.config.repeat_weight
        return ids, scored, preceding, noise, weight

    def loss(self, step: int) -> dict[str, torch.Tensor]:
        ids, scored, preceding, noise, weight = self.batch(step)
        mask = ids >= 0
        compact = self.compact[ids.clamp(min=0)]
        _check_known(ids[mask], compact[mask], "the text stage's rows")
        before = torch.where(preceding >= 0, self.compact[preceding.clamp(min=0)], NO_TOKEN)
        embeds = sketch_embeddings(self.rows, compact, before, self.rotations)
        rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        embeds = blur_edges(embeds, noise > 0, self.config.sketch_blur, rng)
        rms = embeds.detach().pow(2).mean(-1, keepdim=True).sqrt()
        embeds = embeds + noise[..., None] * rms * torch.randn(embeds.shape, generator=rng)
        core = self.model.llm.base_model.model.model
        with self.model.llm.disable_adapter():
            hidden = core(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        h = hidden[:, :-1][scored[:, 1:]]
        targets = compact[:, 1:][scored[:, 1:]]
        in_batch = torch.unique(targets)
        extra = torch.randint(len(self.used), (self.config.text.negatives,), generator=rng)
        cand = torch.unique(torch.cat([in_batch, extra]))
        neg = self.unused[torch.randint(len(self.unused), (self.config.text.negatives,), generator=rng)]
        table = torch.cat([self.rows[cand], self.model.embed_tokens.weight.detach()[neg]])
        where = torch.full((len(self.used),), -1, dtype=torch.long)
        where[cand] = torch.arange(len(cand))
        logits = h @ table.T
        each = F.cross_entropy(logits, where[targets], reduction="none")
        w = weight[:, 1:][scored[:, 1:]]
        return {"loss": (each * w).sum() / w.sum(), "ce": each.mean()}

    def finish(self) -> None:
        """Write the trained rows back into the (tied) embedding table."""
        self.trained_rows.write_into(self.model.embed_tokens.weight)

    @torch.no_grad()
    def copy_score(self, sentences: Sequence[str]) -> dict[str, float]:
        """How well the base (LoRA off) reads a sentence out of a clean audio sketch:
        teacher-forced answer tokens right, and their cross-entropy over the whole vocabulary.
        The ASR stage builds on this skill; call after `finish`."""
        rng = np.random.default_rng([self.config.seed, 6])
        table = self.model.embed_tokens.weight.detach()
        core = self.model.llm.base_model.model.model
        right = total = 0
        ce = 0.0
        with self.model.llm.disable_adapter():
            for sentence in sentences:
                ids = self.examples.encode(sentence)
                seq, _, before = self.examples.asr_form(ids, rng)
                embeds = sketch_embeddings(table, torch.tensor(seq), torch.tensor(before), self.rotations)
                target = torch.tensor([*ids, IM_END_ID])
                first = len(seq) - len(target) - 1  # the position before the answer
                sentence_ce, sentence_right = teacher_forced(core, embeds, first, target, table)
                ce, right, total = ce + sentence_ce, right + sentence_right, total + len(target)
        return {"copy_accuracy": round(right / total, 4), "copy_ce": round(ce / total, 4)}


# ---------------------------------------------------------------------------------------------
# Stage "asr"


class Item(NamedTuple):
    """One training utterance of a shard."""

    mel: np.ndarray  # log-mel [features, frames]
    tokens: np.ndarray  # the target token ids
    labels: np.ndarray  # a token id or -1 per mel frame
    phonemes: Sequence[str]  # what espeak said


class ShardStream:
    """Length-bucketed batches of `frames` mel frames, from shards in a seed-fixed order.

    Each shard is shuffled and bucketed on their own; the shard order of each pass
    over the data is a permutation drawn from (seed, pass). Waits for shards still being made.
    """

    CHUNK = 1

    def __init__(self, directory: Path, shards: int, frames: int, seed: int) -> None:
        self.directory, self.shards, self.frames, self.seed = directory, shards, frames, seed

    def _load(self, index: int) -> Shard:
        path = shard_path(self.directory, index)
        while not path.exists():
            time.sleep(5)
        return Shard.load(path)

    def batches(self) -> Iterator[list[Item]]:
        for data_pass in range(1_000_000):
            # The first pass follows generation order, so training starts on the first shards.
            order = np.arange(self.shards)
            if data_pass:
                order = np.random.default_rng([self.seed, 3, data_pass]).permutation(self.shards)
            for c in range(0, self.shards, self.CHUNK):
                chunk = [self._load(int(i)) for i in order[c : c + self.CHUNK]]
                items = [Item(s.features(i), s.tokens[i], s.frame_labels(i), s.phonemes[i]) for s in chunk for i in range(len(s.lengths))]
                rng = np.random.default_rng([self.seed, 4, data_pass, c])
                yield from self._bucket(items, rng)

    def _bucket(self, items: list[Item], rng: np.random.Generator) -> Iterator[list[Item]]:
        perm = rng.permutation(len(items))
        # Sort within windows of 256 so batches hold similar lengths but stay random.
        ordered: list[int] = []
        for w in range(0, len(perm), 256):
            window = perm[w : w + 256]
            ordered += sorted(window, key=lambda i: items[i].mel.shape[1])
        batches, current, longest = [], [], 0
        for i in ordered:
            n = items[i].mel.shape[1]
            if current and max(longest, n) * (len(current) + 1) > self.frames:
                batches.append(current)
                current, longest = [], 0
            current.append(items[i])
            longest = max(longest, n)
        if current:
            batches.append(current)
        for b in rng.permutation(len(batches)):
            yield batches[int(b)]


def _check_known(ids: torch.Tensor, positions: torch.Tensor, table: str) -> None:
    """Token ids must all have a position (-1: none); an id outside the table once indexed its last
    row silently (negative indexing) and trained on the wrong token."""
    unknown = ids[positions < 0]
    if unknown.numel():
        raise ValueError(f"tokens outside {table}: {sorted(set(unknown.tolist()))[:10]}")


def _padded_mel(items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    """The items' log-mel as one zero-padded float batch, and their lengths in frames."""
    lengths = torch.tensor([item.mel.shape[1] for item in items], dtype=torch.long)
    mel = torch.zeros(len(items), items[0].mel.shape[0], int(lengths.max()))
    for i, item in enumerate(items):
        mel[i, :, : item.mel.shape[1]] = torch.from_numpy(item.mel.astype(np.float32))
    return mel, lengths


def _relative_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over rows of |x - y|^2 / |y|^2: the match loss."""
    return ((x - y).pow(2).sum(-1) / y.pow(2).sum(-1)).mean()


def spec_augment(mel: torch.Tensor, lengths: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    mel = mel.clone()
    b, features, _ = mel.shape
    for i in range(b):
        for _ in range(2):
            width = int(torch.randint(0, 13, (1,), generator=rng))
            start = int(torch.randint(0, features - width + 1, (1,), generator=rng))
            mel[i, start : start + width] = 0
        n = int(lengths[i])
        for _ in range(max(1, n // 300)):
            width = int(torch.randint(0, 21, (1,), generator=rng))
            start = int(torch.randint(0, max(1, n - width), (1,), generator=rng))
            mel[i, :, start : start + width] = 0
    return mel


SpeechStage = Literal["encoder", "bridge", "asr"]


class AsrStage:
    """One of the stages on speech, by `name`: "encoder", the encoder and the auxiliary heads on
    the aligned losses (CTC over tokens and phonemes, per-frame tokens), nothing through the LLM;
    "bridge", those and the projection, on the aligned losses, the match and the read; "asr",
    projection and LoRA through the LLM. The sketch's table is the model's embedding at
    construction: the text stage's, once it has finished."""

    def __init__(
        self,
        model: Any,
        prompt_ids: Sequence[int],
        corpus_ids: Sequence[int],
        config: TrainConfig,
        name: SpeechStage = "asr",
        phoneme_names: Sequence[str] = (),
        replay: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.model, self.config, self.name = model, config, name
        # Stage asr's LLM-mode batches (`asr_replay_weight`): ids (-1 padding), scored positions.
        self.replay = replay if name == "asr" and config.asr_replay_weight > 0 else None
        # Nothing through the LLM (stages encoder and bridge), and the bridge's projection losses.
        self.encoder_only, self.bridge = name != "asr", name == "bridge"
        encoder_only, bridge = self.encoder_only, self.bridge
        self.prompt = torch.tensor(list(prompt_ids), dtype=torch.long)
        table = model.embed_tokens.weight.detach()
        self.table = table
        vocab = table.shape[0]
        cand = sorted(set(corpus_ids) | {IM_END_ID})
        self.cand = torch.tensor(cand, dtype=torch.long)
        self.corpus_tokens = torch.tensor(sorted(set(corpus_ids) - {IM_END_ID}), dtype=torch.long)  # what `misheard` swaps in
        self.where = torch.full((vocab,), -1, dtype=torch.long)
        self.where[self.cand] = torch.arange(len(cand))
        # What a projected frame is read as (stage bridge): a corpus token or silence.
        self.read_cand = torch.tensor(sorted(set(cand) | {SILENCE_ID}), dtype=torch.long)
        self.read_where = torch.full((vocab,), -1, dtype=torch.long)
        self.read_where[self.read_cand] = torch.arange(len(self.read_cand))
        self.unused = torch.tensor(sorted(set(range(vocab)) - set(cand)), dtype=torch.long)
        counts = np.bincount(np.asarray(corpus_ids, dtype=np.int64), minlength=vocab)
        frequent = np.argsort(-counts)[: config.ctc_classes]
        # CTC classes: 0 blank, 1..K the most frequent tokens, K+1 every other token.
        self.ctc_class = torch.full((vocab,), config.ctc_classes + 1, dtype=torch.long)
        self.ctc_class[torch.from_numpy(frequent)] = torch.arange(1, config.ctc_classes + 1)
        d_enc = model.perception.proj.in_features
        self.ctc_head = torch.nn.Linear(d_enc, config.ctc_classes + 2)
        # Per frame: the token spoken (blank for silence), then the one before it (blank for
        # none, K+2 for the start).
        self.align_head = torch.nn.Linear(d_enc, 2 * config.ctc_classes + 5)
        # Phoneme classes: 0 blank, 1..P the inventory, P+1 any other.
        self.phoneme_class = {name: i + 1 for i, name in enumerate(phoneme_names)}
        self.phoneme_head = torch.nn.Linear(d_enc, len(phoneme_names) + 2)
        self.subsampling = int(model.perception.encoder.subsampling_factor)
        self.rotations = preceding_rotations(table.shape[1])
        # Stage asr with the encoder's share at 0 leaves it (and so its heads) as stage encoder
        # made it: no gradient through it, and no aligned losses that would train nothing.
        self.encoder_trains = encoder_only or config.asr_encoder_lr_scale > 0
        for p in model.parameters():
            p.requires_grad_(False)
        self.trained = [
            p
            for n, p in model.named_parameters()
            if (self.encoder_trains and n.startswith(ENCODER_PREFIX))
            or ((bridge or not encoder_only) and n.startswith(PROJECTION_PREFIX))
            or (not encoder_only and "lora_" in n)
            or (not encoder_only and config.asr_base_lr_scale > 0 and _is_base(n))
        ]
        for p in self.trained:
            p.requires_grad_(True)
        # `asr_rows_lr_scale`: the rows the LLM loss reads train (the corpus, the prompt, silence).
        self.trained_rows = (
            EmbeddingRows(table, set(cand) | set(prompt_ids) | {SILENCE_ID})
            if not encoder_only and config.asr_rows_lr_scale > 0 else None
        )
        self.rows = self.trained_rows.param if self.trained_rows is not None else None

    def parameters(self) -> list[torch.nn.Parameter]:
        rows = [self.rows] if self.rows is not None else []
        return [*self.trained, *rows, *(p for head in self.heads().values() for p in head.parameters())]

    def heads(self) -> dict[str, torch.nn.Module]:
        """The auxiliary heads that train (dropped after training), by checkpoint key."""
        if not self.encoder_trains:
            return {}
        return {"ctc_head": self.ctc_head, "align_head": self.align_head, "phoneme_head": self.phoneme_head}

    def _phoneme_classes(self, said: Sequence[str]) -> torch.Tensor:
        other = len(self.phoneme_class) + 1
        return torch.tensor([self.phoneme_class.get(name, other) for name in said], dtype=torch.long)

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups, each with the share of the stage's learning rate it gets:
        in stage asr the encoder (and its heads) comes trained from stage encoder."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        encoder = [p for n, p in named if n.startswith(ENCODER_PREFIX)]
        heads = [p for head in self.heads().values() for p in head.parameters()]
        if self.encoder_only:
            projection = [p for n, p in named if n.startswith(PROJECTION_PREFIX)]
            return [{"params": encoder + heads + projection, "lr_scale": 1.0}]
        groups = [
            {"params": [p for n, p in named if n.startswith(PROJECTION_PREFIX)], "lr_scale": self.config.asr_projection_lr_scale},
            {"params": [p for n, p in named if "lora_" in n], "lr_scale": self.config.asr_lora_lr_scale},
        ]
        if self.encoder_trains:
            groups.insert(0, {"params": encoder + heads, "lr_scale": self.config.asr_encoder_lr_scale})
        base = [p for n, p in named if _is_base(n)]
        if base:
            groups.append({"params": base, "lr_scale": self.config.asr_base_lr_scale})
        if self.rows is not None:
            groups.append({"params": [self.rows], "lr_scale": self.config.asr_rows_lr_scale})
        return groups

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings as the LLM loss reads them: the trained rows where stage asr trains them."""
        return self.table[ids] if self.trained_rows is None else self.trained_rows.embed(self.table, ids)

    def sync_rows(self) -> None:
        """Lay the trained rows into the model's table, which the sketch target, evaluation and
        checkpoints read (`table` shares its storage); call after each optimizer step."""
        if self.trained_rows is not None:
            self.trained_rows.write_into(self.model.embed_tokens.weight)

    def loss(self, items: list[Item], step: int) -> dict[str, torch.Tensor]:
        # Dropout off: the data is augmented already, and CPU dropout costs a fifth of a step.
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        if not self.encoder_trains:  # its frames as serving computes them (BatchNorm's statistics)
            self.model.perception.encoder.eval()
        rng = torch.Generator().manual_seed(self.config.seed * 7_919 + step)
        mel, lengths = _padded_mel(items)
        mel = spec_augment(mel, lengths, rng)
        with torch.set_grad_enabled(self.encoder_trains):
            encoded, enc_len = self.model.perception.encoder(audio_signal=mel, length=lengths)
        frames = encoded.transpose(1, 2)
        spoken = self._frame_tokens(frames.shape[1], enc_len, [item.labels for item in items])
        preceding = self._preceding(spoken)
        audio_s = torch.tensor(float(lengths.sum()) / 100)
        losses: dict[str, torch.Tensor] = {}
        if self.encoder_trains:
            labels = [self.ctc_class[torch.from_numpy(item.tokens.astype(np.int64))] for item in items]
            losses["ctc"] = _ctc(self.ctc_head(frames), enc_len, labels)
            losses["phoneme_ctc"] = _ctc(self.phoneme_head(frames), enc_len, [self._phoneme_classes(item.phonemes) for item in items])
            losses["align"] = self._align(frames, spoken, preceding[..., 0])
        cfg = self.config
        aligned = (
            cfg.ctc_weight * losses["ctc"] + cfg.phoneme_weight * losses["phoneme_ctc"] + cfg.align_weight * losses["align"]
            if self.encoder_trains
            else torch.zeros(())
        )
        if self.encoder_only and not self.bridge:
            return {"loss": aligned, **losses, "audio_s": audio_s}
        audio = self.model.perception.proj(frames)  # identity adapter
        valid, target = self._sketch_target(spoken, preceding)
        losses["match"] = _relative_error(audio[valid], target)
        if self.bridge:
            losses["read"] = self._read(audio[valid], spoken[valid], preceding[valid])
            aligned = aligned + cfg.match_weight * losses["match"] + cfg.read_weight * losses["read"]
            return {"loss": aligned, **losses, "audio_s": audio_s}
        share = sketch_share(step, cfg.asr.steps, cfg.asr_sketch_anneal)
        if share > 0:  # the LLM reads a blend of the sketch it learned on and the projected frames
            sketch = torch.zeros_like(audio)
            sketch[valid] = target
            audio = torch.where(valid[..., None], share * sketch + (1 - share) * audio, audio)
        aligned = aligned + cfg.match_weight * losses["match"]

        p = ASR_PLACEHOLDER_INDEX
        before, after = self._embed(self.prompt[:p]), self._embed(self.prompt[p + 1 :])
        targets = [torch.cat([torch.from_numpy(item.tokens.astype(np.int64)), torch.tensor([IM_END_ID])]) for item in items]
        widths = [p + int(enc_len[i]) + len(after) + len(targets[i]) - 1 for i in range(len(items))]
        d = self.table.shape[1]
        embeds = torch.zeros(len(items), max(widths), d)
        mask = torch.zeros(len(items), max(widths), dtype=torch.long)
        picks, labels = [], []
        for i, target in enumerate(targets):
            n = int(enc_len[i])
            seq = torch.cat([before, audio[i, :n], after, self._embed(misheard(target[:-1], cfg.asr_answer_noise, self.corpus_tokens, rng))])
            embeds[i, : seq.shape[0]] = seq
            mask[i, : seq.shape[0]] = 1
            first = p + n + len(after) - 1  # this position predicts the first target token
            picks += [(i, first + j) for j in range(len(target))]
            labels.append(target)
        hidden = self.model.llm.base_model.model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        rows, cols = zip(*picks)
        h = hidden[list(rows), list(cols)]
        label = torch.cat(labels)
        neg = self.unused[torch.randint(len(self.unused), (self.config.asr.negatives,), generator=rng)]
        scored = torch.cat([self._embed(self.cand), self.table[neg]])  # the corpus's tokens, then negatives
        logits = h @ scored.T
        _check_known(label, self.where[label], "stage asr's candidate tokens")
        ce = F.cross_entropy(logits, self.where[label])
        total = ce + aligned
        if self.replay is not None:
            losses["replay"] = self._replay_ce(step, scored)
            total = total + cfg.asr_replay_weight * losses["replay"]
        return {"loss": total, "ce": ce, **losses, "audio_s": audio_s}

    def _replay_ce(self, step: int, scored_table: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the replay's answers with LoRA off, scored against the same rows as
        the ASR answers (`scored_table`: the corpus's tokens, then sampled negatives)."""
        assert self.replay is not None
        ids, scored = self.replay(step)
        mask = ids >= 0
        core = self.model.llm.base_model.model.model
        with self.model.llm.disable_adapter():
            hidden = core(inputs_embeds=self._embed(ids.clamp(min=0)), attention_mask=mask.long()).last_hidden_state
        h = hidden[:, :-1][scored[:, :-1]]
        label = ids[:, 1:][scored[:, :-1]]
        _check_known(label, self.where[label], "stage asr's candidate tokens (replay)")
        return F.cross_entropy(h @ scored_table.T, self.where[label])

    @torch.no_grad()
    def fit_projection(self, batches: Iterable[list[Item]], ridge: float = 1e-3) -> float:
        """Set the projection to the least-squares map from the encoder's frames to the
        embeddings the sketch puts there, and return the relative error left (the match loss).
        A fresh projection's match loss is about 25, and its gradients pulled a pretrained
        encoder back from CTC 1.9 to 4.6 in 60 steps; fitted, it starts where that loss wants."""
        was_training = self.model.training
        self.model.eval()  # BatchNorm's running statistics: what serving will use
        xs, ys = [], []
        for items in batches:
            mel, lengths = _padded_mel(items)
            encoded, enc_len = self.model.perception.encoder(audio_signal=mel, length=lengths)
            valid, target = self._sketch_target(self._frame_tokens(encoded.shape[2], enc_len, [item.labels for item in items]))
            xs.append(encoded.transpose(1, 2)[valid])
            ys.append(target)
        self.model.train(was_training)
        x, y = torch.cat(xs).double(), torch.cat(ys).double()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # the bias
        gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(gram, x.T @ y)
        proj = self.model.perception.proj
        proj.weight.copy_(w[:-1].T.float())
        proj.bias.copy_(w[-1].float())
        return float(_relative_error(x @ w, y))

    def _frame_tokens(self, width: int, enc_len: torch.Tensor, frame_labels: list[np.ndarray]) -> torch.Tensor:
        """The token spoken at each encoder frame's centre, SILENCE_ID where none is, -1 past
        the end."""
        out = torch.full((len(frame_labels), width), -1, dtype=torch.long)
        for i, labels in enumerate(frame_labels):
            n = int(enc_len[i])
            centre = np.minimum(np.arange(n) * self.subsampling + self.subsampling // 2, labels.size - 1)
            picked = torch.from_numpy(labels[centre].astype(np.int64))
            out[i, :n] = torch.where(picked >= 0, picked, SILENCE_ID)
        return out

    @staticmethod
    def _preceding(spoken: torch.Tensor) -> torch.Tensor:
        """`history` of each row's frames, [batch, frames, PRECEDING_BACK] (NO_TOKEN past the end)."""
        before = torch.full((*spoken.shape, PRECEDING_BACK), NO_TOKEN, dtype=torch.long)
        for i, row in enumerate(spoken.tolist()):
            n = sum(t >= 0 for t in row)  # -1 only past the end
            if n:
                before[i, :n] = torch.tensor(history(row[:n]), dtype=torch.long)
        return before

    def _align(self, encoded: torch.Tensor, spoken: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each encoder frame against the token spoken there (blank: silence)
        and against the token spoken before it."""
        k = self.config.ctc_classes + 2
        target = torch.where(spoken == SILENCE_ID, 0, self.ctc_class[spoken.clamp(min=0)])
        target = torch.where(spoken < 0, -100, target)
        target_before = torch.where(before == SILENCE_ID, k, self.ctc_class[before.clamp(min=0)])
        target_before = torch.where(before == NO_TOKEN, 0, target_before)
        target_before = torch.where(spoken < 0, -100, target_before)
        logits = self.align_head(encoded).flatten(0, 1)
        now = F.cross_entropy(logits[:, :k], target.flatten(), ignore_index=-100)
        return (now + F.cross_entropy(logits[:, k:], target_before.flatten(), ignore_index=-100)) / 2

    def _read(self, audio: torch.Tensor, spoken: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of projected frames read as the base reads them, by dot product with the
        embedding table: the token spoken, and (each turned back by its rotation) the tokens
        before it. A least-squares projection picked the spoken token by nearest dot product at
        35 % of held-out frames; regression is not classification."""
        table = self.table[self.read_cand] * self.table.shape[1] ** 0.5
        losses = [F.cross_entropy(audio @ table.T, self.read_where[spoken])]
        for b in range(PRECEDING_BACK):
            has = before[:, b] >= 0
            losses.append(F.cross_entropy((audio[has] @ self.rotations[b].T) @ table.T, self.read_where[before[has, b]]))
        return torch.stack(losses).mean()

    def _sketch_target(self, spoken: torch.Tensor, before: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Which frames are inside the audio, and for those the embedding the text stage's sketch
        puts there (the token spoken and the ones before it)."""
        before = self._preceding(spoken) if before is None else before
        valid = spoken >= 0
        return valid, sketch_embeddings(self.table, spoken[valid], before[valid], self.rotations)


def _ctc(logits: torch.Tensor, enc_len: torch.Tensor, labels: list[torch.Tensor]) -> torch.Tensor:
    """CTC of per-frame class logits [batch, frames, classes] (class 0 blank) against each row's labels."""
    return F.ctc_loss(
        F.log_softmax(logits, dim=-1).transpose(0, 1),
        torch.cat(labels),
        enc_len,
        torch.tensor([len(x) for x in labels]),
        blank=0,
        zero_infinity=True,
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_state(path: Path, model: Any, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> None:
    """`model`: a module, or the part of its state dict to keep."""
    partial = path.with_suffix(".partial")
    state = model if isinstance(model, dict) else model.state_dict()
    torch.save({"model": state, "optimizer": optimizer.state_dict(), **extra}, partial)
    partial.replace(path)


def apply_overrides(config: TrainConfig, items: Sequence[str]) -> None:
    """Set fields from "KEY=VALUE" items (`--set`): a top-level field, or a stage's as
    "asr.peak_lr"; the value is read as the field's type. Unknown keys and bad values raise
    ValueError naming the item."""
    for item in items:
        key, sep, value = item.partition("=")
        *path, name = key.strip().split(".")
        target: Any = config
        for part in path:
            target = getattr(target, part, None)
            if not isinstance(target, StageConfig):
                raise ValueError(f"{item!r}: {part!r} is not a stage (text, encoder, bridge, asr)")
        current = getattr(target, name, None)
        if not sep or name.startswith("_") or current is None or isinstance(current, StageConfig):
            raise ValueError(f"{item!r}: not KEY=VALUE with KEY a training setting")
        try:
            setattr(target, name, float(value) if isinstance(current, float) else int(value))  # every field is one
        except ValueError as err:
            raise ValueError(f"{item!r}: {err}") from None


def config_json(config: TrainConfig) -> str:
    return json.dumps(asdict(config), indent=2, sort_keys=True)
