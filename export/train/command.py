"""`python -m export train --work DIR [--out export/demo]`: train the demo model and ship it.

Steps, each resumable (a killed run restarts where its last checkpoint left it):
  1. the seeded checkpoint at DEMO_SIZES (what `export tiny` draws from DEMO_SEED);
  2. speech shards made in a background process (export/train/dataset.py);
  3. stage "text" and stage "encoder" (independent: `--stage text` and `--stage encoder` run side by
     side, one core each), then stages "bridge" and "asr" (export/train/trainer.py), checkpointed
     every few minutes;
  4. the trained checkpoint packed into `--out` (weights.safetensors, training.json, curve PNG).
With `--from DIR` the run starts from a shipped model instead of the seeded draw: stage text
continues its LLM, its encoder and projection stay (no stages encoder and bridge), then stage asr.
"""

from __future__ import annotations

import argparse
import csv
import os
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from canary_qwen.checkpoint import MEL_FB, MEL_WINDOW, WEIGHTS_FILE
from canary_qwen.mel import LogMel
from canary_qwen.prompt import asr_messages, asr_prompt_ids
from canary_qwen.tokenizer import IM_END_ID
from canary_qwen.wer import word_error_rate
from export.demo import (
    DEMO_DIR,
    DEMO_SEED,
    DEMO_SIZES,
    EMBED_SCALE,
    DemoWeightsError,
    build_demo,
    pack,
    read_record,
    sha256,
    starting_point,
)
from export.tiny import build_tiny
from export.train.corpus import load_corpus, token_forms
from export.train.llm_mode import Replay, repeat_score
from export.train.plot import plot_curve
from export.train.dataset import SHARD_SIZE, Encoder, compose, generate_shards
from export.train.speech import HELD_OUT_VOICES, SAMPLE_RATE, Voice, phoneme_inventory
from export.train.trainer import (
    ENCODER_PREFIX,
    PROJECTION_PREFIX,
    AsrStage,
    ChatExamples,
    Log,
    ShardStream,
    SpeechStage,
    StageConfig,
    TextStage,
    TrainConfig,
    apply_overrides,
    config_json,
    lr_at,
    save_state,
)

COPY_SENTENCES = 40
# Batches (of the stage's size) the projection is fitted on before stage asr's first step.
PROJECTION_FIT_BATCHES = 16
TRAINING_CURVE = Path(__file__).resolve().parents[2] / "docs" / "training-curve.png"
GENERATOR_NICENESS = 9


def _seeded(work: Path, seed: int) -> Path:
    """The seeded checkpoint training starts from; built aside and renamed into place, since the
    text and encoder stages' processes may both start on a fresh work directory."""
    path = work / "seeded"
    if not (path / WEIGHTS_FILE).is_file():
        if path.exists() and time.time() - path.stat().st_mtime > 60:
            shutil.rmtree(path, ignore_errors=True)  # a build that was killed half way
        aside = Path(tempfile.mkdtemp(dir=work, prefix=".seeded-"))
        build_tiny(aside / "checkpoint", seed=seed, sizes=DEMO_SIZES)
        try:
            (aside / "checkpoint").rename(path)
        except OSError:  # the other stage's process was first: the same draw
            pass
        shutil.rmtree(aside, ignore_errors=True)
    return path


def _logmel(checkpoint: Path) -> LogMel:
    from safetensors.torch import load_file

    tensors = load_file(str(checkpoint / WEIGHTS_FILE))
    return LogMel(tensors[MEL_FB].float().numpy(), tensors[MEL_WINDOW].float().numpy())


def _generator(work: Path, seeded: Path, train: list[str], seed: int, shards: int) -> None:
    torch.set_num_threads(1)
    os.nice(GENERATOR_NICENESS)  # below the trainer: shards are made ahead of need anyway
    generate_shards(work / "data", train, _logmel(seeded), seed, 0, shards)


def _eval_set(held_out: list[str], seed: int) -> list[tuple[str, str, np.ndarray]]:
    """Every held-out sentence in every held-out voice (41 x 4 = 164 clips, about 40 s to score on
    one core): 12 and 20 sentences ranked two runs in opposite orders (docs/training-log.md,
    2026-12-06)."""
    rng = np.random.default_rng([seed, 5])
    return [(voice, text, compose([text], Voice(voice), rng).audio) for voice in HELD_OUT_VOICES for text in held_out]


def _multi_sentence_set(held_out: list[str], seed: int, per_voice: int = 8, sentences: int = 3) -> list[tuple[str, str, np.ndarray]]:
    """Held-out utterances of `sentences` different held-out sentences with pauses, `per_voice`
    in every held-out voice: what a long recording's pieces hold. The single-sentence set did
    not show that the demo model loops on them (2026-12-06: 0.40 on one-sentence cues, 0.62 on
    10 s pieces of the same recording)."""
    rng = np.random.default_rng([seed, 8])
    clips = []
    for voice in HELD_OUT_VOICES:
        for _ in range(per_voice):
            said = [held_out[int(i)] for i in rng.choice(len(held_out), sentences, replace=False)]
            clips.append((voice, " ".join(said), compose(said, Voice(voice), rng).audio))
    return clips


@torch.no_grad()
def evaluate(model: Any, clips: list[tuple[str, str, np.ndarray]]) -> tuple[float, list[str]]:
    """Greedy transcripts from NeMo's own SALM.generate (full vocabulary), corpus WER."""
    was_training = model.training
    model.eval()
    hyps: list[str] = []
    for start in range(0, len(clips), 8):
        chunk = clips[start : start + 8]
        lengths = torch.tensor([c[2].size for c in chunk])
        audio = torch.zeros(len(chunk), int(lengths.max()))
        for i, c in enumerate(chunk):
            audio[i, : c[2].size] = torch.from_numpy(c[2])
        # espeak speaks at most about 4 tokens a second: a bound that stops a wrong model early.
        budget = int(8 + 5 * float(lengths.max()) / SAMPLE_RATE)
        out = model.generate(
            prompts=[asr_messages() for _ in chunk], audios=audio, audio_lens=lengths, max_new_tokens=budget, do_sample=False
        )
        for row in out.tolist():
            ids = row[: row.index(IM_END_ID)] if IM_END_ID in row else row
            hyps.append(model.tokenizer.ids_to_text(ids))
    model.train(was_training)
    return word_error_rate([c[1] for c in clips], hyps), hyps


def _reinit_llm(model: Any, seed: int) -> None:
    """Start the LLM's layers from a trainable scale (the seeded draw is tuned for random-output
    tests). The tied embedding is only scaled (`export/demo.py` EMBED_SCALE): rows training never
    touches are not shipped, `build_demo` regenerates them."""
    gen = torch.Generator().manual_seed(seed)
    layers = sum(1 for n, _ in model.llm.named_parameters() if n.endswith("o_proj.weight"))
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "embed_tokens" in name or "lm_head" in name:
                p.mul_(EMBED_SCALE)  # tied: one tensor, named once
                continue
            if "lora_B" in name:
                p.zero_()
            elif p.ndim == 2:
                std = 1.0 / p.shape[1] ** 0.5
                if name.endswith(("o_proj.base_layer.weight", "o_proj.weight", "down_proj.weight")):
                    std /= (2 * layers) ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * std)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.work: Path = args.work
        self.stage: str = args.stage
        # A shipped model to start from (`--from`): its record, read before `--out` may replace it.
        self.start: Path | None = args.start
        self.start_record: dict[str, Any] | None = None
        self.out: Path = args.out
        self.curve: Path = args.curve
        self.config = TrainConfig(seed=args.seed)
        if args.text_steps is not None:
            self.config.text.steps = args.text_steps
        if args.encoder_steps is not None:
            self.config.encoder.steps = args.encoder_steps
        if args.bridge_steps is not None:
            self.config.bridge.steps = args.bridge_steps
        if args.asr_steps is not None:
            self.config.asr.steps = args.asr_steps
        if args.shards is not None:
            self.config.shards = args.shards
        try:
            apply_overrides(self.config, args.set)
        except ValueError as err:
            raise SystemExit(f"--set {err}") from None
        if self.start is not None:
            if self.stage != "all":
                raise SystemExit("--from runs stages text and asr in one process: leave --stage at all")
            aligned = {"ctc_weight": self.config.ctc_weight, "phoneme_weight": self.config.phoneme_weight,
                       "align_weight": self.config.align_weight}
            if self.config.asr_encoder_lr_scale > 0 and any(aligned.values()):
                # Its auxiliary heads were not shipped: from fresh ones those losses would
                # send noise into a trained encoder. The LLM loss alone may train it.
                raise SystemExit("--from trains the shipped encoder only on the LLM loss (its auxiliary heads "
                                 "were not shipped): with asr_encoder_lr_scale above 0, set "
                                 + ", ".join(f"{key}=0" for key, value in aligned.items() if value))
            try:
                self.start_record = read_record(self.start / "training.json")
            except DemoWeightsError as err:
                raise SystemExit(str(err)) from None
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.work / "log.csv")
        self.copy_score: dict[str, float] = {}
        self.llm_mode: dict[str, dict[str, float]] = {}  # `repeat_score` after stages text and asr
        self.timing: dict[str, float] = json.loads((self.work / "timing.json").read_text()) if (self.work / "timing.json").exists() else {}

    def _note_run(self, asr_from_step: int) -> None:
        """Each invocation's arguments and where its ASR stage started: a run resumed with other
        `--asr-steps` follows another cosine schedule from there, and the record says so."""
        path = self.work / "runs.json"
        runs = json.loads(path.read_text()) if path.exists() else []
        runs.append({"args": sys.argv[2:], "asr_from_step": asr_from_step, "asr_steps": self.config.asr.steps})
        path.write_text(json.dumps(runs, indent=1))

    def _note_time(self, stage: str, seconds: float) -> None:
        path = self.work / "timing.json"
        # Re-read: a run of another stage on this work directory writes its own entries.
        on_disk = json.loads(path.read_text()) if path.exists() else {}
        self.timing = {**on_disk, stage: self.timing.get(stage, 0.0) + seconds}
        path.write_text(json.dumps(self.timing))

    def main(self) -> int:
        torch.manual_seed(self.config.seed)
        # One thread per CPU this process may use: more threads than cores spin and halve the speed.
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        corpus = load_corpus()
        seeded = _seeded(self.work, DEMO_SEED)
        gen = multiprocessing.get_context("spawn").Process(
            target=_generator, args=(self.work, seeded, list(corpus.train), self.config.seed, self.config.shards), daemon=True
        )
        if self.stage != "text":  # the only stage that reads no speech
            gen.start()
        from nemo.collections.speechlm2.models import SALM

        if self.start is None:
            model = SALM.from_pretrained(str(seeded))
            _reinit_llm(model, self.config.seed)
        else:
            model = SALM.from_pretrained(str(self._start_checkpoint()))
        model.train()
        tokenizer = model.tokenizer.tokenizer  # the transformers tokenizer NeMo wraps
        clips = _eval_set(list(corpus.held_out), self.config.seed)
        corpus_ids = self._corpus_ids(corpus.train)
        phoneme_names = phoneme_inventory(sorted(set(token_forms(corpus.train)))) if self.stage != "text" else []
        # Stage text trains the LLM, stage encoder the encoder: neither reads the other's work.
        if self.stage != "encoder":
            self._text_stage(model, tokenizer, list(corpus.train), list(corpus.held_out))
        # From a shipped model the encoder and projection are its own (stages encoder and bridge
        # skipped): the real recipe too starts from a trained encoder.
        if self.stage != "text" and self.start is None:
            encoder_stage = self._asr_stage(model, asr_prompt_ids(tokenizer), corpus_ids, clips, phoneme_names, "encoder")
        if self.stage != "all":
            if gen.is_alive():
                gen.terminate()
            return 0
        bridge = None
        if self.start is None:
            bridge = self._asr_stage(
                model, asr_prompt_ids(tokenizer), corpus_ids, clips, phoneme_names, "bridge", heads_from=encoder_stage
            )
        examples = ChatExamples(tokenizer)
        replay = Replay(examples, list(corpus.train), self.config.seed, self.config.asr_replay_batch)
        self._asr_stage(model, asr_prompt_ids(tokenizer), corpus_ids, clips, phoneme_names, "asr", heads_from=bridge, replay=replay)
        self.llm_mode["final"] = repeat_score(model, examples, list(corpus.held_out))
        print(f"[train] LLM mode (LoRA off), held-out repeats: {self.llm_mode}", file=sys.stderr)
        wer, hyps = evaluate(model, clips)
        multi_wer, _ = evaluate(model, _multi_sentence_set(list(corpus.held_out), self.config.seed))
        print(f"[train] final held-out WER {wer:.3f}, three sentences a clip {multi_wer:.3f}", file=sys.stderr)
        self._ship(model, seeded, corpus, wer, clips, hyps, multi_wer)
        gen.join(timeout=1)
        if gen.is_alive():
            gen.terminate()
        return 0

    def _start_checkpoint(self) -> Path:
        """The `--from` model in the hub layout (built again each time: it is quick, and a
        resumed run must not read a half-written one)."""
        assert self.start is not None
        path = self.work / "from"
        shutil.rmtree(path, ignore_errors=True)
        try:
            return build_demo(path, self.start / "weights.safetensors", self.start / "training.json")
        except DemoWeightsError as err:
            raise SystemExit(str(err)) from None

    @staticmethod
    def _corpus_ids(train: tuple[str, ...]) -> list[int]:
        encode = Encoder()
        # With repeats: the CTC classes are the most frequent tokens.
        return [t for form in token_forms(train) for t in encode(form)]

    def _resume(self, name: str, model: Any, optimizer: torch.optim.Optimizer, extra: list[Any]) -> int:
        path = self.work / f"state-{name}.pt"
        if not path.exists():
            return 0
        state = torch.load(path, weights_only=False)
        # Stage "encoder" keeps only the encoder: the LLM there is not the text stage's.
        missing, unexpected = model.load_state_dict(state["model"], strict=name not in ("encoder", "bridge"))
        if unexpected or (missing and any(k.startswith(ENCODER_PREFIX) for k in missing)):
            raise RuntimeError(f"{path}: not a checkpoint of this model")
        optimizer.load_state_dict(state["optimizer"])
        for module, key in extra:
            if isinstance(module, torch.nn.Module):
                module.load_state_dict(state[key])
            else:  # a bare parameter (the text stage's embedding rows)
                module.data.copy_(state[key])
        print(f"[train] {name}: resumed at step {state['step']}", file=sys.stderr)
        return int(state["step"])

    def _text_stage(self, model: Any, tokenizer: Any, train: list[str], held_out: list[str]) -> None:
        stage = TextStage(model, tokenizer, train, self.config)
        cfg = self.config.text
        optimizer = torch.optim.AdamW(stage.parameters(), lr=cfg.peak_lr, betas=(0.9, 0.98), weight_decay=0.01)
        step = self._resume("text", model, optimizer, [(stage.rows, "rows")])
        last_save, started = time.monotonic(), time.monotonic()
        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            out = stage.loss(step)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(stage.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % 10 == 0 or step == cfg.steps:
                self.log.write(stage="text", step=step, elapsed_s=round(self.timing.get("text", 0) + time.monotonic() - started, 1),
                               loss=round(float(out["loss"]), 4), ce=round(float(out["ce"]), 4), lr=f"{lr_at(step, cfg):.2e}")
                print(f"[train] text {step}/{cfg.steps} loss {float(out['loss']):.3f}", file=sys.stderr, flush=True)
            if time.monotonic() - last_save > self.config.checkpoint_every_s or step == cfg.steps:
                save_state(self.work / "state-text.pt", model, optimizer, {"step": step, "rows": stage.rows.detach()})
                self._note_time("text", time.monotonic() - started)
                started = last_save = time.monotonic()
        stage.finish()
        # Held-out sentences: the skill measured is reading, not knowing the sentence.
        self.copy_score = stage.copy_score(held_out[:COPY_SENTENCES])
        # Stage asr's `llm_mode` "final" is measured against this.
        self.llm_mode["after_text"] = repeat_score(model, stage.examples, held_out)
        print(f"[train] text stage: ASR-prompt copy {self.copy_score}, LLM mode {self.llm_mode}", file=sys.stderr)

    def _asr_stage(
        self,
        model: Any,
        prompt: list[int],
        corpus_ids: list[int],
        clips: list[Any],
        phoneme_names: list[str],
        name: SpeechStage,
        heads_from: AsrStage | None = None,
        replay: Replay | None = None,
    ) -> AsrStage:
        """Stage `name` on speech; a fresh stage that trains the encoder starts with the
        auxiliary heads of `heads_from`."""
        stage = AsrStage(model, prompt, corpus_ids, self.config, name, phoneme_names=phoneme_names, replay=replay)
        encoder_only, bridge = stage.encoder_only, stage.bridge
        cfg: StageConfig = getattr(self.config, name)
        optimizer = torch.optim.AdamW(stage.param_groups(), lr=cfg.peak_lr, betas=(0.9, 0.98), weight_decay=1e-3)
        rows = [(stage.rows, "rows")] if stage.rows is not None else []
        step = self._resume(name, model, optimizer, [(head, key) for key, head in stage.heads().items()] + rows)
        if heads_from is not None and step == 0:
            for key, head in stage.heads().items():
                head.load_state_dict(heads_from.heads()[key].state_dict())
        # Stage asr draws its own batch order rather than the encoder stage's again.
        seed = self.config.seed + int(not encoder_only) + 2 * int(bridge)
        if bridge and step == 0:
            fitting = ShardStream(self.work / "data", self.config.shards, cfg.batch, seed + 1).batches()
            residual = stage.fit_projection(next(fitting) for _ in range(PROJECTION_FIT_BATCHES))
            print(f"[train] bridge: projection fitted, match {residual:.3f}", file=sys.stderr, flush=True)
        stream = ShardStream(self.work / "data", self.config.shards, cfg.batch, seed).batches()
        for _ in range(step):
            next(stream)
        if not encoder_only:
            self._note_run(step)
        last_save, started = time.monotonic(), time.monotonic()
        audio_s = 0.0
        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg) * group.get("lr_scale", 1.0)  # absent in older checkpoints
            out = stage.loss(next(stream), step)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(stage.parameters(), 1.0)
            optimizer.step()
            stage.sync_rows()
            step += 1
            audio_s += float(out["audio_s"])
            wer = ""
            if not encoder_only and step % self.config.eval_every == 0 and step < cfg.steps:  # the last is scored after
                wer = round(evaluate(model, clips)[0], 4)
            if step % 10 == 0 or step == cfg.steps or wer != "":
                elapsed = self.timing.get(name, 0) + time.monotonic() - started
                losses = {k: round(float(v), 4) for k, v in out.items() if k != "audio_s"}
                self.log.write(stage=name, step=step, elapsed_s=round(elapsed, 1), **losses,
                               lr=f"{lr_at(step, cfg):.2e}", audio_s=round(audio_s, 1), wer=wer)  # fmt: skip
                shown = " ".join(f"{k} {v:.3f}" for k, v in losses.items())
                print(f"[train] {name} {step}/{cfg.steps} {shown} audio/s {audio_s / max(1e-9, time.monotonic() - started):.1f} wer {wer}",
                      file=sys.stderr, flush=True)  # fmt: skip
            if time.monotonic() - last_save > self.config.checkpoint_every_s or step == cfg.steps:
                state = model.state_dict()
                if encoder_only:
                    state = {k: v for k, v in state.items() if k.startswith((ENCODER_PREFIX, PROJECTION_PREFIX) if bridge else ENCODER_PREFIX)}
                extras: dict[str, Any] = {key: head.state_dict() for key, head in stage.heads().items()}
                if stage.rows is not None:
                    extras["rows"] = stage.rows.detach()
                save_state(self.work / f"state-{name}.pt", state, optimizer, {"step": step, **extras})
                self._note_time(name, time.monotonic() - started)
                started = last_save = time.monotonic()
                audio_s = 0.0
        return stage

    def _ship(
        self, model: Any, seeded: Path, corpus: Any, wer: float, clips: list[Any], hyps: list[str], multi_wer: float
    ) -> None:
        from safetensors.torch import load_file, save_file

        model.eval()
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            trained = load_file(str(Path(tmp) / WEIGHTS_FILE))
        seeded_state = starting_point(load_file(str(seeded / WEIGHTS_FILE)))
        packed = pack(trained, seeded_state)
        self.out.mkdir(parents=True, exist_ok=True)
        weights = self.out / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in packed.items()}, str(weights))
        weights.chmod(0o644)
        shards = self.config.shards
        record = {
            "command": " ".join(["python -m export train", *sys.argv[2:]]),
            "seed": self.config.seed,
            "demo_seed": DEMO_SEED,
            "config": json.loads(config_json(self.config)),
            "data": {
                "train_sentences": len(corpus.train),
                "held_out_sentences": len(corpus.held_out),
                "utterances": shards * SHARD_SIZE,
                "held_out_voices": list(HELD_OUT_VOICES),
            },
            "runs": json.loads((self.work / "runs.json").read_text()),
            # `--from`: the shipped model this run started from, with its own record.
            **({"from": self.start_record} if self.start_record is not None else {}),
            "wall_time_s": {k: round(v) for k, v in self.timing.items()},
            "final": self._final_losses(),
            "text_stage_copy": self.copy_score,
            "llm_mode": self.llm_mode,
            "held_out_wer_nemo": round(wer, 4),
            "held_out_wer_three_sentences_nemo": round(multi_wer, 4),
            "weights_sha256": sha256(weights),
            "weights_bytes": weights.stat().st_size,
        }
        (self.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        plot_curve(self.work / "log.csv", self.curve)
        (self.work / "eval.json").write_text(json.dumps([{"voice": c[0], "ref": c[1], "hyp": h} for c, h in zip(clips, hyps)], indent=1))
        print(f"[train] shipped {weights} ({weights.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)

    def _final_losses(self) -> dict[str, float]:
        rows = list(csv.DictReader((self.work / "log.csv").open()))
        out: dict[str, float] = {}
        for stage in ("text", "asr"):
            losses = [float(r["ce"]) for r in rows if r["stage"] == stage and r["ce"]][-10:]
            if losses:
                out[f"{stage}_ce_last10_mean"] = round(sum(losses) / len(losses), 4)
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, required=True, help="working directory (data, checkpoints, log)")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help=f"where to ship the weights (default {DEMO_DIR})")
    parser.add_argument("--curve", type=Path, default=TRAINING_CURVE, help=f"training curve PNG (default {TRAINING_CURVE})")
    parser.add_argument("--seed", type=int, default=0, help="training seed (data, order, init of trained parts)")
    parser.add_argument("--text-steps", type=int, default=None, help="steps of the text stage")
    parser.add_argument("--encoder-steps", type=int, default=None, help="steps of the encoder stage")
    parser.add_argument("--bridge-steps", type=int, default=None, help="steps of the bridge stage")
    parser.add_argument("--asr-steps", type=int, default=None, help="steps of the ASR stage")
    parser.add_argument("--shards", type=int, default=None, help=f"speech shards of {SHARD_SIZE} utterances")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting (export/train/trainer.py TrainConfig; a stage's as asr.peak_lr=5e-4), repeatable; "
        "the shipped training.json records the config",
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=Path,
        default=None,
        metavar="DIR",
        help="start from a shipped demo model (DIR/weights.safetensors and training.json): stage text continues "
        "its LLM, its encoder and projection are kept (no stages encoder and bridge), then stage asr",
    )
    parser.add_argument(
        "--stage",
        choices=("all", "text", "encoder"),
        default="all",
        help="run stage text alone, or stage encoder alone (they can run side by side); all: both, then stages bridge and asr",
    )


def run(args: argparse.Namespace) -> int:
    return Run(args).main()
