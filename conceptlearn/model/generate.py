"""New exemplars of a learned concept: token noise around its best parses, rendered.

A concept learned from ``k`` support images holds, per image, its ``K`` best parses with
posterior weights ``w`` (:class:`conceptlearn.inference.fit.Parse`, fields used here: ``points
f32 (k, K, S, P, 2)``, ``mask bool (k, K, S, P)``, ``log_weight f32 (k, K)``). One new exemplar:

1. a support image ``i`` uniformly (the concept is the mixture over its shots, as in its score),
   then a parse ``j`` with probability ``w_ij``;
2. a token of that parse from the token model, :func:`~conceptlearn.model.token.sample_token_noise`
   (motor noise at every point, a shift of each stroke, a global affine map and pen width,
   with the standard deviations of ``noise``: the library's learned token noise,
   :func:`conceptlearn.inference.config.learned_noise`), kept inside the canvas as in
   :mod:`conceptlearn.model.sample` (a fixed number of tries; the least overshoot if none fits);
3. rendered with the support image's pen (:func:`parse_pen`, inferred once per parse) times the
   token's pen change (:func:`~conceptlearn.model.token.token_ink`), and shown as ink
   probabilities with a display blur (:func:`~conceptlearn.model.image.pixel_probs`).

The pen is the instrument's, not the drawer's: over the 2,720 small1 drawings the log line width
varies between the drawers of a character with sd 0.039 (``FitConfig.pen_sigma``; a robust
estimate gives 0.033; `scripts/pen_spread.py`), an eighth of the token prior's hand-set 0.3, which serves the refits
(queries drawn with another pen).

Everything is one jitted, vmapped call with static shapes.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.model.image import pixel_probs
from conceptlearn.model.library import INDEPENDENT, MAX_SUBSTROKES, make_library
from conceptlearn.model.render import render
from conceptlearn.model.sample import MARGIN, TOKEN_TRIES, first_fitting, overshoot
from conceptlearn.model.splines import fit_pieces, resample_stroke
from conceptlearn.model.token import (
    pen_ink,
    sample_token_noise,
    token_ink,
    token_parents,
    token_points,
)


class TokenNoise(NamedTuple):
    """Standard deviations of a parse's token (:func:`~conceptlearn.model.token.token_log_prior`):
    ``motor_sigma`` px at each point (smooth along a stroke over ``motor_length`` points when
    > 0), ``stroke_sigma`` px per stroke (``attach_sigma`` for a
    stroke attached to an earlier one, when > 0), ``scale_sigma`` (log
    scale), ``shift_sigma`` px, ``width_sigma`` (log pen width), ``rotate_sigma`` rad,
    ``shear_sigma``. A pytree of float scalars, so jitted code takes it as data."""

    motor_sigma: float
    stroke_sigma: float
    attach_sigma: float
    scale_sigma: float
    shift_sigma: float
    width_sigma: float
    rotate_sigma: float
    shear_sigma: float
    motor_length: float = 0.0  # points: motor noise correlated along a stroke (> 0)

    @classmethod
    def of(cls, cfg) -> TokenNoise:
        """The noise of ``cfg`` (e.g. a ``FitConfig`` after ``learned_noise``)."""
        return cls(*(float(getattr(cfg, name)) for name in cls._fields))


PEN_RANGE = (-0.8, 0.8)  # log pen widths parse_pen searches
PEN_STEPS = 7  # its bisection steps: a resolution of 1.6 / 2**7 = 0.0125


def line_core_share(image: jax.Array) -> jax.Array:
    """The share of ink pixels whose 3 x 3 neighbourhood is all ink, ``f32 ()``, of ``image bool
    (H, W)``: a measure of line width that does not depend on line length (a straight line
    ``w`` px wide keeps about ``(w - 2) / w``)."""
    ink = image.astype(jnp.float32)
    core = jax.lax.reduce_window(ink, 1.0, jax.lax.min, (3, 3), (1, 1), "SAME")
    return jnp.sum(core) / jnp.maximum(jnp.sum(ink), 1.0)


def parse_pen(points, mask, image, blur_sigma: float = 0.5) -> jax.Array:
    """The log pen width ``f32 ()`` (relative to the default ink) at which the parse ``points
    f32 (S, P, 2)``, ``mask bool (S, P)``, rendered and binarised as exemplars are, has the
    line width of ``image bool (105, 105)`` by :func:`line_core_share`: a bisection over
    :data:`PEN_RANGE` (the share grows with the width). Length-free, so strokes the parse
    misses do not bias it."""
    target = line_core_share(image)

    def share(log_width):
        ink = pixel_probs(render(points, mask, pen_ink(log_width)), blur_sigma, 0.0)
        return line_core_share(ink > 0.5)

    def step(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        thinner = share(mid) > target
        return jnp.where(thinner, low, mid), jnp.where(thinner, mid, high)

    low, high = jax.lax.fori_loop(0, PEN_STEPS, step, (jnp.float32(PEN_RANGE[0]),
                                                       jnp.float32(PEN_RANGE[1])))
    return 0.5 * (low + high)


@jax.jit
def support_pens(points, mask, support, blur_sigma):
    """:func:`parse_pen` of every parse of every support image: ``points f32 (c, k, K, S, P,
    2)``, ``mask bool (c, k, K, S, P)``, ``support bool (c, k, 105, 105)`` -> ``f32 (c, k, K)``."""
    per_image = jax.vmap(parse_pen, (0, 0, None, None))  # the K parses of one image
    per_concept = jax.vmap(per_image, (0, 0, 0, None))  # its k support images
    return jax.vmap(per_concept, (0, 0, 0, None))(points, mask, support, blur_sigma)


def choose_parse(log_weight: jax.Array, *, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(shot, parse)`` int32 indices: a shot uniformly, then a parse by its posterior weight.
    ``log_weight f32 (k, K)`` (``-inf`` for invalid parses)."""
    shot_key, parse_key = jax.random.split(key)
    shot = jax.random.randint(shot_key, (), 0, log_weight.shape[0])
    parse = jax.random.categorical(parse_key, log_weight[shot])
    return shot, parse


def token_drawing(points, mask, noise, *, key: jax.Array, tries: int = TOKEN_TRIES):
    """One token of the parse ``points f32 (S, P, 2)``, ``mask bool (S, P)``, kept inside the
    canvas: ``(points f32 (S, P, 2), token)``."""
    parents = token_parents(points, mask, noise)
    tokens = jax.vmap(lambda k: sample_token_noise(noise, mask, key=k, parents=parents))(
        jax.random.split(key, tries)
    )
    moved = jax.vmap(lambda t: token_points(points, mask, t))(tokens)
    over = jax.vmap(lambda p: overshoot(p, mask, MARGIN))(moved)
    return first_fitting((moved, tokens), over)


@partial(jax.jit, static_argnames=("n",))
def sample_exemplars(
    points, mask, log_weight, noise, *, key: jax.Array, n: int, blur_sigma: float = 0.5,
    pen=None,
) -> jax.Array:
    """``n`` new exemplars of one concept: ink probabilities ``f32 (n, 105, 105)``.

    ``points f32 (k, K, S, P, 2)``, ``mask bool (k, K, S, P)``, ``log_weight f32 (k, K)``: the
    parses of the concept's ``k`` support images; ``noise``: :class:`TokenNoise` (its
    ``width_sigma`` spreads the pen around ``pen``); ``blur_sigma``: display blur (px); ``pen
    f32 (k, K)``: each parse's log pen width (:func:`parse_pen`; default 0, the default ink).
    """
    pen = jnp.zeros(log_weight.shape) if pen is None else pen

    def one(k):
        choice_key, token_key = jax.random.split(k)
        shot, parse = choose_parse(log_weight, key=choice_key)
        p, m = points[shot, parse], mask[shot, parse]
        moved, token = token_drawing(p, m, noise, key=token_key)
        token = token._replace(log_width=token.log_width + pen[shot, parse])
        return pixel_probs(render(moved, m, token_ink(token)), blur_sigma, 0.0)

    return jax.vmap(one)(jax.random.split(key, n))


# ------------------------------------------------------------ new characters in a given style
# BPL's "generate new concepts" task: from a few characters of one alphabet, new characters
# that share its primitives, stroke counts and relations. Each character's best parse becomes a
# type (``type_from_splines``: sub-strokes by spline fits, primitive ids by Viterbi, relations
# by geometry); the library's categorical parts are then re-estimated from these types with the
# library itself as a Dirichlet prior (posterior means), and new types are sampled from it.


class StylePrior(NamedTuple):
    """Dirichlet prior strengths (pseudo-counts in all, spread like the library's
    probabilities) of :func:`style_library`: each is how many of the alphabet's observations
    the library's value is worth."""

    counts: float = 4.0  # n_strokes_probs and each row of n_sub_probs
    start: float = 8.0  # start_probs (first primitive of a stroke)
    transitions: float = 4.0  # each row of trans_probs
    relations: float = 4.0  # relation_probs
    positions: float = 4.0  # first_position_weights and position_weights


def stroke_controls(points, mask, max_sub: int | None = None) -> list:
    """The sub-strokes of one parse as spline control points: ``points f32 (S, P, 2)``, ``mask
    bool (S, P)`` -> per stroke with at least two distinct points, ``f64 (n_sub, 5, 2)`` (at
    most ``max_sub``, default ``MAX_SUBSTROKES``; the fit is coarsened until it fits). Host
    code (numpy)."""
    max_sub = MAX_SUBSTROKES if max_sub is None else max_sub
    out = []
    for stroke, valid in zip(np.asarray(points), np.asarray(mask), strict=True):
        if valid.sum() < 2:
            continue
        dense = resample_stroke(stroke[valid], spacing=1.0)
        if len(dense) < 2:
            continue
        for max_residual in (2.0, 4.0, 8.0, np.inf):
            pieces = fit_pieces(dense, max_residual)
            if len(pieces) <= max_sub:
                break
        out.append(np.stack([control for control, _ in pieces]))
    return out


STYLE_PRIOR = StylePrior()


def style_library(library, types, prior: StylePrior | None = None):
    """``library`` with its categorical parts re-estimated from ``types`` (a list of
    :class:`~conceptlearn.model.type_prior.Type`, one per character of an alphabet): stroke
    and sub-stroke counts, first primitives and transitions, relations and start positions,
    each the posterior mean under a Dirichlet prior centred on the library's value (strengths
    ``prior``, default :data:`STYLE_PRIOR`). Shapes, scales and token noise stay the library's. Host code (numpy)."""
    prior = STYLE_PRIOR if prior is None else prior
    lib = {k: np.asarray(v, np.float64) for k, v in library._asdict().items()}
    n_strokes = np.zeros_like(lib["n_strokes_probs"])
    n_sub = np.zeros_like(lib["n_sub_probs"])
    start = np.zeros_like(lib["start_probs"])
    trans = np.zeros_like(lib["trans_probs"])
    relations = np.zeros_like(lib["relation_probs"])
    firsts, starts = [], []
    for t in types:
        t = {k: np.asarray(v) for k, v in t._asdict().items()}
        s = int(t["n_strokes"])
        n_strokes[s - 1] += 1
        for i in range(s):
            j = int(t["n_sub"][i])
            n_sub[s - 1, j - 1] += 1
            ids = t["ids"][i, :j]
            start[ids[0]] += 1
            np.add.at(trans, (ids[:-1], ids[1:]), 1.0)
            if i > 0:
                relations[t["relation"][i]] += 1
            if t["relation"][i] == INDEPENDENT:
                (firsts if i == 0 else starts).append(t["position"][i])
    starts = firsts + starts  # position_weights covers every independent stroke, as learned

    def nearest(points):
        counts = np.zeros(len(lib["position_centers"]))
        if points:
            d = ((np.asarray(points)[:, None] - lib["position_centers"][None]) ** 2).sum(-1)
            np.add.at(counts, d.argmin(1), 1.0)
        return counts

    def posterior(prior_probs, counts, strength):
        post = strength * prior_probs + counts
        return post / post.sum(-1, keepdims=True)

    lib.update(
        n_strokes_probs=posterior(lib["n_strokes_probs"], n_strokes, prior.counts),
        n_sub_probs=posterior(lib["n_sub_probs"], n_sub, prior.counts),
        start_probs=posterior(lib["start_probs"], start, prior.start),
        trans_probs=posterior(lib["trans_probs"], trans, prior.transitions),
        relation_probs=posterior(lib["relation_probs"], relations, prior.relations),
        first_position_weights=posterior(
            lib["first_position_weights"], nearest(firsts), prior.positions
        ),
        position_weights=posterior(lib["position_weights"], nearest(starts), prior.positions),
    )
    return make_library(**lib)
