"""``conceptlearn learn``: learn the generative model's library from background strokes
(:func:`conceptlearn.model.learn.learn_library`), optionally with its report and the plot of its
held-out primitive-count curve."""

from __future__ import annotations

import argparse
import json
import time

from conceptlearn.model.learn import LearnConfig, collect_drawings, learn_library
from conceptlearn.model.library import save_library


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--background",
        nargs="+",
        default=["small1"],
        help="Omniglot splits of strokes to learn from (background|small1|small2; several: "
        "learned from together, e.g. small1 small2)",
    )
    parser.add_argument("--out", required=True, help="library file to write (.npz)")
    parser.add_argument("--data", default=None, help="Omniglot folder (default $CONCEPTLEARN_DATA)")
    parser.add_argument("--alphabets", nargs="*", default=None, help="only these alphabets")
    parser.add_argument("--max-characters", type=int, default=None, help="first N characters")
    parser.add_argument(
        "--n-primitives",
        type=int,
        default=None,
        help="fix the number of primitives (default: choose by held-out likelihood)",
    )
    parser.add_argument(
        "--k-grid", type=int, nargs="*", default=None, help="candidate numbers of primitives"
    )
    parser.add_argument("--report", default=None, help="also write the learning report (JSON)")
    parser.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="also draw the held-out curve (log p per stroke against the number of primitives)",
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from conceptlearn.datasets.omniglot import OmniglotStrokes

    if args.plot and args.n_primitives is not None:
        raise SystemExit("learn: --plot draws the held-out curve; leave out --n-primitives")
    start = time.perf_counter()
    config = LearnConfig(
        n_primitives=args.n_primitives,
        seed=args.seed,
        **({"k_grid": tuple(args.k_grid)} if args.k_grid else {}),
    )
    strokes = [OmniglotStrokes(name, args.data) for name in args.background]
    try:
        drawings, stats = collect_drawings(strokes, args.alphabets, args.max_characters)
    except ValueError as e:
        raise SystemExit(f"learn: --alphabets: {e}") from None
    library, report = learn_library(drawings, config)
    save_library(library, args.out)
    report = {
        "background": " ".join(args.background),
        **stats,
        **report,
        "seconds": time.perf_counter() - start,
    }
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        from conceptlearn.experiments.plots import plot_heldout_curve

        plot_heldout_curve(report, args.plot)
    print(json.dumps({k: v for k, v in report.items() if k != "heldout_curve"}))
    for row in report.get("heldout_curve", []):
        print(
            f"  K={row['k']:4d}  held-out log p / stroke = {row['heldout_log_prob_per_stroke']:.3f}"
        )
    return 0
