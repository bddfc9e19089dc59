"""P(token | type): one drawing of a character type.

A token perturbs the type's shapes and scales with motor noise, places each stroke at its
relation's anchor plus jitter, then warps the whole drawing with an affine transform (scale about
the centre of mass, then shift); the ink parameters (blur sigma, pixel-flip epsilon) belong to
the token too. Written once as the numpyro model ``token_model``; ``sample_token`` runs it and
``token_log_prob`` scores a given token. ``token_trajectories`` turns a token into the polylines
that ``render`` inks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.handlers import seed, trace
from numpyro.infer.util import log_density

from conceptlearn.model.library import (
    ALONG,
    END_OF,
    INDEPENDENT,
    MAX_STROKES,
    MAX_SUBSTROKES,
    POINTS_PER_SUBSTROKE,
    START_OF,
    Library,
)
from conceptlearn.model.splines import bspline_basis
from conceptlearn.model.type_prior import Type, masks, stroke_control_points


class Token(NamedTuple):
    """One drawing (``S = MAX_STROKES``, ``J = MAX_SUBSTROKES``).

    - ``n_strokes`` int32 ``()``, ``n_sub`` int32 ``(S,)``: copied from the type (for masks);
    - ``shapes (S, J, 5, 2)``, ``scales (S, J)``: the type's after motor noise;
    - ``positions (S, 2)``: start of each stroke before the affine warp (pixels);
    - ``affine (4,)``: ``(scale_col, scale_row, shift_col, shift_row)``;
    - ``blur ()``, ``epsilon ()``: ink parameters for ``image.pixel_probs``.
    """

    n_strokes: jnp.ndarray
    n_sub: jnp.ndarray
    shapes: jnp.ndarray
    scales: jnp.ndarray
    positions: jnp.ndarray
    affine: jnp.ndarray
    blur: jnp.ndarray
    epsilon: jnp.ndarray


def anchors(
    type_: Type, shapes: jnp.ndarray, scales: jnp.ndarray, positions: jnp.ndarray
) -> jnp.ndarray:
    """Where each stroke's relation puts its start, given the strokes' ``positions (S, 2)`` and
    token ``shapes``/``scales``: the type's position (independent), the parent's start, its end,
    or a point along one of its sub-strokes. Returns ``(S, 2)``."""
    control = stroke_control_points(shapes, scales)  # (S, J, 5, 2), relative to stroke start
    parent = jnp.clip(type_.parent, 0, MAX_STROKES - 1)
    last = jnp.clip(type_.n_sub - 1, 0, MAX_SUBSTROKES - 1)
    end = control[jnp.arange(MAX_STROKES), last, -1]  # (S, 2)
    sub = jnp.clip(type_.parent_sub, 0, MAX_SUBSTROKES - 1)
    along = jnp.einsum("sc,scd->sd", bspline_basis(type_.along_t), control[parent, sub])
    kind = type_.relation[:, None]
    offset = jnp.select(
        [kind == START_OF, kind == END_OF, kind == ALONG],
        [jnp.zeros_like(end), end[parent], along],
        jnp.zeros_like(end),
    )
    independent = (type_.relation == INDEPENDENT)[:, None]
    return jnp.where(independent, type_.position, positions[parent] + offset)


def resolve_positions(
    type_: Type, shapes: jnp.ndarray, scales: jnp.ndarray, noise: jnp.ndarray
) -> jnp.ndarray:
    """Stroke starts ``(S, 2)`` solving ``positions = anchors(positions) + noise`` (strokes
    depend only on earlier ones, so ``S`` sweeps settle it)."""

    def sweep(_, positions):
        return anchors(type_, shapes, scales, positions) + noise

    return jax.lax.fori_loop(0, MAX_STROKES, sweep, jnp.zeros_like(noise))


def token_model(library: Library, type_: Type) -> None:
    """numpyro model of P(token | type). Sites: ``shapes``, ``scales``, ``position_noise``,
    ``affine``, ``blur``, ``epsilon``; deterministic ``positions``."""
    stroke_mask, sub_mask = masks(type_.n_strokes, type_.n_sub)
    shapes = numpyro.sample(
        "shapes", dist.Normal(type_.shapes, library.shape_noise_sd).to_event(2).mask(sub_mask)
    )
    scales = numpyro.sample(
        "scales", dist.LogNormal(jnp.log(type_.scales), library.log_scale_noise_sd).mask(sub_mask)
    )
    noise_d = dist.Normal(jnp.zeros((MAX_STROKES, 2)), library.position_noise_sd).to_event(1)
    noise = numpyro.sample("position_noise", noise_d.mask(stroke_mask))
    numpyro.deterministic("positions", resolve_positions(type_, shapes, scales, noise))
    numpyro.sample("affine", dist.Normal(library.affine_mean, library.affine_sd).to_event(1))
    numpyro.sample("blur", dist.Uniform(library.blur_range[0], library.blur_range[1]))
    numpyro.sample("epsilon", dist.Uniform(library.epsilon_range[0], library.epsilon_range[1]))


@jax.jit
def sample_token(library: Library, type_: Type, *, key: jax.Array) -> Token:
    """Draw one token of ``type_``. jit/vmap-able."""
    tr = trace(seed(token_model, key)).get_trace(library, type_)
    return Token(
        n_strokes=type_.n_strokes,
        n_sub=type_.n_sub,
        shapes=tr["shapes"]["value"],
        scales=tr["scales"]["value"],
        positions=tr["positions"]["value"],
        affine=tr["affine"]["value"],
        blur=tr["blur"]["value"],
        epsilon=tr["epsilon"]["value"],
    )


@jax.jit
def token_log_prob(library: Library, token: Token, type_: Type) -> jnp.ndarray:
    """``log P(token | type)`` (float scalar); jit/vmap/grad-able in the token's float fields.

    The position jitter is recovered as ``positions - anchors(positions)`` (a triangular map with
    unit Jacobian, so this is the density of ``positions``). Ink parameters outside their ranges
    are not flagged; keep them inside (e.g. by a sigmoid) when optimising.
    """
    noise = token.positions - anchors(type_, token.shapes, token.scales, token.positions)
    params = {
        "shapes": token.shapes,
        "scales": token.scales,
        "position_noise": noise,
        "affine": token.affine,
        "blur": token.blur,
        "epsilon": token.epsilon,
    }
    logp, _ = log_density(token_model, (library, type_), {}, params)
    return logp


@jax.jit
def token_from_type(
    library: Library, type_: Type, blur: float = 1.0, epsilon: float = 1e-3
) -> Token:
    """The noise-free token of ``type_``: the type's shapes and scales, zero jitter, mean affine.
    For a type built by ``type_from_splines`` this redraws the parse where it was drawn."""
    positions = resolve_positions(type_, type_.shapes, type_.scales, jnp.zeros((MAX_STROKES, 2)))
    return Token(
        n_strokes=type_.n_strokes,
        n_sub=type_.n_sub,
        shapes=type_.shapes,
        scales=type_.scales,
        positions=positions,
        affine=library.affine_mean,
        blur=jnp.asarray(blur, jnp.float32),
        epsilon=jnp.asarray(epsilon, jnp.float32),
    )


@jax.jit
def token_trajectories(token: Token) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Polylines of a token for ``render``: ``points f32 (S, J * P, 2)`` and ``mask bool
    (S, J * P)`` with ``P = POINTS_PER_SUBSTROKE``; valid points of a stroke come first."""
    S, J, P = MAX_STROKES, MAX_SUBSTROKES, POINTS_PER_SUBSTROKE
    _, sub_mask = masks(token.n_strokes, token.n_sub)
    control = stroke_control_points(token.shapes, token.scales)  # (S, J, 5, 2)
    basis = bspline_basis(jnp.linspace(0.0, 1.0, P))  # (P, 5)
    points = jnp.einsum("pc,sjcd->sjpd", basis, control) + token.positions[:, None, None, :]
    points = points.reshape(S, J * P, 2)
    mask = jnp.repeat(sub_mask, P, axis=1)
    weight = mask.astype(points.dtype)[..., None]
    com = jnp.sum(points * weight, axis=(0, 1)) / jnp.maximum(jnp.sum(weight), 1.0)
    scale, shift, com = token.affine[None, None, :2], token.affine[None, None, 2:], com[None, None]
    warped = (points - com) * scale + com + shift
    return warped, mask
