"""P(type): the character-type level of the generative model.

A type is a small program: the number of strokes; per stroke the number of sub-strokes, their
primitive ids (a first-order Markov chain), normalised shapes and scales; and a relation of each
stroke to earlier ones (independent at a position, start-of, end-of, or along a sub-stroke).

The generative story is written once, as the numpyro model ``type_model``; ``sample_type`` runs
it forward and ``type_log_prob`` scores a given type with it. Shapes are static
(``S = MAX_STROKES``, ``J = MAX_SUBSTROKES``) with masks derived from the counts.
"""

from __future__ import annotations

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


def position_dist(library: Library, batch_shape: tuple[int, ...] = ()) -> dist.Distribution:
    """Start position of an independent stroke: Gaussian mixture over the image, event ``(2,)``,
    batch ``batch_shape`` (broadcast explicitly: numpyro's ``expand`` promotes ranks)."""
    G = library.position_centers.shape[0]
    centers = jnp.broadcast_to(library.position_centers, (*batch_shape, G, 2))
    weights = jnp.broadcast_to(library.position_weights, (*batch_shape, G))
    components = dist.Normal(centers, library.position_sd * jnp.ones_like(centers)).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)


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
    numpyro.sample("position", position_dist(library, (S,)).mask(independent))


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

    ``shapes (J, 5, 2)``, ``scales (J,)``, ``n_sub`` int ``()``. Returns a float scalar.
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

    valid = jnp.arange(1, MAX_SUBSTROKES) < n_sub
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
