"""Lesions, pruning cost and score variants of the ``bpl`` contender on the first N dev runs.

Every (query, class) pair of every run is scored without pruning and the score's terms are saved
per run (``OUT/run_XX.npz``; an interrupted call resumes). Each variant's predictions are then
derived from the same fits and written to ``OUT/summary.json``:

    python scripts/bpl_lesions.py --runs 10 --library results/small1.npz --out results/lesions
        [--full] [--unrefined] [--set KEY=VALUE ...] [--from-run I]

Two processes can share the fitting: one with ``--runs 20``, one with ``--runs 40 --from-run 20``;
a last call with ``--runs 40`` then only reads the saved terms and writes the summary.

Images are parsed as the contender parses them (:func:`conceptlearn.inference.fit.parse_images`,
seed 0) but with the ``K`` best ranked under the stand-in prior, so that every variant reweights
the same parses. Terms (q = query, c = class, k = parse), every refit by the contender's own pair
function (:func:`conceptlearn.inference.classify.score_pairs`, ``refit_steps`` steps):
``fwd[q, c, k]`` refit of class c's parse k to query q; ``bwd[q, c, k]`` refit of query q's parse
k to class c's image; ``own[c, k]`` refit of class c's parse k to its own image; ``cheap[q, c]``
the contender's pruning score (:func:`conceptlearn.inference.classify.prune_scores`); ``*_ll``,
``*_standin``, ``*_type``, ``*_type_uniform`` the parses' image log-likelihood, stand-in prior
and log P(type) under the learned library and under the library with uniform primitives. Scores
are combined by :func:`conceptlearn.inference.classify.two_way_score`. ``--unrefined`` adds the
same terms for parses scored as proposed (no refinement). Files written by older versions may
lack keys or hold others (``c_ink``, ``q_ink``: ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from jax.scipy.special import logsumexp

from conceptlearn.datasets.episodes import load_episode, load_runs
from conceptlearn.inference.classify import (
    PairTerms,
    State,
    prune_scores,
    score_pairs,
    self_scores,
    two_way_score,
)
from conceptlearn.inference.config import preset
from conceptlearn.inference.fit import parse_images, parse_log_prior
from conceptlearn.model.library import load_library
from conceptlearn.model.type_prior import parse_type_log_probs, uniform_primitives
from conceptlearn.overrides import parse_key_values

_type_lp = jax.vmap(parse_type_log_probs, (None, 0, 0))  # over images: (n, K) parses


def run_terms(episode, cfg, library, lesioned, prefix="") -> dict[str, np.ndarray]:
    """All score terms of one k = 1 episode (see the module docstring)."""
    sup, qry = episode.support[:, 0], episode.queries
    sp, qp = parse_images(sup, cfg, 0), parse_images(qry, cfg, 0)
    n_query, n_way = len(qry), len(sup)
    q_idx, c_idx = np.divmod(np.arange(n_query * n_way), n_way)
    steps = dict(n_steps=cfg.refit_steps, n_coarse=cfg.refit_coarse_steps)
    terms = score_pairs(sp, sup, qp, qry, c_idx, q_idx, cfg, two_way=True, **steps)
    out = {
        "fwd": terms.forward.reshape(n_query, n_way, -1),
        "bwd": terms.backward.reshape(n_query, n_way, -1),
        "own": self_scores(sp, sup, cfg, **steps),
    }
    if not prefix:
        support = State(
            jax.tree.map(lambda x: x[:, None], sp), sup[:, None], np.zeros((n_way, 1), np.float32)
        )
        out["cheap"] = prune_scores(support, qp, qry, cfg)[..., 0]
    for side, p in (("c", sp), ("q", qp)):
        standin = jax.vmap(jax.vmap(lambda x, m: parse_log_prior(x, m, cfg)))(p.points, p.mask)
        out[f"{side}_ll"] = np.asarray(p.log_post - standin)
        out[f"{side}_standin"] = np.asarray(standin)
        out[f"{side}_type"] = np.asarray(_type_lp(library, p.points, p.mask))
        out[f"{side}_type_uniform"] = np.asarray(_type_lp(lesioned, p.points, p.mask))
    return {prefix + k: np.asarray(v) for k, v in out.items()}


def _weights(log_post):
    """Normalised log weights over the last axis (``-inf`` entries are invalid parses)."""
    return log_post - logsumexp(log_post, axis=-1, keepdims=True)


def two_way(t, prior="type", evidence_prior=False, back_weight=1.0, K=None, prefix=""):
    """Scores ``(n_query, n_way)`` from saved terms ``t``: parse weights from
    ``ll + prior`` (``prior`` in standin / type / type_uniform / none); the evidence is the
    self-refit, plus log P(type) when ``evidence_prior``; the backward ratio
    ``log P(I_C | I_T) - log P(I_C)`` is scaled by ``back_weight``."""
    g = {k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)}
    sl = slice(0, K or g["fwd"].shape[-1])
    c_lp = g["c_ll"][:, sl] + (g[f"c_{prior}"][:, sl] if prior != "none" else 0.0)
    q_lp = g["q_ll"][:, sl] + (g[f"q_{prior}"][:, sl] if prior != "none" else 0.0)
    w_c, w_q = _weights(c_lp), _weights(q_lp)
    own = g["own"][:, sl] + (g[f"c_{prior}"][:, sl] if evidence_prior else 0.0)
    evidence = logsumexp(w_c + own, -1)
    terms = PairTerms(g["fwd"][..., sl], g["bwd"][..., sl])  # (n_query, n_way, K)
    args = (terms, w_c[None], w_q[:, None], evidence[None])
    both = np.asarray(two_way_score(*args, two_way=True))
    if back_weight == 1.0:
        return both
    one = np.asarray(two_way_score(*args, two_way=False))
    return one + back_weight * (both - one)


def variants(t) -> dict[str, np.ndarray]:
    """Every variant's scores ``(n_query, n_way)`` for one run's terms."""
    base = two_way(t)
    out = {
        "two-way, learned type prior weights (contender)": base,
        "two-way, stand-in prior weights": two_way(t, prior="standin"),
        "two-way, uniform-primitive type prior weights": two_way(t, prior="type_uniform"),
        "two-way, learned type prior weights and evidence": two_way(
            t, prior="type", evidence_prior=True
        ),
        "two-way, uniform-primitive weights and evidence": two_way(
            t, prior="type_uniform", evidence_prior=True
        ),
        "two-way, likelihood-only weights": two_way(t, prior="none"),
        "one-way only": two_way(t, back_weight=0.0),
        "two-way, K = 1": two_way(t, K=1),
        "two-way, backward term x 0.5": two_way(t, back_weight=0.5),
        "two-way, backward term x 2": two_way(t, back_weight=2.0),
        "pruning score alone": t["cheap"],
    }
    for width in (1, 2, 4, 8):
        kept = np.argsort(-t["cheap"], 1)[:, :width]
        pruned = np.full_like(base, -np.inf)
        np.put_along_axis(pruned, kept, np.take_along_axis(base, kept, 1), 1)
        out[f"two-way, prune width {width}"] = pruned
    if "unrefined_fwd" in t:
        out["no refinement (proposals as they are)"] = two_way(t, prefix="unrefined_")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="first N dev runs")
    parser.add_argument(
        "--from-run",
        type=int,
        default=0,
        help="fit only runs from this index on (another process can fit the ones before it)",
    )
    parser.add_argument("--library", required=True, help="learned library .npz")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--full", action="store_true", help="FULL preset (default QUICK)")
    parser.add_argument("--unrefined", action="store_true", help="also score unrefined parses")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = preset(quick=not args.full, overrides=parse_key_values(args.set))
    library = load_library(args.library)
    lesioned = uniform_primitives(library)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, source = load_runs("dev")
    errors: dict[str, int] = {}
    n_queries, t0 = 0, time.time()
    for i in range(args.runs):
        path = out / f"run_{i:02d}.npz"
        if not path.exists() and i >= args.from_run:
            episode = load_episode(runs[i], source)
            terms = run_terms(episode, cfg, library, lesioned)
            if args.unrefined:
                unrefined = dataclasses.replace(cfg, parse_steps=0)
                terms |= run_terms(episode, unrefined, library, lesioned, prefix="unrefined_")
            np.savez(path.with_suffix(".tmp.npz"), labels=episode.labels, **terms)
            path.with_suffix(".tmp.npz").replace(path)
        if not path.exists():
            continue
        with np.load(path, allow_pickle=False) as f:
            t = dict(f)
        n_queries += t["labels"].size
        for name, scores in variants(t).items():
            errors[name] = errors.get(name, 0) + int((scores.argmax(1) != t["labels"]).sum())
        print(
            i, f"{time.time() - t0:.0f}s", errors["two-way, learned type prior weights (contender)"]
        )
    summary = {
        "n_runs": args.runs,
        "n_queries": n_queries,
        "errors": errors,
        "error_pct": {k: round(100.0 * v / n_queries, 2) for k, v in errors.items()},
        "config": dataclasses.asdict(cfg),
        "seconds": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for k, v in summary["error_pct"].items():
        print(f"{v:6.2f}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
