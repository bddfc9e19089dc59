"""Sample-efficiency sweep: contenders x k on the paired dev runs -> results JSONs, summary, plot.

    python scripts/sample_efficiency.py --models mhd --ks 1 2 5 10 --out results/sample_efficiency
    python scripts/sample_efficiency.py --models mhd vit vit-proto --checkpoint results/vit_small1 ...

Interrupted sweeps resume: rerun the same command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conceptlearn.experiments.sample_efficiency import collect, markdown_table, plot, run_sweep

NEEDS_CHECKPOINT = {"vit", "vit-proto"}
NEEDS_LIBRARY = {"bpl"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mhd"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 5, 10])
    parser.add_argument("--out", default="results/sample_efficiency")
    parser.add_argument("--runs", default="dev", help="committed run set base name")
    parser.add_argument("--checkpoint", default=None, help="pretrained ViT folder (vit, vit-proto)")
    parser.add_argument("--library", default=None, help="generative-model library (bpl)")
    parser.add_argument(
        "--quick", action="store_true", help="quick presets where a contender has one"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N runs only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)

    models = {}
    for name in args.models:
        options = {}
        if name in NEEDS_CHECKPOINT:
            options["checkpoint"] = args.checkpoint
        if name in NEEDS_LIBRARY:
            options["library"] = args.library
        if args.quick and name in NEEDS_LIBRARY:
            options["quick"] = True
        models[name] = options
    paths = run_sweep(
        models, args.ks, args.out, base=args.runs, seed=args.seed, data=args.data, limit=args.limit
    )
    rows = collect(paths)
    out = Path(args.out)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "summary.md").write_text(markdown_table(rows) + "\n")
    plot(rows, out / "sample_efficiency.png")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
