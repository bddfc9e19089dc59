"""Learn a library (same as ``conceptlearn learn``) and plot its held-out primitive-count curve.

    python scripts/learn_library.py --background small1 --out results/small1.npz \
        --report results/small1_learn.json --plot docs/img/primitives_curve.png

With ``--from-report FILE`` it only redraws the plot from an existing report.
"""

from __future__ import annotations

import argparse
import json
import sys

from conceptlearn.model import learn


def plot_curve(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["heldout_curve"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["k"] for r in rows], [r["heldout_log_prob_per_stroke"] for r in rows], "o-")
    ax.axvline(report["n_primitives"], color="gray", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("number of primitives K")
    ax.set_ylabel("held-out log p per stroke (nats)")
    ax.set_title(f"primitives from {report['background']}: chosen K = {report['n_primitives']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", required=True, help="curve image to write (.png)")
    parser.add_argument("--from-report", default=None, help="replot an existing report JSON")
    args, rest = parser.parse_known_args(argv)
    if args.from_report is None:
        sub = argparse.ArgumentParser()
        learn.add_arguments(sub)
        learn_args = sub.parse_args(rest)
        if not learn_args.report:
            parser.error("--report is needed to plot")
        learn.run(learn_args)
        args.from_report = learn_args.report
    with open(args.from_report) as f:
        plot_curve(json.load(f), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
