"""P(type): the character-type level of the generative model.

A type is a small program: the number of strokes; per stroke the number of sub-strokes, their
primitive ids (a first-order Markov chain), normalised shapes and scales; and a relation of each
stroke to earlier ones (independent at a position, start-of, end-of, or along a sub-stroke).

The generative story is written once, as the numpyro model ``type_model``; ``sample_type`` runs
it forward and ``type_log_prob`` scores a given type with it. Shapes are static
(``S = MAX_STROKES``, ``J = MAX_SUBSTROKES``) with masks derived from the counts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.handlers import seed, trace
from numpyro.infer.util import log_density

from conceptlearn.model.library import (
    ALONG,
    END_OF,
    INDEPENDENT,
    MAX_STROKES,
    MAX_SUBSTROKES,
    START_OF,
    Library,
)
from conceptlearn.model.splines import N_CONTROL, bspline_basis, normalize_spline


class Type(NamedTuple):
    """One character type (``S = MAX_STROKES``, ``J = MAX_SUBSTROKES``).

    - ``n_strokes``: int32 ``()`` in ``1..S``; ``n_sub``: int32 ``(S,)`` in ``1..J``;
    - ``ids``: int32 ``(S, J)`` primitive ids; ``shapes``: ``(S, J, 5, 2)``; ``scales``: ``(S, J)``;
    - ``relation``: int32 ``(S,)`` (``INDEPENDENT``, ``START_OF``, ``END_OF``, ``ALONG``);
    - ``parent``: int32 ``(S,)`` earlier stroke a dependent stroke attaches to;
    - ``parent_sub``: int32 ``(S,)`` and ``along_t``: ``(S,)`` in ``[0, 1]``: where, for ``ALONG``;
    - ``position``: ``(S, 2)`` start position (pixels) of independent strokes.
    Entries beyond the counts are padding and never scored.
    """

    n_strokes: jnp.ndarray
    n_sub: jnp.ndarray
    ids: jnp.ndarray
    shapes: jnp.ndarray
    scales: jnp.ndarray
    relation: jnp.ndarray
    parent: jnp.ndarray
    parent_sub: jnp.ndarray
    along_t: jnp.ndarray
    position: jnp.ndarray


def masks(n_strokes: jnp.ndarray, n_sub: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(stroke_mask bool (S,), sub_mask bool (S, J))`` of the valid strokes and sub-strokes."""
    stroke_mask = jnp.arange(MAX_STROKES) < n_strokes
    sub_mask = (jnp.arange(MAX_SUBSTROKES)[None, :] < n_sub[:, None]) & stroke_mask[:, None]
    return stroke_mask, sub_mask


# --- distributions ------------------------------------------------------------------------


class PrimitiveChain(dist.Distribution):
    """First-order Markov chain of primitive ids over ``J`` sub-strokes.

    ``start (K,)``, ``trans (K, K)`` probabilities; ``length`` int ``(...)`` in ``1..J`` is how
    many ids count (the rest are padding: sampled, never scored). Value: int32 ``(..., J)``.
    """

    arg_constraints = {"start": constraints.simplex}
    support = constraints.integer_interval(0, 2**30)
    pytree_data_fields = ("start", "trans", "length")

    def __init__(self, start, trans, length, n_steps: int = MAX_SUBSTROKES, *, validate_args=None):
        self.start, self.trans, self.length, self.n_steps = start, trans, length, n_steps
        super().__init__(
            batch_shape=jnp.shape(length), event_shape=(n_steps,), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        keys = jax.random.split(key, self.n_steps)
        first = jax.random.categorical(keys[0], jnp.log(self.start), shape=shape)

        def step(prev, k):
            nxt = jax.random.categorical(k, jnp.log(self.trans[prev]))
            return nxt, nxt

        _, rest = jax.lax.scan(step, first, keys[1:])
        return jnp.concatenate([first[..., None], jnp.moveaxis(rest, 0, -1)], axis=-1)

    def log_prob(self, value):
        log_start = jnp.log(self.start)[value[..., 0]]
        log_trans = jnp.log(self.trans)[value[..., :-1], value[..., 1:]]
        steps = jnp.arange(1, self.n_steps).reshape((1,) * jnp.ndim(self.length) + (-1,))
        valid = steps < jnp.expand_dims(self.length, -1)
        return log_start + jnp.sum(jnp.where(valid, log_trans, 0.0), axis=-1)


def primitive_shape_dist(library: Library, ids: jnp.ndarray) -> dist.Distribution:
    """Shape of each sub-stroke given its primitive: diagonal Gaussian, event ``(5, 2)``."""
    return dist.Normal(library.shape_mean[ids], library.shape_sd[ids]).to_event(2)


def primitive_scale_dist(library: Library, ids: jnp.ndarray) -> dist.Distribution:
    """Scale (pixels) of each sub-stroke given its primitive: log-normal."""
    return dist.LogNormal(library.log_scale_mean[ids], library.log_scale_sd[ids])


def position_dist(
    library: Library, batch_shape: tuple[int, ...] = (), weights=None
) -> dist.Distribution:
    """Start position of an independent stroke: Gaussian mixture over the image, event ``(2,)``,
    batch ``batch_shape`` (broadcast explicitly: numpyro's ``expand`` promotes ranks). ``weights
    (..., G)``: the mixture weights (default ``library.position_weights``)."""
    G = library.position_centers.shape[0]
    centers = jnp.broadcast_to(library.position_centers, (*batch_shape, G, 2))
    weights = library.position_weights if weights is None else weights
    weights = jnp.broadcast_to(weights, (*batch_shape, G))
    components = dist.Normal(centers, library.position_sd * jnp.ones_like(centers)).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)


def start_position_weights(library: Library) -> jnp.ndarray:
    """``(S, G)``: the first stroke starts by ``first_position_weights``, later independent
    strokes by ``position_weights``."""
    rest = jnp.broadcast_to(
        library.position_weights, (MAX_STROKES - 1, *library.position_weights.shape)
    )
    return jnp.concatenate([library.first_position_weights[None], rest], axis=0)


def relation_probs(library: Library) -> jnp.ndarray:
    """``(S, 4)``: the first stroke is independent; later ones follow the library."""
    first = jnp.zeros((1, 4)).at[0, INDEPENDENT].set(1.0)
    rest = jnp.broadcast_to(library.relation_probs, (MAX_STROKES - 1, 4))
    return jnp.concatenate([first, rest], axis=0)


def parent_probs() -> jnp.ndarray:
    """``(S, S)``: a dependent stroke attaches to an earlier stroke uniformly (row 0 unused)."""
    earlier = jnp.tril(jnp.ones((MAX_STROKES, MAX_STROKES)), k=-1).at[0, 0].set(1.0)
    return earlier / earlier.sum(axis=1, keepdims=True)


# --- the model ----------------------------------------------------------------------------


def type_model(library: Library) -> None:
    """numpyro model of P(type). Sites: ``n_strokes`` (value = count - 1), ``n_sub`` (count - 1),
    ``ids``, ``shapes``, ``scales``, ``relation``, ``parent``, ``parent_sub``, ``along_t``,
    ``position``."""
    S, J = MAX_STROKES, MAX_SUBSTROKES
    n_strokes = numpyro.sample("n_strokes", dist.Categorical(probs=library.n_strokes_probs)) + 1
    n_sub_probs = jnp.broadcast_to(library.n_sub_probs[n_strokes - 1], (S, J))
    n_sub_d = dist.Categorical(probs=n_sub_probs)
    stroke_mask = jnp.arange(S) < n_strokes
    n_sub = numpyro.sample("n_sub", n_sub_d.mask(stroke_mask)) + 1
    _, sub_mask = masks(n_strokes, n_sub)
    chain = PrimitiveChain(library.start_probs, library.trans_probs, n_sub)
    ids = numpyro.sample("ids", chain.mask(stroke_mask))
    numpyro.sample("shapes", primitive_shape_dist(library, ids).mask(sub_mask))
    numpyro.sample("scales", primitive_scale_dist(library, ids).mask(sub_mask))
    relation = numpyro.sample(
        "relation", dist.Categorical(probs=relation_probs(library)).mask(stroke_mask)
    )
    dependent = stroke_mask & (relation != INDEPENDENT)
    along = stroke_mask & (relation == ALONG)
    parent = numpyro.sample("parent", dist.Categorical(probs=parent_probs()).mask(dependent))
    parent_n_sub = n_sub[jnp.clip(parent, 0, S - 1)]
    sub_choice = (jnp.arange(J)[None, :] < parent_n_sub[:, None]).astype(jnp.float32)
    sub_choice = sub_choice / sub_choice.sum(axis=1, keepdims=True)
    numpyro.sample("parent_sub", dist.Categorical(probs=sub_choice).mask(along))
    numpyro.sample("along_t", dist.Uniform(jnp.zeros(S), jnp.ones(S)).mask(along))
    independent = stroke_mask & (relation == INDEPENDENT)
    starts = position_dist(library, (S,), start_position_weights(library))
    numpyro.sample("position", starts.mask(independent))


def _sites(type_: Type) -> dict[str, jnp.ndarray]:
    sites = type_._asdict()
    sites["n_strokes"] = type_.n_strokes - 1
    sites["n_sub"] = type_.n_sub - 1
    return sites


@jax.jit
def sample_type(library: Library, *, key: jax.Array) -> Type:
    """Draw one character type from P(type). jit-able."""
    tr = trace(seed(type_model, key)).get_trace(library)
    values = {name: site["value"] for name, site in tr.items() if site["type"] == "sample"}
    values["n_strokes"] = values["n_strokes"] + 1
    values["n_sub"] = values["n_sub"] + 1
    return Type(**values)


@jax.jit
def type_log_prob(library: Library, type_: Type) -> jnp.ndarray:
    """``log P(type)`` (float scalar). jit/vmap-able; differentiable in shapes, scales, along_t
    and position."""
    logp, _ = log_density(type_model, (library,), {}, _sites(type_))
    return logp


def _site_log_probs(library: Library, type_: Type) -> dict[str, jnp.ndarray]:
    _, tr = log_density(type_model, (library,), {}, _sites(type_))
    return {
        name: jnp.sum(site["fn"].log_prob(site["value"]))
        for name, site in tr.items()
        if site["type"] == "sample"
    }


@jax.jit
def stroke_marginal_log_prob(
    library: Library, shapes: jnp.ndarray, scales: jnp.ndarray, n_sub: jnp.ndarray
) -> jnp.ndarray:
    """``log sum_ids P(ids) P(shapes, scales | ids)`` of one stroke (forward algorithm).

    ``shapes (J, 5, 2)``, ``scales (J,)``, ``n_sub`` int ``()``, at most ``J`` (the first
    ``n_sub`` sub-strokes count; ``J`` may be anything up to ``MAX_SUBSTROKES``, and each of
    its ``J - 1`` steps is a ``(K,) @ (K, K)`` product). Returns a float scalar.
    """
    K = library.n_primitives
    every = jnp.arange(K)[None, :]  # (1, K)
    emission = primitive_shape_dist(library, every).log_prob(
        shapes[:, None]
    ) + primitive_scale_dist(library, every).log_prob(scales[:, None])  # (J, K)
    alpha0 = jnp.log(library.start_probs) + emission[0]

    def step(alpha, inputs):
        e, valid = inputs
        top = jax.lax.stop_gradient(jnp.max(alpha))  # log-sum-exp as a (K,) @ (K, K) product
        new = jnp.log(jnp.exp(alpha - top) @ library.trans_probs) + top + e
        return jnp.where(valid, new, alpha), None

    valid = jnp.arange(1, shapes.shape[0]) < n_sub
    alpha, _ = jax.lax.scan(step, alpha0, (emission[1:], valid))
    return jax.nn.logsumexp(alpha)


@jax.jit
def type_marginal_log_prob(library: Library, type_: Type) -> jnp.ndarray:
    """``log P(type)`` with the primitive ids summed out (``type_.ids`` is ignored)."""
    site = _site_log_probs(library, type_)
    rest = sum(v for k, v in site.items() if k not in ("ids", "shapes", "scales"))
    stroke_mask, _ = masks(type_.n_strokes, type_.n_sub)
    per_stroke = jax.vmap(stroke_marginal_log_prob, in_axes=(None, 0, 0, 0))(
        library, type_.shapes, type_.scales, type_.n_sub
    )
    return rest + jnp.sum(jnp.where(stroke_mask, per_stroke, 0.0))


# --- building a type from fitted splines (numpy; runs once per parse) ------------------------


def stroke_control_points(shapes: jnp.ndarray, scales: jnp.ndarray) -> jnp.ndarray:
    """Sub-stroke control points relative to the stroke's start, chained end to start.

    ``shapes (..., J, 5, 2)``, ``scales (..., J)`` -> ``(..., J, 5, 2)``: sub-stroke ``j`` starts
    where ``j - 1`` ends; the stroke starts at the origin. Padding sub-strokes come after the valid
    ones and do not move them.
    """
    control = shapes * scales[..., None, None]
    control = control - control[..., :1, :]
    steps = control[..., -1, :]  # (..., J, 2) displacement of each sub-stroke
    offsets = jnp.cumsum(steps, axis=-2) - steps
    return control + offsets[..., None, :]


def infer_relations(
    controls: Sequence[np.ndarray], threshold: float = 4.0, margin: float = 2.0
) -> list[tuple[int, int, int, float]]:
    """Relations of the strokes of one drawing, from geometry.

    ``controls``: per stroke, absolute control points ``(n_sub, 5, 2)``. A stroke whose start lies
    within ``threshold`` pixels of an earlier stroke attaches to it: to its start or end when that
    endpoint is at most ``margin`` pixels further than the nearest point along it, else along it.
    Returns per stroke ``(relation, parent, parent_sub, along_t)``.
    """
    grid = np.linspace(0.0, 1.0, 21)
    basis = bspline_basis(grid, xp=np)  # (21, 5)
    out = [(INDEPENDENT, 0, 0, 0.0)]
    for i in range(1, len(controls)):
        start = controls[i][0, 0]
        best_end = (np.inf, INDEPENDENT, 0)
        best_along = (np.inf, 0, 0, 0.0)
        for p in range(i):
            ends = ((controls[p][0, 0], START_OF), (controls[p][-1, -1], END_OF))
            for point, kind in ends:
                d = float(np.linalg.norm(point - start))
                if d < best_end[0]:
                    best_end = (d, kind, p)
            curve = np.einsum("tc,jcd->jtd", basis, controls[p])  # (n_sub, 21, 2)
            d = np.linalg.norm(curve - start, axis=-1)
            j, t = np.unravel_index(np.argmin(d), d.shape)
            if d[j, t] < best_along[0]:
                best_along = (float(d[j, t]), p, int(j), float(grid[t]))
        if min(best_end[0], best_along[0]) > threshold:
            out.append((INDEPENDENT, 0, 0, 0.0))
        elif best_end[0] <= best_along[0] + margin:
            out.append((best_end[1], best_end[2], 0, 0.0))
        else:
            out.append((ALONG, best_along[1], best_along[2], best_along[3]))
    return out


def assign_primitives(library: Library, shapes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Most probable primitive ids (Viterbi) of one stroke: ``shapes (n, 5, 2)``, ``scales (n,)``
    -> int ``(n,)``."""
    lib = {k: np.asarray(getattr(library, k)) for k in Library._fields}
    diff = (shapes[:, None] - lib["shape_mean"][None]) / lib["shape_sd"][None]
    emission = -0.5 * (diff**2).sum(axis=(2, 3)) - np.log(lib["shape_sd"]).sum(axis=(1, 2))
    z = (np.log(scales)[:, None] - lib["log_scale_mean"]) / lib["log_scale_sd"]
    emission = emission - 0.5 * z**2 - np.log(lib["log_scale_sd"])  # constants dropped
    with np.errstate(divide="ignore"):
        log_start, log_trans = np.log(lib["start_probs"]), np.log(lib["trans_probs"])
    score = log_start + emission[0]
    back = []
    for e in emission[1:]:
        total = score[:, None] + log_trans
        back.append(total.argmax(axis=0))
        score = total.max(axis=0) + e
    ids = [int(score.argmax())]
    for b in reversed(back):
        ids.append(int(b[ids[-1]]))
    return np.asarray(ids[::-1], dtype=np.int32)


def type_from_splines(library: Library, controls: Sequence[np.ndarray]) -> Type:
    """The type of a parse: ``controls`` holds, per stroke in drawing order, the fitted absolute
    control points ``(n_sub, 5, 2)`` of its sub-strokes (image pixels).

    Shapes and scales come from ``normalize_spline``, ids from ``assign_primitives`` and relations
    from ``infer_relations``; ``position`` holds every stroke's actual start. Raises ``ValueError``
    when the parse exceeds ``MAX_STROKES`` or ``MAX_SUBSTROKES``.
    """
    S, J = MAX_STROKES, MAX_SUBSTROKES
    if not 1 <= len(controls) <= S:
        raise ValueError(f"a type needs 1..{S} strokes, got {len(controls)}")
    n_sub = np.ones(S, np.int32)
    ids = np.zeros((S, J), np.int32)
    shapes = np.zeros((S, J, N_CONTROL, 2), np.float32)
    scales = np.ones((S, J), np.float32)
    position = np.zeros((S, 2), np.float32)
    relation = np.zeros(S, np.int32)
    parent = np.zeros(S, np.int32)
    parent_sub = np.zeros(S, np.int32)
    along_t = np.zeros(S, np.float32)
    for i, control in enumerate(controls):
        control = np.asarray(control, np.float64)
        if control.ndim != 3 or control.shape[1:] != (N_CONTROL, 2) or not 1 <= len(control) <= J:
            raise ValueError(
                f"stroke {i}: control points must be (1..{J}, 5, 2), got {control.shape}"
            )
        shape, scale = normalize_spline(control)
        n_sub[i] = len(control)
        shapes[i, : len(control)] = shape
        scales[i, : len(control)] = scale
        ids[i, : len(control)] = assign_primitives(library, shape, scale)
        position[i] = control[0, 0]
    for i, rel in enumerate(infer_relations(controls)):
        relation[i], parent[i], parent_sub[i], along_t[i] = rel
    return Type(
        n_strokes=jnp.asarray(len(controls), jnp.int32),
        n_sub=jnp.asarray(n_sub),
        ids=jnp.asarray(ids),
        shapes=jnp.asarray(shapes),
        scales=jnp.asarray(scales),
        relation=jnp.asarray(relation),
        parent=jnp.asarray(parent),
        parent_sub=jnp.asarray(parent_sub),
        along_t=jnp.asarray(along_t),
        position=jnp.asarray(position),
    )


# ---------------------------------------------------------------- a parse scored as a type
# ``log P(type)`` of refined trajectories: a parse as a character type. The numpy path of the generative-model issue (``fit_pieces`` -> ``type_from_splines`` ->
# ``type_marginal_log_prob``) costs ~0.1 s of Python per parse; this is its jit/vmap-able
# counterpart with fixed shapes, used to weigh the parses of every image.
#
# For one parse ``points f32 (S, P, 2)``, ``mask bool (S, P)`` (valid points form a prefix of each
# stroke; strokes in drawing order):
#
# - **sub-strokes:** each stroke is cut into ``n = 1 .. max_pieces`` pieces at its sharpest turns;
#   each piece is resampled by arclength and fitted with a clamped cubic B-spline (ends pinned, the
#   three inner control points by least squares: one fixed matrix), then normalised into shape and
#   scale. The stroke scores ``log P(n_sub = n | n_strokes) + log sum_ids P(ids, shapes, scales)``
#   (primitive ids summed out, :func:`~conceptlearn.model.type_prior.stroke_marginal_log_prob`)
#   plus a Gaussian fit residual (sd ``residual_sigma`` px per trajectory point, so a coarse cut
#   cannot hide shape); the best ``n`` is kept (MAP segmentation);
# - **relations:** each stroke after the first is independent (start position from the learned
#   density), start-of or end-of an earlier stroke, or along it; the relation with the highest
#   ``log P(relation) + log P(parent) + log P(where on the parent) + log N(start - anchor; 0,
#   position_noise_sd)`` is kept;
# - plus ``log P(n_strokes)``.

FIT_POINTS = 16  # arclength samples per piece for the spline fit
_T = np.linspace(0.0, 1.0, FIT_POINTS)
_BASIS = bspline_basis(_T, xp=np)  # (FIT_POINTS, 5)
_INNER_PINV = np.linalg.pinv(_BASIS[:, 1:-1])  # (3, FIT_POINTS)


def _gauss2(offset: jax.Array, sd: jax.Array) -> jax.Array:
    """``log N(offset (..., 2); 0, sd^2 I)``."""
    return -0.5 * jnp.sum(offset**2, -1) / sd**2 - jnp.log(2 * jnp.pi * sd**2)


def _arclength(points: jax.Array, mask: jax.Array) -> jax.Array:
    """Cumulative arclength ``f32 (P,)`` of a stroke's valid prefix, made strictly increasing
    (``1e-4`` px per point) so that it can be interpolated; the length is at the last valid
    point."""
    step = jnp.linalg.norm(jnp.diff(points, axis=0), axis=-1) * mask[1:]
    return jnp.concatenate([jnp.zeros(1), jnp.cumsum(step)]) + 1e-4 * jnp.arange(points.shape[0])


def _fit_piece(points, arc, start, end):
    """Spline through the polyline between arclengths ``start`` and ``end``: control points
    ``f32 (5, 2)`` and the resampled targets ``f32 (FIT_POINTS, 2)``."""
    s = start + (end - start) * _T
    target = jnp.stack([jnp.interp(s, arc, points[:, d]) for d in range(2)], -1)
    first, last = target[0], target[-1]
    ends = jnp.asarray(_BASIS[:, :1]) * first[None] + jnp.asarray(_BASIS[:, -1:]) * last[None]
    inner = jnp.asarray(_INNER_PINV) @ (target - ends)
    return jnp.concatenate([first[None], inner, last[None]]), target


def _cut_arclengths(points, mask, arc, n_pieces: int) -> jax.Array:
    """Arclengths ``f32 (n_pieces + 1,)`` of the cuts of a stroke into ``n_pieces`` pieces at its
    sharpest interior turns (in drawing order; ends included)."""
    P = points.shape[0]
    back = points[1:-1] - points[:-2]
    ahead = points[2:] - points[1:-1]
    cos = jnp.sum(back * ahead, -1) / jnp.maximum(
        jnp.linalg.norm(back, axis=-1) * jnp.linalg.norm(ahead, axis=-1), 1e-6
    )
    interior = mask[2:] & mask[1:-1] & mask[:-2]
    sharp = jnp.where(interior, -cos, -jnp.inf)  # (P - 2,)
    idx = jnp.sort(jax.lax.top_k(sharp, max(n_pieces - 1, 1))[1][: n_pieces - 1]) + 1
    total = arc[jnp.maximum(jnp.sum(mask) - 1, 0)]
    cuts = arc[jnp.clip(idx, 0, P - 1)]
    return jnp.concatenate([jnp.zeros(1), cuts, total[None]])


def stroke_log_prob(
    library: Library, points, mask, n_strokes, residual_sigma: float, max_pieces: int
):
    """Best segmentation of one stroke: ``points f32 (P, 2)``, ``mask bool (P,)`` -> ``f32 ()``
    (``-inf``-free: an empty stroke scores 0 and is masked by the caller)."""
    arc = _arclength(points, mask)
    n_valid = jnp.sum(mask)
    scores = []
    for n in range(1, max_pieces + 1):
        cuts = _cut_arclengths(points, mask, arc, n)
        controls, targets = jax.vmap(lambda a, b: _fit_piece(points, arc, a, b))(
            cuts[:-1], cuts[1:]
        )
        fitted = jnp.einsum("tc,ncd->ntd", jnp.asarray(_BASIS), controls)
        sq = jnp.sum((fitted - targets) ** 2) * n_valid / (n * FIT_POINTS)  # per trajectory point
        shapes, scales = normalize_spline(controls, xp=jnp)  # (n, 5, 2), (n,): n - 1 steps
        prims = stroke_marginal_log_prob(library, shapes, scales, jnp.asarray(n))
        n_sub = jnp.log(library.n_sub_probs[n_strokes - 1, n - 1])
        # a piece shorter than a pixel per cut is not a sub-stroke
        ok = (n == 1) | ((n_valid > n) & (cuts[-1] > 2.0 * n))
        scores.append(jnp.where(ok, n_sub + prims - 0.5 * sq / residual_sigma**2, -jnp.inf))
    return jnp.max(jnp.stack(scores))


def _segment_distance(point, a, b):
    """Distance ``f32 (...)`` from ``point (2,)`` to the segments ``a, b (..., 2)``."""
    point = jnp.broadcast_to(point, a.shape)
    ab = b - a
    t = jnp.clip(jnp.sum((point - a) * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-9), 0.0, 1.0)
    return jnp.linalg.norm(a + t[..., None] * ab - point, axis=-1)


def relation_log_prob(library: Library, points, mask, i: jax.Array) -> jax.Array:
    """Best relation of stroke ``i`` (``int ()``, > 0) to the strokes before it: ``f32 ()``."""
    S = points.shape[0]
    used = jnp.any(mask, -1)
    n_valid = jnp.sum(mask, -1)
    start = points[i, 0]
    firsts = points[:, 0]
    lasts = points[jnp.arange(S), jnp.maximum(n_valid - 1, 0)]
    earlier = used & (jnp.arange(S) < i)
    # the type model's own relation and parent probabilities of stroke i (written once there)
    log_parent = jnp.log(jnp.maximum(parent_probs()[i, :S], 1e-30))  # (S,)
    noise = library.position_noise_sd
    log_rel = jnp.log(relation_probs(library)[i])

    independent = log_rel[INDEPENDENT] + position_dist(library).log_prob(start)
    at_start = log_rel[START_OF] + log_parent + _gauss2(start[None] - firsts, noise)
    at_end = log_rel[END_OF] + log_parent + _gauss2(start[None] - lasts, noise)
    seg_ok = mask[:, 1:] & mask[:, :-1]
    d = _segment_distance(start, points[:, :-1], points[:, 1:])  # (S, P - 1)
    d = jnp.min(jnp.where(seg_ok, d, jnp.inf), -1)
    # along: uniform over the parent's sub-strokes and its position on them; the number of
    # sub-strokes of the parent is not known here, so its log (<= log 3) is taken as log 2
    along = (
        log_rel[ALONG]
        + log_parent
        - jnp.log(2.0)
        - 0.5 * d**2 / noise**2
        - jnp.log(2 * jnp.pi * noise**2)
    )
    dependent = jnp.where(earlier, jnp.maximum(jnp.maximum(at_start, at_end), along), -jnp.inf)
    return jnp.maximum(independent, jnp.max(dependent))


@functools.partial(jax.jit, static_argnames=("residual_sigma", "max_pieces"))
def parse_type_log_prob(
    library: Library, points, mask, residual_sigma: float = 1.5, max_pieces: int = MAX_SUBSTROKES
) -> jax.Array:
    """``log P(type)`` of one parse ``points f32 (S, P, 2)``, ``mask bool (S, P)`` -> ``f32 ()``
    (see the module docstring). vmap over parses for many."""
    S = points.shape[0]
    used = jnp.any(mask, -1)
    n_strokes = jnp.clip(jnp.sum(used), 1, library.n_strokes_probs.shape[0])
    per_stroke = jax.vmap(
        lambda p, m: stroke_log_prob(library, p, m, n_strokes, residual_sigma, max_pieces)
    )(points, mask)
    relations = jax.vmap(lambda i: relation_log_prob(library, points, mask, i))(jnp.arange(1, S))
    first = position_dist(library, weights=library.first_position_weights).log_prob(points[0, 0])
    return (
        jnp.log(library.n_strokes_probs[n_strokes - 1])
        + jnp.sum(jnp.where(used, per_stroke, 0.0))
        + jnp.sum(jnp.where(used[1:], relations, 0.0))
        + first
    )


@functools.partial(jax.jit, static_argnames=("max_pieces",))
def parse_type_log_probs(
    library: Library, points, mask, max_pieces: int = MAX_SUBSTROKES
) -> jax.Array:
    """:func:`parse_type_log_prob` of many parses: ``points f32 (C, S, P, 2)``,
    ``mask bool (C, S, P)`` -> ``f32 (C,)``; each stroke split into at most ``max_pieces``
    sub-strokes."""
    return jax.vmap(lambda p, m: parse_type_log_prob(library, p, m, max_pieces=max_pieces))(
        points, mask
    )


def uniform_primitives(library: Library) -> Library:
    """The "uniform primitives" lesion: every primitive equally likely to start a stroke and to
    follow any other (the learned shapes, scales and everything else kept)."""
    K = library.start_probs.shape[0]
    return library._replace(
        start_probs=jnp.full((K,), 1.0 / K, library.start_probs.dtype),
        trans_probs=jnp.full((K, K), 1.0 / K, library.trans_probs.dtype),
    )
