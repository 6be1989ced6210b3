"""The training curve (docs/training-curve.png) from a training run's log.csv."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def plot_curve(log: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log.open()))
    text = [(int(r["step"]), float(r["ce"])) for r in rows if r["stage"] == "text" and r["ce"]]
    asr = [r for r in rows if r["stage"] == "asr"]
    encoder = [r for r in rows if r["stage"] == "encoder"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4))
    left.plot([s for s, _ in text], [v for _, v in text], color="tab:blue")
    left.set(title="stage text: Qwen3 base, chat-format English", xlabel="step", ylabel="cross-entropy (sampled softmax)")
    steps = [int(r["step"]) for r in encoder]
    middle.plot(steps, [float(r["ctc"]) for r in encoder], label="CTC", color="tab:gray")
    middle.plot(steps, [float(r["align"]) for r in encoder], label="per-frame tokens (spoken, before)", color="tab:purple")
    middle.set(title="stage encoder: FastConformer alone", xlabel="step", ylabel="loss", yscale="log")
    middle.legend(loc="upper right")
    steps = [int(r["step"]) for r in asr]
    right.plot(steps, [float(r["ce"]) for r in asr], label="LLM cross-entropy", color="tab:orange")
    right.plot(steps, [float(r["ctc"]) for r in asr], label="auxiliary CTC", color="tab:gray", alpha=0.6)
    right.plot(steps, [float(r["align"]) for r in asr], label="auxiliary per-frame tokens", color="tab:purple", alpha=0.6)
    matched = [(int(r["step"]), float(r["match"])) for r in asr if r.get("match")]
    if matched:
        right.plot([s for s, _ in matched], [v for _, v in matched], label="auxiliary frame-to-sketch distance", color="tab:red", alpha=0.6)
    right.set(title="stage asr: encoder, projection, LoRA", xlabel="step", ylabel="loss", yscale="log")
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
