"""What a comparison's cells say: the derived numbers of ``results.json``'s ``summary`` and the
tables of ``summary.md``.

Cells are those of :func:`conceptlearn.experiments.compare.collect`. Errors are pooled over the
queries of a cell's runs, with the harness's 95% bootstrap interval over runs; a shift's drop is
the shifted minus the unshifted error on the same runs (percentage points), with a paired
bootstrap interval (the same resampled runs on both sides).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from conceptlearn.evaluate import bootstrap_ci

TRANSFORMERS = ("vit", "vit-proto")  # the transformer of the ratios: the first one present
ACCURACY_TARGETS = (80, 90)  # % accuracy for "smallest k reaching"


def _pooled(entries: Sequence[dict]) -> float:
    n_test = sum(e["n_test"] for e in entries)
    return 100.0 * sum(e["n_errors"] for e in entries) / n_test if n_test else float("nan")


def paired_drop_ci(
    clean: Sequence[dict], shifted: Sequence[dict], *, n_boot: int = 10_000, seed: int = 0
) -> list[float]:
    """95% interval of the pooled shifted-minus-clean error (percentage points), resampling runs
    with replacement, the same runs on both sides; entries are the harness's per-run entries
    of the same runs in the same order."""
    if not clean:
        return [float("nan"), float("nan")]
    a = np.asarray([e["n_errors"] for e in clean], np.float64)
    b = np.asarray([e["n_errors"] for e in shifted], np.float64)
    n = np.asarray([e["n_test"] for e in clean], np.float64)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    drop = 100.0 * (b[idx].sum(axis=1) - a[idx].sum(axis=1)) / n[idx].sum(axis=1)
    lo, hi = np.percentile(drop, [2.5, 97.5])
    return [float(lo), float(hi)]


def _models(cells: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(c["contender"] for c in cells))


def _smallest_k(errors: dict[int, float], max_error: float) -> int | None:
    return next((k for k in sorted(errors) if errors[k] <= max_error), None)


def summarise(results: dict) -> dict:
    """Sample efficiency (errors by k, the smallest k reaching each accuracy target, the k each
    transformer needs to match bpl at k = 1) and shifts (error, drop and its interval, drop
    ratio against the transformer) from ``results["cells"]``. Keys that are k are strings."""
    cells = results["cells"]
    efficiency = [c for c in cells if c["experiment"] == "sample_efficiency"]
    by_model: dict[str, dict[int, dict]] = {}
    for c in efficiency:
        by_model.setdefault(c["contender"], {})[c["k"]] = c
    sample: dict[str, dict] = {}
    for model, by_k in by_model.items():
        errors = {k: c["mean_error_pct"] for k, c in sorted(by_k.items())}
        sample[model] = {
            "error_pct": {str(k): e for k, e in errors.items()},
            "ci95_pct": {str(k): by_k[k]["ci95_pct"] for k in sorted(by_k)},
            **{f"k_for_{t}pct_accuracy": _smallest_k(errors, 100 - t) for t in ACCURACY_TARGETS},
        }
    transformer = next((m for m in TRANSFORMERS if m in by_model), None)
    match = {}
    if "bpl" in by_model and 1 in by_model["bpl"]:
        target = by_model["bpl"][1]["mean_error_pct"]
        for model in by_model:
            if model != "bpl":
                errors = {k: c["mean_error_pct"] for k, c in by_model[model].items()}
                match[model] = {
                    "bpl_k1_error_pct": target,
                    "k": _smallest_k(errors, target),
                    "max_k": max(errors),
                }

    shifts: dict[str, dict[str, dict]] = {}
    clean: dict[str, dict] = {}
    for c in (c for c in cells if c["experiment"] == "shift"):
        base = by_model.get(c["contender"], {}).get(1)
        if base is None:
            continue
        base_runs = {r["run"]: r for r in base["runs"]}
        runs = [r for r in c["runs"] if r["run"] in base_runs]
        before = [base_runs[r["run"]] for r in runs]
        clean_error = _pooled(before)
        clean[c["contender"]] = {
            "error_pct": clean_error,
            "ci95_pct": bootstrap_ci(
                [e["n_errors"] for e in before], [e["n_test"] for e in before]
            ),
            "n_runs": len(before),
        }
        shifts.setdefault(c["contender"], {})[c["shift"]] = {
            "family": c["family"],
            "severity": c["severity"],
            "error_pct": c["mean_error_pct"],
            "ci95_pct": c["ci95_pct"],
            "clean_error_pct": clean_error,
            "drop_pct": c["mean_error_pct"] - clean_error,
            "drop_ci95_pct": paired_drop_ci(before, runs),
        }
    if transformer in shifts:
        for table in shifts.values():
            for spec, row in table.items():
                reference = shifts[transformer].get(spec, {}).get("drop_pct")
                ok = reference is not None and reference > 0
                row["drop_ratio_vs_transformer"] = row["drop_pct"] / reference if ok else None
    return {
        "transformer": transformer,
        "sample_efficiency": sample,
        "k_to_match_bpl_k1": match,
        "clean_on_shift_runs": clean,
        "shifts": shifts,
    }


# --------------------------------------------------------------------------- markdown


def _err(error: float, ci: Sequence[float]) -> str:
    return f"{error:.1f} ({ci[0]:.1f}-{ci[1]:.1f})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _k(k: int | None, max_k: int | None = None) -> str:
    return (
        f"> {max_k}"
        if k is None and max_k is not None
        else ("not reached" if k is None else str(k))
    )


def summary_markdown(results: dict, wall_seconds: float) -> str:
    """``summary.md``: the command, machine and versions, then one table per experiment."""
    s, plan, cells = results["summary"], results["plan"], results["cells"]
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    shift_runs = next((len(c["runs"]) for c in cells if c["experiment"] == "shift"), None)
    where = "queries and support" if plan["shift_support"] else "queries"
    lines = [
        f"# conceptlearn compare: {results['preset']} preset",
        "",
        f"- command: `{results['command']}`",
        f"- machine: {results['device']}; this invocation took {wall_seconds / 60:.1f} min "
        "(cells finished by an earlier invocation are read, not recomputed)",
        f"- versions: {versions}",
        f"- runs: the first {plan['n_runs']} of `{plan['runs']}`, seed {plan['seed']}"
        + (
            f"; shift cells at k = 1 on the first {shift_runs} runs, shifts applied to the {where}"
            if shift_runs
            else ""
        ),
    ]
    lines += [f"- note: {n}" for n in results["notes"]]
    lines += [
        "",
        "Error % with 95% bootstrap intervals over runs (queries pooled). A ViT checkpoint "
        "pretrained on the full background has seen the dev alphabets: its dev figures are not "
        "evidence (DESIGN.md section 4); small1-pretrained checkpoints have not.",
    ]

    lines += ["", "## Sample efficiency", ""]
    ks = sorted({c["k"] for c in cells if c["experiment"] == "sample_efficiency"})
    rows = []
    for model, row in s["sample_efficiency"].items():
        errors = [
            _err(row["error_pct"][str(k)], row["ci95_pct"][str(k)])
            if str(k) in row["error_pct"]
            else ""
            for k in ks
        ]
        rows.append(
            [model, *errors, _k(row["k_for_80pct_accuracy"]), _k(row["k_for_90pct_accuracy"])]
        )
    lines += _table(
        ["contender", *(f"k = {k}" for k in ks), "k for 80% acc.", "k for 90% acc."], rows
    )
    lines.append("")
    lines.append("k for X% acc.: the smallest k whose error is at most 100 - X (point estimates).")
    for model, m in s["k_to_match_bpl_k1"].items():
        lines.append(
            f"- {model} needs k = {_k(m['k'], m['max_k'])} to match bpl at k = 1 "
            f"({m['bpl_k1_error_pct']:.1f}% error)"
        )

    lines += ["", "## Out of distribution (k = 1)", ""]
    if s["shifts"]:
        models = list(s["shifts"])
        specs = list(dict.fromkeys(spec for t in s["shifts"].values() for spec in t))
        header = ["shift"]
        for model in models:
            header += [f"{model} error", f"{model} drop"]
        ratio_models = [m for m in models if m != s["transformer"]] if s["transformer"] else []
        header += [f"{m} / {s['transformer']} drop" for m in ratio_models]
        rows = [
            ["none (same runs)"]
            + [
                x
                for m in models
                for x in (
                    _err(
                        s["clean_on_shift_runs"][m]["error_pct"],
                        s["clean_on_shift_runs"][m]["ci95_pct"],
                    ),
                    "",
                )
            ]
            + [""] * len(ratio_models)
        ]
        for spec in specs:
            row = [f"`{spec}`"]
            for model in models:
                cell = s["shifts"][model].get(spec)
                row += (
                    [
                        _err(cell["error_pct"], cell["ci95_pct"]),
                        _err(cell["drop_pct"], cell["drop_ci95_pct"]),
                    ]
                    if cell
                    else ["", ""]
                )
            for model in ratio_models:
                ratio = s["shifts"][model].get(spec, {}).get("drop_ratio_vs_transformer")
                row.append("n/a" if ratio is None else f"{ratio:.2f}")
            rows.append(row)
        lines += _table(header, rows)
        lines += [
            "",
            "Drop: shifted minus unshifted error on the same runs, percentage points "
            "(paired bootstrap interval). Ratio: a contender's drop over the transformer's "
            "(n/a when the transformer's drop is not positive).",
        ]
    else:
        lines.append("No shift cells in this run.")

    lines += ["", "## Anytime (k = 1)", ""]
    anytime = [c for c in cells if c["experiment"] == "anytime"]
    rows = []
    for c in anytime:
        effort = c["effort"] or {}
        rows.append(
            [
                c["contender"],
                c["point"],
                str(effort.get("proposals_x_refit_steps", "")),
                str(effort.get("finetune_steps", "") if c["contender"] == "vit" else ""),
                f"{c['seconds_per_episode_median']:.2f}" if c["seconds_per_episode_median"] else "",
                _err(c["mean_error_pct"], c["ci95_pct"]),
            ]
        )
    lines += _table(
        [
            "contender",
            "point",
            "proposals x refit steps",
            "fine-tuning steps",
            "s / episode (median)",
            "error %",
        ],
        rows,
    )
    lines += [
        "",
        "proposals x refit steps counts the wide second refit as a second set of steps. "
        f"Seconds: wall time per {plan['runs']} episode on this machine, median over runs "
        "(a run that compiled counts once); anytime cells do not share bpl's parse cache.",
    ]
    return "\n".join(lines) + "\n"
