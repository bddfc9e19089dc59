"""Sweeps of the harness: contenders x k (sample efficiency) x query shifts (out-of-distribution),
one results file per cell, then tables and plots.

Each results file is the harness's own, so a whole sweep resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conceptlearn.contenders import make_contender
from conceptlearn.datasets.episodes import load_runs
from conceptlearn.evaluate import evaluate_contender


def results_path(out_dir: Path, model: str, base: str, k: int, shift: str | None = None) -> Path:
    suffix = "" if shift is None else "_" + shift.replace("=", "")
    return Path(out_dir) / f"{model}_{base}_k{k}{suffix}.json"


def run_sweep(
    models: Mapping[str, Mapping[str, Any]],
    ks: Sequence[int],
    out_dir: str | Path,
    *,
    base: str = "dev",
    seed: int = 0,
    data=None,
    limit: int | None = None,
    shifts: Sequence[str | None] = (None,),
) -> list[Path]:
    """Evaluate each ``models[name]`` (factory options) on ``{base}-k{k}`` for every k and every
    query shift (``None`` = clean)."""
    written = []
    for name, options in models.items():
        contender = make_contender(name, seed=seed, **options)
        for k in ks:
            runs, source = load_runs(f"{base}-k{k}", data)
            runs = runs[:limit] if limit else runs
            for shift in shifts:
                path = results_path(Path(out_dir), name, base, k, shift)
                evaluate_contender(
                    contender, runs, source, path, seed=seed, runs_spec=f"{base}-k{k}", shift=shift
                )
                written.append(path)
    return written


def collect(paths: Sequence[str | Path]) -> list[dict]:
    """One row per results file: model, k, error and its interval, seconds per run."""
    rows = []
    for path in paths:
        results = json.loads(Path(path).read_text())
        k = int(results["runs_spec"].rsplit("-k", 1)[1]) if "-k" in results["runs_spec"] else 1
        rows.append(
            {
                "model": results["model"],
                "k": k,
                "shift": results.get("shift"),
                "error_pct": results["mean_error_pct"],
                "ci95_pct": results["ci95_pct"],
                "n_runs": len(results["runs"]),
                "seconds_per_run": results["seconds_total"] / max(len(results["runs"]), 1),
                "device": results["device"],
                "file": str(path),
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["k"], r["shift"] or ""))


def markdown_table(rows: Sequence[dict]) -> str:
    lines = [
        "| model | k | query shift | error % | 95% CI | runs | s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["ci95_pct"]
        lines.append(
            f"| {r['model']} | {r['k']} | {r['shift'] or 'none'} | {r['error_pct']:.1f} | "
            f"{lo:.1f}-{hi:.1f} | {r['n_runs']} | {r['seconds_per_run']:.2f} |"
        )
    return "\n".join(lines)


def _figure(width: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, 3.6), dpi=150)
    return plt, fig, ax


def _save(plt, fig, out_png: str | Path) -> Path:
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def plot_sample_efficiency(rows: Sequence[dict], out_png: str | Path) -> Path:
    """Error (%) against examples per concept, one line per model with its 95% band (clean rows)."""
    rows = [r for r in rows if r["shift"] is None]
    plt, fig, ax = _figure(5)
    for model in sorted({r["model"] for r in rows}):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["k"])
        ks = [r["k"] for r in mine]
        ax.plot(ks, [r["error_pct"] for r in mine], marker="o", label=model)
        ax.fill_between(
            ks, [r["ci95_pct"][0] for r in mine], [r["ci95_pct"][1] for r in mine], alpha=0.2
        )
    ax.set_xscale("log")
    ax.set_xticks(
        sorted({r["k"] for r in rows}), labels=[str(k) for k in sorted({r["k"] for r in rows})]
    )
    ax.set_xlabel("examples per concept (k)")
    ax.set_ylabel("error (%), 20-way dev runs")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, out_png)


def plot_shifts(rows: Sequence[dict], out_png: str | Path) -> Path:
    """Grouped bars: error (%) per query shift, one bar per model, with 95% intervals."""
    import numpy as np

    models = sorted({r["model"] for r in rows})
    shifts = sorted({r["shift"] or "none" for r in rows}, key=lambda s: (s != "none", s))
    plt, fig, ax = _figure(1.2 + 0.9 * len(shifts))
    width = 0.8 / len(models)
    for m, model in enumerate(models):
        cells = {r["shift"] or "none": r for r in rows if r["model"] == model}
        xs = [i + m * width for i, s in enumerate(shifts) if s in cells]
        errs = [cells[s]["error_pct"] for s in shifts if s in cells]
        lo = [cells[s]["error_pct"] - cells[s]["ci95_pct"][0] for s in shifts if s in cells]
        hi = [cells[s]["ci95_pct"][1] - cells[s]["error_pct"] for s in shifts if s in cells]
        ax.bar(xs, errs, width, yerr=[lo, hi], capsize=2, label=model)
    ax.set_xticks(np.arange(len(shifts)) + 0.4 - width / 2, labels=shifts, rotation=30, ha="right")
    ax.set_ylabel("error (%), 20-way dev runs")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(plt, fig, out_png)
