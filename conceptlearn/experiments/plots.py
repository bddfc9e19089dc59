"""The comparison's three figures, each written as PNG and SVG (matplotlib, Agg backend):

- ``sample_efficiency``: error against examples per concept, one line per contender with its
  95% band;
- ``shifts``: one panel per shift family, error against the shift's strength from the unshifted
  error, one line per contender with its 95% band;
- ``anytime``: bpl's error against search effort, every contender's error against wall seconds
  per episode, and the ViT's against its fine-tuning steps.

Each takes ``results`` (``results.json``'s contents) and a folder, and returns the paths written.
:func:`plot_heldout_curve` draws ``conceptlearn learn``'s choice of the number of primitives.
"""

from __future__ import annotations

from pathlib import Path

from conceptlearn.datasets.shifts import UNITS

IDENTITY = {"scale": 1.0}  # the strength of each family that changes nothing (default 0)
_COLOURS = {"bpl": "C0", "vit": "C1", "vit-proto": "C2", "mhd": "C3", "vit-scratch": "C4"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(model: str) -> str:
    return _COLOURS.get(model, "C5")


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path)
    _pyplot().close(fig)
    return paths


def _log_x(ax) -> None:
    """A log x axis labelled at 1, 2, 5 x 10^n in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _runs_label(results: dict, n_runs: int | None = None) -> str:
    n = n_runs or results["plan"]["n_runs"]
    return f"error (%), {n} runs of {results['plan']['runs']}"


def plot_sample_efficiency(results: dict, out: Path) -> list[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=150)
    rows = results["summary"]["sample_efficiency"]
    for model, row in rows.items():
        ks = sorted(int(k) for k in row["error_pct"])
        errors = [row["error_pct"][str(k)] for k in ks]
        lo = [row["ci95_pct"][str(k)][0] for k in ks]
        hi = [row["ci95_pct"][str(k)][1] for k in ks]
        ax.plot(ks, errors, marker="o", color=_colour(model), label=model)
        ax.fill_between(ks, lo, hi, color=_colour(model), alpha=0.2, linewidth=0)
    if rows:
        ks = sorted({int(k) for row in rows.values() for k in row["error_pct"]})
        ax.set_xscale("log")
        ax.set_xticks(ks, labels=[str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("examples per concept, k (shots per class)")
        ax.set_ylabel(_runs_label(results))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(title="95% bands over runs")
        ax.set_title("Sample efficiency")
    else:
        _empty(ax, "no sample-efficiency cells")
    return _save(fig, out, "sample_efficiency")


def plot_shifts(results: dict, out: Path) -> list[Path]:
    plt = _pyplot()
    s = results["summary"]
    families = list(
        dict.fromkeys(row["family"] for table in s["shifts"].values() for row in table.values())
    )
    cols = min(3, max(1, len(families)))
    nrows = max(1, -(-len(families) // cols))
    fig, axes = plt.subplots(
        nrows, cols, figsize=(max(5.5, 4.2 * cols), 0.6 + 3.3 * nrows), dpi=150, squeeze=False
    )
    for ax in axes.ravel()[len(families) :]:
        ax.axis("off")
    if not families:
        _empty(axes[0, 0], "no shift cells")
        axes[0, 0].axis("on")
    for ax, family in zip(axes.ravel(), families, strict=False):
        for model, table in s["shifts"].items():
            rows = sorted(
                (r for r in table.values() if r["family"] == family),
                key=lambda r: abs(r["severity"] - IDENTITY.get(family, 0.0)),
            )
            if not rows:
                continue
            base = s["clean_on_shift_runs"][model]
            xs = [IDENTITY.get(family, 0.0)] + [r["severity"] for r in rows]
            ys = [base["error_pct"]] + [r["error_pct"] for r in rows]
            lo = [base["ci95_pct"][0]] + [r["ci95_pct"][0] for r in rows]
            hi = [base["ci95_pct"][1]] + [r["ci95_pct"][1] for r in rows]
            ax.plot(xs, ys, marker="o", color=_colour(model), label=model)
            ax.fill_between(xs, lo, hi, color=_colour(model), alpha=0.2, linewidth=0)
        ax.set_title(family)
        ax.set_xlabel(UNITS.get(family, "strength"))
        ax.set_ylabel("error (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    if families:
        axes[0, 0].legend(title="95% bands")
        n = next(iter(s["clean_on_shift_runs"].values()))["n_runs"]
        where = "queries and support" if results["plan"]["shift_support"] else "queries"
        fig.suptitle(
            f"Out of distribution: k = 1, {n} runs of {results['plan']['runs']}\n"
            f"{where} shifted; the leftmost point is unshifted",
            fontsize=10,
        )
    return _save(fig, out, "shifts")


def plot_anytime(results: dict, out: Path) -> list[Path]:
    plt = _pyplot()
    cells = [c for c in results["cells"] if c["experiment"] == "anytime"]
    vit = [c for c in cells if c["contender"] == "vit"]
    panels = 3 if vit else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8), dpi=150, squeeze=False)
    axes = axes[0]

    def curve(ax, rows, x_of, model, annotate=True):
        rows = sorted(rows, key=x_of)
        xs = [x_of(c) for c in rows]
        ys = [c["mean_error_pct"] for c in rows]
        err = [
            [y - c["ci95_pct"][0] for y, c in zip(ys, rows, strict=True)],
            [c["ci95_pct"][1] - y for y, c in zip(ys, rows, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=_colour(model), label=model)
        if len(rows) > 1:
            lo = [c["ci95_pct"][0] for c in rows]
            hi = [c["ci95_pct"][1] for c in rows]
            ax.fill_between(xs, lo, hi, color=_colour(model), alpha=0.15, linewidth=0)
        if annotate:
            for x, y, c in zip(xs, ys, rows, strict=True):
                ax.annotate(
                    c["point"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )

    bpl = [c for c in cells if c["contender"] == "bpl"]
    ax = axes[0]
    if bpl:
        curve(ax, bpl, lambda c: c["effort"]["proposals_x_refit_steps"], "bpl")
        _log_x(ax)
        ax.set_xlabel("search effort: proposals x refit steps")
        ax.set_ylabel(_runs_label(results))
        ax.set_title("bpl: error against search effort")
        ax.grid(alpha=0.3)
        ax.legend()
    else:
        _empty(ax, "no bpl anytime cells")

    ax = axes[1]
    timed = [c for c in cells if c["seconds_per_episode_median"]]
    for model in dict.fromkeys(c["contender"] for c in timed):
        mine = [c for c in timed if c["contender"] == model]
        curve(ax, mine, lambda c: c["seconds_per_episode_median"], model, annotate=len(mine) > 1)
    if timed:
        _log_x(ax)
        ax.set_xlabel(f"wall seconds per episode (median; {results['device']})")
        ax.set_ylabel(_runs_label(results))
        ax.set_title("error against inference time")
        ax.grid(alpha=0.3)
        ax.legend()
    else:
        _empty(ax, "no timed cells")

    if vit:
        ax = axes[2]
        curve(ax, vit, lambda c: c["effort"]["finetune_steps"], "vit", annotate=False)
        _log_x(ax)
        ax.set_xlabel("ViT fine-tuning steps per episode")
        ax.set_ylabel(_runs_label(results))
        ax.set_title("vit: error against fine-tuning")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes:
        ax.set_ylim(bottom=0)
    return _save(fig, out, "anytime")


def plot_all(results: dict, out: str | Path) -> list[Path]:
    """Every figure of the comparison into ``out``."""
    out = Path(out)
    return [
        *plot_sample_efficiency(results, out),
        *plot_shifts(results, out),
        *plot_anytime(results, out),
    ]


def plot_heldout_curve(report: dict, path: str | Path) -> Path:
    """``conceptlearn learn``'s report (its ``heldout_curve``, ``n_primitives`` and
    ``background``) -> held-out log p per stroke against the number of primitives K, written to
    ``path`` (any matplotlib format)."""
    plt = _pyplot()
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
    plt.close(fig)
    return Path(path)
