"""``conceptlearn make-runs``: write a run set as official-layout folders (or regenerate the
committed dev run list)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conceptlearn.cli.common import add_data_argument
from conceptlearn.datasets.episodes import load_runs, make_dev_run_set, write_run_folders


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default="dev", help="committed run set (dev, dev-k5, ...) [dev]")
    parser.add_argument("--out", required=True, help="destination folder for runNN/ folders")
    add_data_argument(parser)
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="rebuild data/dev_runs.json from the data (seed 0) instead of writing folders",
    )


def run(args: argparse.Namespace) -> int:
    if args.regenerate:
        run_set = make_dev_run_set(args.data)
        out = Path(args.out)
        out.write_text(json.dumps(run_set, indent=1) + "\n")
        print(f"wrote {len(run_set['runs'])} runs to {out}")
        return 0
    runs, source = load_runs(args.runs, args.data)
    written = write_run_folders(runs, source, args.out)
    print(f"wrote {len(written)} runs to {args.out}")
    return 0
