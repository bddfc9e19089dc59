"""The comparison: contenders on the paired dev runs, over k (sample efficiency) and under query
shifts (out-of-distribution) -> one results JSON per cell, summary.json/.md and two plots.

    python scripts/compare.py --models mhd --out results/compare
    python scripts/compare.py --models mhd vit vit-proto --checkpoint results/vit_small1 \\
        --ks 1 2 5 10 --shifts rotate=30 scale=0.7 thicken=2 flip=0.02 --out results/compare

Interrupted sweeps resume: rerun the same command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conceptlearn.experiments.sweep import (
    collect,
    markdown_table,
    plot_sample_efficiency,
    plot_shifts,
    run_sweep,
)

DEFAULT_SHIFTS = [
    "rotate=30",
    "scale=0.7",
    "shear=0.4",
    "thicken=2",
    "thin=1",
    "flip=0.02",
    "occlude=25",
]
OPTION_OF = {"vit": "checkpoint", "vit-proto": "checkpoint", "bpl": "library"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mhd"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 5, 10], help="shots per class")
    parser.add_argument(
        "--shifts", nargs="*", default=DEFAULT_SHIFTS, help="query shifts (none: skip)"
    )
    parser.add_argument(
        "--shift-ks", nargs="+", type=int, default=[1], help="k values for the shifts"
    )
    parser.add_argument("--out", default="results/compare")
    parser.add_argument("--runs", default="dev", help="committed run set base name")
    parser.add_argument("--checkpoint", default=None, help="pretrained ViT folder (vit, vit-proto)")
    parser.add_argument("--library", default=None, help="generative-model library (bpl)")
    parser.add_argument("--quick", action="store_true", help="bpl's quick preset")
    parser.add_argument("--limit", type=int, default=None, help="first N runs only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)

    models = {}
    for name in args.models:
        options = {}
        if name in OPTION_OF:
            options[OPTION_OF[name]] = getattr(args, OPTION_OF[name])
        if name == "bpl" and args.quick:
            options["quick"] = True
        models[name] = options
    common = {"base": args.runs, "seed": args.seed, "data": args.data, "limit": args.limit}
    paths = run_sweep(models, args.ks, args.out, **common)
    if args.shifts:
        paths += run_sweep(models, args.shift_ks, args.out, shifts=args.shifts, **common)
    rows = collect(sorted(set(paths)))
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "summary.md").write_text(markdown_table(rows) + "\n")
    plot_sample_efficiency(rows, out / "sample_efficiency.png")
    shift_ks = set(args.shift_ks)
    if args.shifts:
        plot_shifts([r for r in rows if r["k"] in shift_ks], out / "shifts.png")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
