"""Plot the pretraining loss curves that ``conceptlearn pretrain-vit`` records in each
checkpoint's ``config.json`` (``loss_curve``: the running mean of the batch loss every 10 steps).

    python scripts/vit_pretrain_curve.py checkpoints/vit_small12 [CKPT ...] \
        --out docs/img/vit_pretrain_loss.png

Prints, for each checkpoint, the running loss at each tenth of its steps and the relative drop
over its last fifth (a plateau shows as a drop near zero).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_curve(checkpoint: Path) -> tuple[dict, list[list[float]]]:
    """``(config.json dict, [[step, running loss], ...])``; a clear error if it has none."""
    path = checkpoint / "config.json"
    if not path.exists():
        sys.exit(f"vit_pretrain_curve: {path}: not found")
    config = json.loads(path.read_text())
    curve = config.get("loss_curve") or []
    if not curve:
        sys.exit(f"vit_pretrain_curve: {path}: no loss_curve (trained before it was recorded)")
    return config, curve


def last_fifth_drop(curve: list[list[float]]) -> float:
    """Relative fall of the running loss over the last fifth of the steps."""
    steps = [s for s, _ in curve]
    cut = steps[-1] - steps[-1] / 5
    before = min(curve, key=lambda point: abs(point[0] - cut))[1]
    return (before - curve[-1][1]) / before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG (an SVG is written beside it)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    for checkpoint in args.checkpoints:
        config, curve = read_curve(checkpoint)
        steps, losses = zip(*curve, strict=True)
        label = f"{config['background']} ({steps[-1]} steps, {config['train_seconds'] / 60:.0f} min)"
        ax.plot(steps, losses, label=label)
        tenths = [losses[min(len(losses) - 1, round(i * len(losses) / 10) - 1)] for i in range(1, 11)]
        print(json.dumps({"checkpoint": str(checkpoint), "background": config["background"],
                          "steps": steps[-1], "seconds": round(config["train_seconds"]),
                          "loss_at_tenths": [round(v, 3) for v in tenths],
                          "last_fifth_drop": round(last_fifth_drop(curve), 3)}))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (running mean)")
    ax.set_title("ViT pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    fig.savefig(args.out.with_suffix(".svg"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
