"""Learning to learn: estimate the whole ``Library`` from background pen strokes.

``learn_library(drawings)`` is the entry point (the CLI's ``conceptlearn learn`` calls it):

- primitives: k-means on normalised sub-stroke shapes; each cluster a diagonal Gaussian over
  shape and a log-normal over scale; the number of clusters is chosen by the held-out likelihood
  (forward algorithm over primitive ids) of strokes of characters that the fit did not see;
- start and transition probabilities, stroke and sub-stroke counts: counts with smoothing;
- relations, the start-position density of the first stroke and that of later independent
  strokes: from ``infer_relations``;
- token noise and affine spread: from how the 20 drawers of one character differ.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.datasets.omniglot import IMAGE_SIZE
from conceptlearn.model.library import (
    BLUR_RANGE,
    END_OF,
    EPSILON_RANGE,
    INDEPENDENT,
    MAX_STROKES,
    MAX_SUBSTROKES,
    START_OF,
    Library,
    make_library,
)
from conceptlearn.model.splines import (
    N_CONTROL,
    bspline_basis,
    normalize_spline,
    preprocess_stroke,
)
from conceptlearn.model.type_prior import (
    infer_relations,
    stroke_marginal_log_prob,
    type_from_splines,
    type_marginal_log_prob,
)


@dataclass(frozen=True)
class LearnConfig:
    """Knobs of ``learn_library`` (every one changes the numbers)."""

    k_grid: tuple[int, ...] = (
        1,
        10,
        25,
        50,
        100,
        200,
        300,
        400,
        600,
        800,
    )  # candidate primitive counts
    n_primitives: int | None = None  # fix the count instead of choosing it
    heldout_fraction: float = 0.2  # share of characters held out to choose the count
    kmeans_iters: int = 40
    shape_prior_count: float = 5.0  # pseudo-observations shrinking a cluster's variance to pooled
    min_sd: float = 0.02  # floor of the shape and log-scale sd
    start_smoothing: float = 1.0  # added to every start count
    trans_smoothing: float = 1.0  # pseudo-counts per row, spread like the unigram frequencies
    count_smoothing: float = 0.5  # added to stroke / sub-stroke counts
    position_grid: int = 15  # start-position mixture: grid x grid centres over the image
    seed: int = 0


@dataclass
class Drawing:
    """One drawing: ``character`` = (alphabet, character), ``controls`` per stroke
    ``(n_sub, 5, 2)`` absolute control points."""

    character: tuple[str, str]
    drawer: int
    controls: list[np.ndarray] = field(default_factory=list)


def collect_drawings(
    strokes, alphabets=None, max_characters: int | None = None
) -> tuple[list[Drawing], dict]:
    """Preprocess every drawing of ``strokes`` (an ``OmniglotStrokes``, or a sequence of them:
    several splits, e.g. small1 and small2, learned from together; a character already in an
    earlier split, as Greek and Latin are in both minimal splits, is taken once), optionally only some
    alphabets / the first ``max_characters`` characters. Drawings with more than ``MAX_STROKES``
    strokes or ``MAX_SUBSTROKES`` sub-strokes in a stroke are skipped.

    Returns ``(drawings, stats)`` with the mean spline residual (pixels) and counts.
    """
    splits = [strokes] if hasattr(strokes, "alphabets") else list(strokes)
    if alphabets is not None:
        known = {a for split in splits for a in split.alphabets}
        missing = sorted(set(alphabets) - known)
        if missing:
            raise ValueError(f"alphabets {missing} are in none of the stroke splits given")
    chars, seen = [], set()
    for split in splits:
        for a in split.alphabets:
            for c in split.characters(a) if alphabets is None or a in alphabets else ():
                if (a, c) not in seen:
                    seen.add((a, c))
                    chars.append((split, a, c))
    if max_characters is not None:
        chars = chars[:max_characters]
    drawings, residuals, skipped = [], [], 0
    for split, alphabet, character in chars:
        for drawer, key in enumerate(split.keys(alphabet, character), start=1):
            fits = [preprocess_stroke(s) for s in split.strokes(key)]
            residuals.extend(r for _, res in fits for r in res)
            if len(fits) > MAX_STROKES or any(len(c) > MAX_SUBSTROKES for c, _ in fits):
                skipped += 1
                continue
            drawings.append(Drawing((alphabet, character), drawer, [c for c, _ in fits]))
    stats = {
        "n_characters": len(chars),
        "n_drawings": len(drawings),
        "n_skipped_too_large": skipped,
        "n_substrokes": len(residuals),
        "spline_residual_px": float(np.mean(residuals)) if residuals else float("nan"),
    }
    return drawings, stats


# --- primitives ---------------------------------------------------------------------------


def _substrokes(drawings: list[Drawing]):
    """Flattened normalised shapes ``(N, 10)``, log scales ``(N,)`` and stroke lengths."""
    controls = [c for d in drawings for c in d.controls]
    lengths = np.asarray([len(c) for c in controls])
    shape, scale = normalize_spline(np.concatenate(controls))
    return shape.reshape(len(shape), -1), np.log(scale), lengths


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ then Lloyd iterations; returns labels ``(N,)`` in ``0..k'-1`` (empty dropped)."""
    k = min(k, len(x))
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1 / len(x))
        centers.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    centers = np.stack(centers)
    x2 = (x**2).sum(1)[:, None]
    labels = np.zeros(len(x), int)
    for _ in range(iters):
        dist = x2 - 2 * x @ centers.T + (centers**2).sum(1)[None]
        labels = dist.argmin(1)
        counts = np.bincount(labels, minlength=len(centers))
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
    return np.unique(labels, return_inverse=True)[1]


def _shrunk_moments(values: np.ndarray, labels: np.ndarray, k: int, prior: float, floor: float):
    counts = np.bincount(labels, minlength=k).astype(float)
    sums = np.zeros((k, values.shape[1]))
    np.add.at(sums, labels, values)
    mean = sums / counts[:, None]
    sq = np.zeros_like(sums)
    np.add.at(sq, labels, (values - mean[labels]) ** 2)
    pooled = sq.sum(0) / max(len(values) - k, 1)
    var = (sq + prior * pooled) / (counts[:, None] + prior)
    return mean, np.maximum(np.sqrt(var), floor)


def fit_primitives(drawings: list[Drawing], k: int, config: LearnConfig) -> dict[str, np.ndarray]:
    """Primitive Gaussians, scale log-normals, start and transition probabilities."""
    shapes, log_scales, lengths = _substrokes(drawings)
    labels = kmeans(shapes, k, config.kmeans_iters, np.random.default_rng(config.seed))
    k = int(labels.max()) + 1
    shape_mean, shape_sd = _shrunk_moments(
        shapes, labels, k, config.shape_prior_count, config.min_sd
    )
    scale_mean, scale_sd = _shrunk_moments(
        log_scales[:, None], labels, k, config.shape_prior_count, config.min_sd
    )
    firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    start = np.bincount(labels[firsts], minlength=k) + config.start_smoothing
    unigram = np.bincount(labels, minlength=k) + 1.0
    unigram = unigram / unigram.sum()
    trans = np.zeros((k, k))
    is_next = np.ones(len(labels), bool)
    is_next[firsts] = False
    index = np.nonzero(is_next)[0]
    np.add.at(trans, (labels[index - 1], labels[index]), 1.0)
    trans = trans + config.trans_smoothing * unigram[None]
    return {
        "shape_mean": shape_mean.reshape(k, N_CONTROL, 2),
        "shape_sd": shape_sd.reshape(k, N_CONTROL, 2),
        "log_scale_mean": scale_mean[:, 0],
        "log_scale_sd": scale_sd[:, 0],
        "start_probs": start / start.sum(),
        "trans_probs": trans / trans.sum(1, keepdims=True),
    }


def _padded_strokes(drawings: list[Drawing]):
    """Every stroke padded to ``MAX_SUBSTROKES``: shapes ``(n, J, 5, 2)``, scales, n_sub."""
    controls = [c for d in drawings for c in d.controls]
    n = len(controls)
    shapes = np.zeros((n, MAX_SUBSTROKES, N_CONTROL, 2), np.float32)
    scales = np.ones((n, MAX_SUBSTROKES), np.float32)
    for i, c in enumerate(controls):
        shapes[i, : len(c)], scales[i, : len(c)] = normalize_spline(c)
    return shapes, scales, np.asarray([len(c) for c in controls], np.int32)


_stroke_log_probs = jax.jit(jax.vmap(stroke_marginal_log_prob, in_axes=(None, 0, 0, 0)))


def stroke_log_probs(primitives: dict[str, np.ndarray], drawings: list[Drawing]) -> np.ndarray:
    """Marginal log-probability of each stroke's shapes and scales under ``primitives``."""
    shapes, scales, n_sub = _padded_strokes(drawings)
    lib = _primitive_only_library(primitives)
    return np.asarray(_stroke_log_probs(lib, shapes, scales, n_sub))


def _primitive_only_library(primitives: dict[str, np.ndarray]) -> Library:
    """A library carrying ``primitives`` and placeholder values elsewhere (for scoring strokes)."""
    filler = {
        "n_strokes_probs": np.full(MAX_STROKES, 1 / MAX_STROKES),
        "n_sub_probs": np.full((MAX_STROKES, MAX_SUBSTROKES), 1 / MAX_SUBSTROKES),
        "relation_probs": np.full(4, 0.25),
        "position_weights": np.ones(1),
        "first_position_weights": np.ones(1),
        "position_centers": np.full((1, 2), IMAGE_SIZE / 2.0),
        "position_sd": 10.0,
        "shape_noise_sd": 0.1,
        "log_scale_noise_sd": 0.1,
        "position_noise_sd": 1.0,
        "affine_mean": np.array([1.0, 1.0, 0.0, 0.0]),
        "affine_sd": np.ones(4),
        "blur_range": np.array(BLUR_RANGE),
        "epsilon_range": np.array(EPSILON_RANGE),
    }
    return make_library(**primitives, **filler)


def choose_n_primitives(drawings: list[Drawing], config: LearnConfig) -> tuple[int, list[dict]]:
    """Hold out ``heldout_fraction`` of the characters, fit each candidate count on the rest and
    score the held-out strokes. Returns the best count and the curve
    ``[{"k", "k_effective", "heldout_log_prob_per_stroke"}]``."""
    chars = sorted({d.character for d in drawings})
    rng = np.random.default_rng(config.seed)
    held = set(
        map(tuple, rng.permutation(chars)[: max(1, int(len(chars) * config.heldout_fraction))])
    )
    train = [d for d in drawings if d.character not in held]
    test = [d for d in drawings if d.character in held]
    curve = []
    for k in config.k_grid:
        prims = fit_primitives(train, k, config)
        score = float(stroke_log_probs(prims, test).mean())
        curve.append(
            {"k": k, "k_effective": len(prims["start_probs"]), "heldout_log_prob_per_stroke": score}
        )
    best = max(curve, key=lambda row: row["heldout_log_prob_per_stroke"])
    return best["k"], curve


# --- counts, relations, positions ----------------------------------------------------------


def fit_counts(drawings: list[Drawing], config: LearnConfig) -> dict[str, np.ndarray]:
    """``n_strokes_probs (S,)`` and ``n_sub_probs (S, J)`` (rows shrunk to the marginal)."""
    a = config.count_smoothing
    n_strokes = np.bincount([len(d.controls) - 1 for d in drawings], minlength=MAX_STROKES) + a
    table = np.zeros((MAX_STROKES, MAX_SUBSTROKES))
    for d in drawings:
        for c in d.controls:
            table[len(d.controls) - 1, len(c) - 1] += 1
    marginal = (table.sum(0) + a) / (table.sum() + a * MAX_SUBSTROKES)
    table = table + 10.0 * marginal[None]
    return {
        "n_strokes_probs": n_strokes / n_strokes.sum(),
        "n_sub_probs": table / table.sum(1, keepdims=True),
    }


def fit_relations(drawings: list[Drawing], config: LearnConfig) -> dict[str, np.ndarray]:
    """Relation-kind probabilities and two start-position mixtures on one grid of centres with
    one sd: ``position_weights`` over the starts of every independent stroke (the first
    included), ``first_position_weights`` over first strokes only (BPL's separate first-stroke
    density: the type model samples and the parse score scores the first stroke with it)."""
    kinds = np.zeros(4)
    starts, firsts = [], []
    for d in drawings:
        for i, (kind, *_rest) in enumerate(infer_relations(d.controls)):
            if i > 0:
                kinds[kind] += 1
            if kind == INDEPENDENT:
                starts.append(d.controls[i][0, 0])
        firsts.append(d.controls[0][0, 0])
    kinds = kinds + 1.0
    g = config.position_grid
    step = IMAGE_SIZE / g
    axis = (np.arange(g) + 0.5) * step
    centers = np.stack(np.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)

    def weights(points: list[np.ndarray]) -> np.ndarray:
        counts = np.zeros(g * g)
        if points:
            nearest = ((np.asarray(points)[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
            counts = np.bincount(nearest, minlength=g * g).astype(float)
        counts = counts + config.count_smoothing
        return counts / counts.sum()

    return {
        "relation_probs": kinds / kinds.sum(),
        "position_weights": weights(starts),
        "first_position_weights": weights(firsts),
        "position_centers": centers,
        "position_sd": np.asarray(step),
    }


def _robust_sd(x: np.ndarray) -> float:
    """Median absolute deviation scaled to a Gaussian sd (resists mismatched stroke orders)."""
    x = np.asarray(x).ravel()
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if len(x) else 1.0


def _relation_jitter(drawings: list[list[np.ndarray]]) -> np.ndarray:
    """How far each stroke starts from where its relation puts it, over drawings of one
    character with the same structure (affine already undone): ``(n_drawings, n_strokes, 2)``.

    Each stroke takes the relation most drawers give it; an independent stroke's anchor is its
    mean start, a dependent stroke's is the parent's start, end, or the point along it (median
    sub-stroke and position) in the same drawing.
    """
    relations = [infer_relations(d) for d in drawings]
    starts = np.stack([np.stack([c[0, 0] for c in d]) for d in drawings])  # (n, strokes, 2)
    out = np.zeros_like(starts)
    for i in range(starts.shape[1]):
        kind, parent = Counter(r[i][:2] for r in relations).most_common(1)[0][0]
        if kind == INDEPENDENT:
            out[:, i] = starts[:, i] - starts[:, i].mean(0)
            continue
        if kind == START_OF:
            anchor = [d[parent][0, 0] for d in drawings]
        elif kind == END_OF:
            anchor = [d[parent][-1, -1] for d in drawings]
        else:
            spots = [r[i][2:] for r in relations if r[i][:2] == (kind, parent)]
            sub = int(np.median([j for j, _ in spots]))
            sub = min(sub, len(drawings[0][parent]) - 1)
            basis = bspline_basis(np.median([t for _, t in spots]), xp=np)
            anchor = [basis @ d[parent][sub] for d in drawings]
        out[:, i] = starts[:, i] - np.stack(anchor)
    return out


def same_structure_groups(drawings: list[Drawing], min_drawings: int = 3) -> list[list[Drawing]]:
    """Per character, its drawings that share its most common structure (strokes and
    sub-strokes per stroke), where at least ``min_drawings`` do: the groups whose control
    points correspond in order."""
    by_char = defaultdict(list)
    for d in drawings:
        by_char[d.character].append(d)
    groups = []
    for group in by_char.values():
        signature = Counter(tuple(len(c) for c in d.controls) for d in group).most_common(1)[0][0]
        same = [d for d in group if tuple(len(c) for c in d.controls) == signature]
        if len(same) >= min_drawings:
            groups.append(same)
    return groups


def fit_token_noise(drawings: list[Drawing], config: LearnConfig) -> dict[str, np.ndarray]:
    """Motor noise, position jitter and affine spread from the drawers of each character.

    Per character, the drawings sharing its most common structure (strokes and sub-strokes per
    stroke) are compared: their centres and spreads give the affine sd; after undoing each
    drawing's affine, deviations from the character mean give the shape and log-scale sds, and
    ``_relation_jitter`` the position sd (robust estimates).
    """
    scale_dev, shift_dev, shape_dev, log_scale_dev, pos_dev = [], [], [], [], []
    for same in same_structure_groups(drawings):
        points = [np.concatenate(d.controls).reshape(-1, 2) for d in same]
        com = np.stack([p.mean(0) for p in points])  # (n, 2)
        spread = np.stack([p.std(0) + 1.0 for p in points])  # (n, 2)
        ratio = spread / spread.mean(0)
        scale_dev.append(ratio - 1.0)
        shift_dev.append(com - com.mean(0))
        norm = [
            [(c - com[i]) / ratio[i] + com.mean(0) for c in d.controls] for i, d in enumerate(same)
        ]
        flat = np.stack([np.concatenate(n) for n in norm])  # (n, total_sub, 5, 2)
        shape, scale = normalize_spline(flat)
        shape_dev.append(shape - shape.mean(0))
        log_scale_dev.append(np.log(scale) - np.log(scale).mean(0))
        pos_dev.append(_relation_jitter(norm))
    if not scale_dev:
        raise ValueError("no character has 3 drawings with the same structure; need more data")
    cat = lambda xs: np.concatenate([x.ravel() for x in xs])  # noqa: E731
    return {
        "shape_noise_sd": np.asarray(max(_robust_sd(cat(shape_dev)), config.min_sd)),
        "log_scale_noise_sd": np.asarray(max(_robust_sd(cat(log_scale_dev)), config.min_sd)),
        "position_noise_sd": np.asarray(max(_robust_sd(cat(pos_dev)), 0.5)),
        "affine_mean": np.array([1.0, 1.0, 0.0, 0.0]),
        "affine_sd": np.array(
            [
                max(_robust_sd(cat([s[:, 0] for s in scale_dev])), 1e-3),
                max(_robust_sd(cat([s[:, 1] for s in scale_dev])), 1e-3),
                max(_robust_sd(cat([s[:, 0] for s in shift_dev])), 0.1),
                max(_robust_sd(cat([s[:, 1] for s in shift_dev])), 0.1),
            ]
        ),
    }


def affine_parts(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``matrix f (2, 2)`` = rotation @ [[1, shear], [0, 1]] @ diag(scale), the token's
    affine (:func:`conceptlearn.model.token.token_affine`) -> ``(rotation rad, shear,
    log_scale (2,))`` (a QR decomposition with a positive diagonal)."""
    q, r = np.linalg.qr(matrix)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q, r = q * signs, r * signs[:, None]
    return float(np.arctan2(q[1, 0], q[0, 0])), float(r[0, 1] / r[1, 1]), np.log(np.diag(r))


def drawer_affine_sd(drawings: list[Drawing]) -> dict[str, float]:
    """How the drawers of a character differ by a global linear map: per character, the
    drawings sharing its most common structure (at least 3) are centred and each is fitted by
    least squares as a linear map of their mean shape (control points matched in order); the
    map is split into rotation, shear and log scale (:func:`affine_parts`). Returns robust sds
    over every drawing's deviation from its character's mean of each: ``rotation_sd`` (rad),
    ``shear_sd``, ``log_scale_sd``, and ``n_drawings`` used."""
    rotation, shear, log_scale = [], [], []
    for same in same_structure_groups(drawings):
        points = np.stack([np.concatenate(d.controls).reshape(-1, 2) for d in same])  # (n, m, 2)
        points = points - points.mean(1, keepdims=True)
        mean = points.mean(0)  # (m, 2)
        parts = [affine_parts(np.linalg.lstsq(mean, x, rcond=None)[0].T) for x in points]
        turns = np.asarray([p[0] for p in parts])
        rotation.append(np.angle(np.exp(1j * (turns - np.angle(np.exp(1j * turns).mean())))))
        shears = np.asarray([p[1] for p in parts])
        shear.append(shears - shears.mean())
        scales = np.stack([p[2] for p in parts])
        log_scale.append(scales - scales.mean(0))
    if not rotation:
        raise ValueError("no character has 3 drawings with the same structure; need more data")
    return {
        "rotation_sd": _robust_sd(np.concatenate(rotation)),
        "shear_sd": _robust_sd(np.concatenate(shear)),
        "log_scale_sd": _robust_sd(np.concatenate([x.ravel() for x in log_scale])),
        "n_drawings": int(sum(len(x) for x in rotation)),
    }


def learn_library(
    drawings: list[Drawing], config: LearnConfig = LearnConfig()
) -> tuple[Library, dict]:
    """Estimate a ``Library`` from preprocessed drawings. Returns ``(library, report)`` where the
    report holds the held-out curve and the chosen number of primitives."""
    report: dict = {}
    if config.n_primitives is None:
        k, curve = choose_n_primitives(drawings, config)
        report["heldout_curve"] = curve
    else:
        k = config.n_primitives
    primitives = fit_primitives(drawings, k, config)
    report["n_primitives"] = len(primitives["start_probs"])
    library = make_library(
        **primitives,
        **fit_counts(drawings, config),
        **fit_relations(drawings, config),
        **fit_token_noise(drawings, config),
        blur_range=np.array(BLUR_RANGE),
        epsilon_range=np.array(EPSILON_RANGE),
    )
    return library, report


def drawing_types(library: Library, drawings: list[Drawing]):
    """Each drawing as a type (``type_from_splines``), stacked along a leading axis."""
    types = [type_from_splines(library, d.controls) for d in drawings]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *types)


_type_log_probs = jax.jit(jax.vmap(type_marginal_log_prob, in_axes=(None, 0)))


def drawing_log_probs(library: Library, drawings: list[Drawing], batch: int = 64) -> np.ndarray:
    """``log P(type)`` of every drawing with primitive ids summed out: ``(n_drawings,)``."""
    out = []
    for i in range(0, len(drawings), batch):
        chunk = drawings[i : i + batch]
        types = drawing_types(library, chunk + chunk[-1:] * (batch - len(chunk)))  # fixed shape
        out.append(np.asarray(_type_log_probs(library, types))[: len(chunk)])
    return np.concatenate(out)
