"""Held-out log-probability of the strokes of small2-only characters (issue 4, section 4).

Each drawing of the alphabets in small2 but not small1 is parsed from its pen strokes
(``collect_drawings``) and scored as a type, ``log P(type)`` with the primitive ids summed out
(``type_marginal_log_prob``), under:

- ``learned``: the library learned from small1 (``--library``);
- ``lesion_uniform``: the same with uniform start and transition probabilities;
- ``lesion_one_primitive``: the same with a single primitive fitted to small1;
- ``small2``: a library learned from all of small2 (it has seen these characters).

Writes JSON (``--out``) and prints a markdown table.

    python scripts/heldout_strokes.py --library results/small1.npz --out results/heldout_strokes.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.omniglot import OmniglotStrokes
from conceptlearn.model.learn import (
    LearnConfig,
    collect_drawings,
    drawing_log_probs,
    fit_primitives,
    learn_library,
)
from conceptlearn.model.library import Library, load_library, make_library

HELDOUT_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


def uniform_transitions(library: Library) -> Library:
    """Lesion: every primitive equally likely to start a stroke and to follow any other."""
    k = library.n_primitives
    return library._replace(
        start_probs=jnp.full((k,), 1.0 / k), trans_probs=jnp.full((k, k), 1.0 / k)
    )


def with_primitives(library: Library, primitives: dict) -> Library:
    """``library`` with its primitive fields replaced (the rest unchanged)."""
    fields = {k: np.asarray(v) for k, v in library._asdict().items()}
    fields.update(primitives)
    return make_library(**fields)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="library learned from small1 (.npz)")
    parser.add_argument("--out", required=True, help="results JSON")
    parser.add_argument("--data", default=None, help="Omniglot folder (default $CONCEPTLEARN_DATA)")
    parser.add_argument(
        "--small2-primitives",
        type=int,
        default=None,
        help="primitives of the small2 library (default: same as --library)",
    )
    parser.add_argument(
        "--max-characters",
        type=int,
        default=None,
        help="score only the first N held-out characters (quick runs)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()

    learned = load_library(args.library)
    small1, _ = collect_drawings(OmniglotStrokes("small1", args.data))
    small2_strokes = OmniglotStrokes("small2", args.data)
    small2, _ = collect_drawings(small2_strokes)
    heldout, stats = collect_drawings(small2_strokes, HELDOUT_ALPHABETS, args.max_characters)

    k2 = args.small2_primitives or learned.n_primitives
    libraries = {
        "learned": learned,
        "lesion_uniform": uniform_transitions(learned),
        "lesion_one_primitive": with_primitives(learned, fit_primitives(small1, 1, LearnConfig())),
        "small2": learn_library(small2, LearnConfig(n_primitives=k2))[0],
    }
    n_strokes = sum(len(d.controls) for d in heldout)
    n_sub = sum(len(c) for d in heldout for c in d.controls)
    rows, per_drawing = {}, {}
    for name, library in libraries.items():
        logp = per_drawing[name] = drawing_log_probs(library, heldout)
        rows[name] = {
            "n_primitives": library.n_primitives,
            "log_prob_per_drawing": float(logp.mean()),
            "log_prob_per_drawing_sem": float(logp.std(ddof=1) / np.sqrt(len(logp))),
            "log_prob_per_substroke": float(logp.sum() / n_sub),
            "log_prob_total": float(logp.sum()),
        }
    for name in ("lesion_uniform", "lesion_one_primitive", "small2"):
        diff = per_drawing["learned"] - per_drawing[name]  # paired over the same drawings
        rows[name]["learned_minus_this_per_drawing"] = float(diff.mean())
        rows[name]["learned_minus_this_sem"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    result = {
        "heldout_alphabets": list(HELDOUT_ALPHABETS),
        "library": args.library,
        **stats,
        "n_strokes": n_strokes,
        "n_substrokes": n_sub,
        "libraries": rows,
        "learned_beats_lesions": bool(
            rows["learned"]["log_prob_total"] > rows["lesion_uniform"]["log_prob_total"]
            and rows["learned"]["log_prob_total"] > rows["lesion_one_primitive"]["log_prob_total"]
        ),
        "seconds": time.perf_counter() - start,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"{stats['n_drawings']} drawings of {stats['n_characters']} characters, "
        f"{n_strokes} strokes, {n_sub} sub-strokes"
    )
    print(
        "| library | primitives | log p / drawing (± s.e.) | log p / sub-stroke "
        "| learned − this, paired (± s.e.) |"
    )
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        paired = (
            f"{row['learned_minus_this_per_drawing']:+.2f} ± {row['learned_minus_this_sem']:.2f}"
            if name != "learned"
            else ""
        )
        print(
            f"| {name} | {row['n_primitives']} | {row['log_prob_per_drawing']:.1f} ± "
            f"{row['log_prob_per_drawing_sem']:.1f} | {row['log_prob_per_substroke']:.2f} "
            f"| {paired} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
