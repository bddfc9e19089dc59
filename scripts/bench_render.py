"""Throughput of the renderer and of the image log-likelihood + gradient, batched with vmap.

Inputs are real small1 drawings in the token layout ``(MAX_STROKES, N_POINTS, 2)`` of
``conceptlearn.model.library`` (each stroke resampled to at most ``N_POINTS`` points), scored
against their own images. ``--level 2`` times the half-resolution render and likelihood
(53 x 53, :func:`conceptlearn.model.image.level_log_likelihood`) of the optimisers' first steps.
Device-agnostic: runs on whatever ``jax.devices()`` offers.

    CONCEPTLEARN_DATA=/work/shared/omniglot python scripts/bench_render.py --out results/bench_render.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.omniglot import OmniglotImages, OmniglotStrokes
from conceptlearn.model.image import coarse_target, level_log_likelihood, pixel_probs
from conceptlearn.model.library import MAX_STROKES, N_POINTS
from conceptlearn.model.render import DEFAULT_INK, N_SAMPLES, pad_strokes, render
from conceptlearn.model.splines import resample_stroke


def drawings(batch: int, root=None):
    """``batch`` real drawings: points f32 (batch, MAX_STROKES, N_POINTS, 2), mask, images."""
    images, strokes = OmniglotImages("small1", root), OmniglotStrokes("small1", root)
    keys = [k for a, c in images.all_characters() for k in images.keys(a, c)]
    keys = [keys[i] for i in np.random.default_rng(0).permutation(len(keys))]
    points, masks, chosen = [], [], []
    for key in keys:
        raw = strokes.strokes(key)
        if len(raw) > MAX_STROKES:
            continue
        resampled = []
        for s in raw:
            length = np.linalg.norm(np.diff(s[:, :2], axis=0), axis=1).sum()
            resampled.append(resample_stroke(s, max(1.0, length / (N_POINTS - 1.5))))
        p, m = pad_strokes(resampled, MAX_STROKES, N_POINTS)
        points.append(p), masks.append(m), chosen.append(key)
        if len(chosen) == batch:
            break
    return np.stack(points), np.stack(masks), images.images(chosen)


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call seconds, median seconds per later call)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="Omniglot folder (default $CONCEPTLEARN_DATA)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_render.json"))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-samples", type=int, default=N_SAMPLES, help="arc samples per stroke")
    parser.add_argument(
        "--level", type=int, choices=(1, 2), default=1, help="resolution level (2: 53 x 53)"
    )
    args = parser.parse_args(argv)

    points, mask, images = map(jnp.asarray, drawings(args.batch, args.root))
    targets = jax.vmap(lambda im: coarse_target(im, args.level))(images)  # (batch, n, n)
    batch = points.shape[0]
    blur_sigma = jnp.full((batch,), 1.0, jnp.float32)
    epsilon = jnp.full((batch,), 0.01, jnp.float32)

    def render_one(points, mask):
        return render(points, mask, n_samples=args.n_samples, level=args.level)

    def loglik_one(points, mask, target, blur_sigma, epsilon):
        probs = pixel_probs(render_one(points, mask), blur_sigma / args.level, epsilon)
        return level_log_likelihood(probs, target, args.level)

    render_batch = jax.jit(jax.vmap(render_one))
    loglik = jax.jit(jax.vmap(loglik_one))
    loglik_and_grad = jax.jit(jax.vmap(jax.value_and_grad(loglik_one)))

    results = {}
    for name, fn, fn_args in [
        ("render", render_batch, (points, mask)),
        ("log_likelihood", loglik, (points, mask, targets, blur_sigma, epsilon)),
        ("log_likelihood_and_grad", loglik_and_grad, (points, mask, targets, blur_sigma, epsilon)),
    ]:
        first, per_call = timed(fn, *fn_args, repeats=args.repeats)
        results[name] = {
            "items_per_s": batch / per_call,
            "seconds_per_batch": per_call,
            "first_call_s": first,
        }
        print(f"{name}: {batch / per_call:,.0f} /s (first call {first:.1f} s)", flush=True)

    report = {
        "command": "python scripts/bench_render.py " + " ".join(argv or []),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "host": platform.processor() or platform.machine(),
        "jax_version": jax.__version__,
        "load_average_1_5_15": list(os.getloadavg()),  # other jobs sharing the CPU
        "batch": batch,
        "shape": {
            "points": list(points.shape[1:]),
            "n_samples_per_stroke": args.n_samples,
            "level": args.level,
        },
        "ink": DEFAULT_INK._asdict(),
        "repeats": args.repeats,
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
