"""``conceptlearn evaluate``: one contender on one run set -> a results JSON (resumable)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from conceptlearn.cli.common import add_data_argument
from conceptlearn.contenders import make_contender
from conceptlearn.datasets.episodes import load_runs
from conceptlearn.datasets.shifts import parse_shift
from conceptlearn.evaluate import contender_and_source, evaluate_contender, sweep_spec
from conceptlearn.overrides import parse_key_values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="contender name (see conceptlearn.contenders.REGISTRY)"
    )
    parser.add_argument(
        "--runs", default="dev", help="run set name (dev, dev-k5, ...) or run folder(s)"
    )
    parser.add_argument(
        "--out", required=True, help="results JSON (written as runs finish; resumed)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N runs (for quick checks)"
    )
    parser.add_argument("--checkpoint", default=None, help="pretrained ViT checkpoint folder (default: the shipped small1 one)")
    parser.add_argument(
        "--library",
        default=None,
        help="bpl's library .npz (default: the shipped small1 library; standin: the stand-in prior)",
    )
    parser.add_argument(
        "--quick", action="store_true", default=None, help="the contender's quick preset"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override a contender hyperparameter (VALUE parsed as JSON when it can be); repeatable",
    )
    add_data_argument(parser)
    parser.add_argument(
        "--shift",
        default=None,
        metavar="NAME=STRENGTH",
        help="out-of-distribution shift applied to the queries, e.g. rotate=30, scale=0.7, thicken=2",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes to spread the runs over (same results as 1; each holds its own model)",
    )
    parser.add_argument(
        "--ks",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="a k-sweep: score k = K ... shots per class from one pass over --runs's largest-k "
        "set (e.g. --runs dev --ks 1 2 5 10); one results file per k (--out with _kK)",
    )
    parser.add_argument(
        "--parse-cache",
        default=None,
        metavar="DIR",
        help="bpl: content-addressed parse cache, shared by reruns, shifts and processes "
        "(default: $CONCEPTLEARN_CACHE/parses, under the user's cache folder; 'off': none)",
    )
    parser.add_argument("--no-progress", action="store_true")


def default_parse_cache(model: str, flag: str | None) -> str | None:
    """The parse cache folder of ``--parse-cache`` (bpl only; None: no cache)."""
    if model != "bpl" or flag == "off":
        return None
    if flag is None:
        from conceptlearn.cache import user_cache_dir

        return str(user_cache_dir() / "parses")
    return flag


def run(args: argparse.Namespace) -> int:
    if args.shift is not None:
        parse_shift(args.shift)  # fail before any work on a bad spec
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    spec = args.runs
    if args.ks is not None and not Path(str(spec)).is_dir():
        spec = sweep_spec(spec, max(args.ks))  # the sweep reads the largest-k run set
    runs, source = load_runs(spec, args.data)
    if args.limit is not None:
        runs = runs[: args.limit]
    options = dict(
        seed=args.seed,
        checkpoint=args.checkpoint,
        library=args.library,
        quick=args.quick,
        overrides=parse_key_values(args.overrides) or None,
        parse_cache=default_parse_cache(args.model, args.parse_cache),
    )
    contender = make_contender(args.model, **options)
    setup = functools.partial(contender_and_source, args.model, options, spec, args.data)
    results = evaluate_contender(
        contender,
        runs,
        source,
        args.out,
        seed=args.seed,
        runs_spec=args.runs,
        shift=args.shift,
        progress=not args.no_progress,
        workers=args.workers,
        worker_setup=setup,
        ks=args.ks,
    )
    shifted = f" (queries shifted: {args.shift})" if args.shift else ""
    for res in results.values() if args.ks is not None else [results]:
        lo, hi = res["ci95_pct"]
        print(
            f"{res['model']} on {res['runs_spec']}{shifted}: {res['mean_error_pct']:.2f}% error "
            f"(95% CI {lo:.2f}-{hi:.2f}) over {len(res['runs'])} runs, {res['seconds_total']:.1f} s"
        )
    return 0
