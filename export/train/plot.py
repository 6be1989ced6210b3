"""The training curve (docs/training-curve.png) from a training run's log.csv."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any


def _series(axis: Any, rows: list[dict[str, str]], key: str, **style: Any) -> None:
    """One loss over the steps that logged it (a stage logs only the losses it computes)."""
    points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
    if points:
        axis.plot([s for s, _ in points], [v for _, v in points], **style)


def plot_curve(log: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log.open()))
    text = [(int(r["step"]), float(r["ce"])) for r in rows if r["stage"] == "text" and r["ce"]]
    asr = [r for r in rows if r["stage"] == "asr"]
    encoder = [r for r in rows if r["stage"] == "encoder"]
    # Stage bridge goes on from stage encoder's last step.
    last = max((int(r["step"]) for r in encoder), default=0)
    encoder += [{**r, "step": str(last + int(r["step"]))} for r in rows if r["stage"] == "bridge"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4))
    left.plot([s for s, _ in text], [v for _, v in text], color="tab:blue")
    left.set(title="stage text: Qwen3 base, chat-format English", xlabel="step", ylabel="cross-entropy (sampled softmax)")
    for key, label, color in (("ctc", "token CTC", "tab:gray"), ("phoneme_ctc", "phoneme CTC", "tab:brown"),
                              ("align", "per-frame tokens (spoken, before)", "tab:purple"),
                              ("read", "bridge: frames read as tokens", "tab:olive"),
                              ("match", "bridge: frame-to-sketch distance", "tab:red")):  # fmt: skip
        _series(middle, encoder, key, label=label, color=color)
    middle.set(title="stages encoder, then bridge: FastConformer (+ projection)", xlabel="step", ylabel="loss", yscale="log")
    middle.legend(loc="upper right")
    _series(right, asr, "ce", label="LLM cross-entropy", color="tab:orange")
    _series(right, asr, "match", label="frame-to-sketch distance", color="tab:red", alpha=0.6)
    right.set(title="stage asr: projection, LoRA", xlabel="step", ylabel="loss", yscale="log")
    scored = [(int(r["step"]), float(r["wer"])) for r in asr if r["wer"]]
    if scored:
        wer_axis = right.twinx()
        wer_axis.plot([s for s, _ in scored], [100 * w for _, w in scored], "o-", color="tab:green", label="held-out WER")
        wer_axis.set_ylabel("held-out WER % (NeMo SALM.generate)")
        wer_axis.legend(loc="lower left")
    right.legend(loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.train.plot", description=__doc__)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(plot_curve(args.log, args.out))


if __name__ == "__main__":
    main()
