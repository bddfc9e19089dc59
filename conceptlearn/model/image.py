"""P(image | ink): per-pixel Bernoulli with Gaussian blur and pixel-flip noise (DESIGN.md §5).

``p = (1 - epsilon) * blur(ink, blur_sigma) + epsilon / 2``, clipped into ``(0, 1)``; an image
is ``bool (105, 105)``, True = ink. ``blur_sigma`` in ``[0.5, 16]`` px and ``epsilon`` in
``[1e-4, 0.5]`` are token-level variables; they may be traced (no retrace when they change).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from conceptlearn.model.render import IMAGE_SIZE, InkParams, grid_size, render

BLUR_SIGMA_RANGE = (0.5, 16.0)
EPSILON_RANGE = (1e-4, 0.5)
_PROB_CLIP = 1e-6


def blur_matrix(sigma: jax.Array | float, size: int = IMAGE_SIZE) -> jax.Array:
    """``f32 (size, size)`` Gaussian blur operator along one axis, zero outside the image.

    Rows are normalised over all offsets ``-(size-1) .. size-1``, so ink keeps its level inside
    the image and fades at the border as if the page beyond were blank.
    """
    sigma = jnp.asarray(sigma, jnp.float32)
    offsets = jnp.arange(-(size - 1), size, dtype=jnp.float32)
    norm = jnp.sum(jnp.exp(-0.5 * (offsets / sigma) ** 2))
    grid = jnp.arange(size, dtype=jnp.float32)
    d = grid[:, None] - grid[None, :]
    return jnp.exp(-0.5 * (d / sigma) ** 2) / norm


def blur(ink: jax.Array, sigma: jax.Array | float) -> jax.Array:
    """Separable Gaussian blur of ``ink f32 (105, 105)`` with std ``sigma`` px (any sigma)."""
    k = blur_matrix(sigma, ink.shape[0])
    return k @ ink @ k.T


@jax.jit
def pixel_probs(ink: jax.Array, blur_sigma: jax.Array | float, epsilon: jax.Array | float):
    """``ink f32 (105, 105)`` -> per-pixel ink probabilities ``f32 (105, 105)`` in ``(0, 1)``."""
    epsilon = jnp.asarray(epsilon, jnp.float32)
    p = (1.0 - epsilon) * blur(ink, blur_sigma) + 0.5 * epsilon
    return jnp.clip(p, _PROB_CLIP, 1.0 - _PROB_CLIP)


def image_dist(probs: jax.Array) -> dist.Distribution:
    """The image distribution: independent Bernoullis over ``probs f32 (105, 105)``.

    ``sample(key)`` gives ``f32`` 0/1 images (cast with ``astype(bool)``); ``log_prob`` takes
    bool or 0/1 images. ``log_likelihood`` is its ``log_prob``.
    """
    return dist.Bernoulli(probs=probs).to_event(2)


@jax.jit
def log_likelihood(probs: jax.Array, image: jax.Array) -> jax.Array:
    """Bernoulli ``log P(image | probs)``: ``probs f32 (105, 105)``, ``image bool`` -> ``f32``."""
    if probs.shape != image.shape:
        raise ValueError(f"log_likelihood: probs {probs.shape} and image {image.shape} differ")
    return image_dist(probs).log_prob(image.astype(jnp.float32))


def coarse_target(image: jax.Array, level: int) -> jax.Array:
    """The share of ink in each ``level x level`` block of ``image bool (105, 105)`` (the page
    beyond the border blank) -> ``f32 (n, n)``, ``n = grid_size(level)``; level 1: the image."""
    n = grid_size(level)
    pad = n * level - image.shape[0]
    padded = jnp.pad(image.astype(jnp.float32), ((0, pad), (0, pad)))
    return padded.reshape(n, level, n, level).mean((1, 3))


def level_log_likelihood(probs: jax.Array, target: jax.Array, level: int) -> jax.Array:
    """``log P(image | probs)`` at resolution ``level``: ``probs f32 (n, n)`` of the blocks'
    centres against ``target = coarse_target(image, level)``; each block stands for its
    ``level**2`` pixels (their summed Bernoulli log-probabilities if the ink were constant over
    the block). At level 1 this is :func:`log_likelihood` exactly. -> ``f32 ()``."""
    return jnp.sum(_block_log_likelihoods(probs, target, level))


def _block_log_likelihoods(probs, target, level: int) -> jax.Array:
    """The terms of :func:`level_log_likelihood`, one per block, ``f32 (n, n)``."""
    return level**2 * (target * jnp.log(probs) + (1.0 - target) * jnp.log1p(-probs))


def box_sums(values: jax.Array, side: int) -> jax.Array:
    """Sums of ``values f32 (n, n)`` over every ``side x side`` square inside it, ``f32 (n -
    side + 1, n - side + 1)`` indexed by the square's top-left corner (a summed-area table)."""
    table = jnp.pad(jnp.cumsum(jnp.cumsum(values, 0), 1), ((1, 0), (1, 0)))
    return table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]


def occluded_log_likelihood(
    probs: jax.Array, target: jax.Array, level: int, side: int, log_prior, blank
) -> jax.Array:
    """``log P(image | probs)`` when, with probability ``rho = exp(log_prior)``, a ``side x
    side`` square (full-resolution px) of the image is not drawn by ``probs``: an occluder,
    placed uniformly among the squares inside the grid, under which each pixel is ink with
    probability ``blank`` (near 0: a blank patch; larger: ink from elsewhere). Summed out:
    ``log[(1 - rho) P(image | probs) + rho mean_squares P(image | probs, square)]``.
    Arguments as :func:`level_log_likelihood`; -> ``f32 ()``."""
    pixel = _block_log_likelihoods(probs, target, level)
    covered = _block_log_likelihoods(jnp.asarray(blank, jnp.float32), target, level)
    gain = box_sums(covered - pixel, max(1, round(side / level)))  # occluded minus not, per square
    log_prior = jnp.asarray(log_prior, jnp.float32)
    occluded = log_prior - jnp.log(float(gain.size)) + logsumexp(gain)
    return jnp.sum(pixel) + jnp.logaddexp(jnp.log1p(-jnp.exp(log_prior)), occluded)


@jax.jit
def image_log_likelihood(
    points: jax.Array,
    mask: jax.Array,
    image: jax.Array,
    blur_sigma: jax.Array | float,
    epsilon: jax.Array | float,
    ink: InkParams | None = None,
) -> jax.Array:
    """``log P(image | trajectories)``: render ``points f32 (n_strokes, n_points, 2)`` with
    ``mask bool (n_strokes, n_points)``, blur, add noise, score ``image bool (105, 105)``."""
    return log_likelihood(pixel_probs(render(points, mask, ink), blur_sigma, epsilon), image)
