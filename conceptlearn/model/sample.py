"""Sample new character types and exemplars of each, rendered as a grid.

``conceptlearn sample --library LIB.npz --new-concepts N --exemplars M --out grid.png``: row ``i``
is concept ``i``; its first column draws the type's noise-free token, the next ``M`` columns
sampled tokens. Images are ``pixel_probs(render(...))`` with a display blur (the token's own
ink parameters are drawn from a broad prior and would mostly wash the picture out).

Drawings are kept inside the canvas, as BPL keeps them: a type is drawn from P(type) given that
its noise-free token lies inside the canvas, a token from P(token | type) given that it does
(:func:`inside_canvas`, ``margin`` px from every edge: the half-width of a line plus the 2-px
ring that real drawings almost never touch). Both are rejection samplers with a fixed number
of tries, run as one batch (static shapes); when no try fits, the one that overshoots least is
kept.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from conceptlearn.datasets.omniglot import IMAGE_SIZE
from conceptlearn.model.image import pixel_probs
from conceptlearn.model.library import Library
from conceptlearn.model.render import render
from conceptlearn.model.token import sample_token, token_from_type, token_trajectories
from conceptlearn.model.type_prior import sample_type

MARGIN = 5.0  # px from each edge: the 2-px border ring plus a line's half-width (2.55 px)
TYPE_TRIES = 32  # types drawn per kept type (about a third of prior types fit the canvas)
TOKEN_TRIES = 8  # tokens drawn per kept token


def overshoot(points: jnp.ndarray, mask: jnp.ndarray, margin: float = MARGIN) -> jnp.ndarray:
    """How far ``f32 ()`` (px, summed over the four sides) the valid points of ``points
    f32 (..., 2)`` with ``mask bool (...)`` reach past ``margin`` px from the canvas edges;
    0 when they lie inside."""
    pts = points.reshape(-1, 2)
    valid = mask.reshape(-1)[:, None]
    lo = jnp.min(jnp.where(valid, pts, jnp.inf), axis=0)
    hi = jnp.max(jnp.where(valid, pts, -jnp.inf), axis=0)
    low_edge, high_edge = margin, IMAGE_SIZE - 1 - margin
    over = jnp.maximum(low_edge - lo, 0.0) + jnp.maximum(hi - high_edge, 0.0)
    return jnp.sum(jnp.where(jnp.isfinite(over), over, 0.0))


def inside_canvas(points: jnp.ndarray, mask: jnp.ndarray, margin: float = MARGIN) -> jnp.ndarray:
    """``bool ()``: every valid point of ``points f32 (..., 2)`` lies ``margin`` px inside."""
    return overshoot(points, mask, margin) <= 0.0


def first_fitting(candidates, overshoots: jnp.ndarray):
    """The first of a batch of ``candidates`` (a pytree, leading axis ``n``) whose overshoot
    ``f32 (n,)`` is 0, else the one that overshoots least."""
    fits = overshoots <= 0.0
    index = jnp.where(jnp.any(fits), jnp.argmax(fits), jnp.argmin(overshoots))
    return jax.tree.map(lambda x: x[index], candidates)


def sample_type_in_canvas(
    library: Library, *, key: jax.Array, tries: int = TYPE_TRIES, margin: float = MARGIN
):
    """A type from P(type | its noise-free token lies ``margin`` px inside the canvas)."""
    types = jax.vmap(lambda k: sample_type(library, key=k))(jax.random.split(key, tries))
    tokens = jax.vmap(lambda t: token_from_type(library, t))(types)
    over = jax.vmap(lambda tok: overshoot(*token_trajectories(tok), margin))(tokens)
    return first_fitting(types, over)


def sample_token_in_canvas(
    library: Library, type_, *, key: jax.Array, tries: int = TOKEN_TRIES, margin: float = MARGIN
):
    """A token from P(token | type, the token lies ``margin`` px inside the canvas)."""
    tokens = jax.vmap(lambda k: sample_token(library, type_, key=k))(jax.random.split(key, tries))
    over = jax.vmap(lambda tok: overshoot(*token_trajectories(tok), margin))(tokens)
    return first_fitting(tokens, over)


def token_image(token, blur_sigma: float, epsilon: float) -> jnp.ndarray:
    """Pixel ink probabilities ``f32 (105, 105)`` of one token."""
    points, mask = token_trajectories(token)
    return pixel_probs(render(points, mask), blur_sigma, epsilon)


@partial(jax.jit, static_argnames=("n_concepts", "n_exemplars", "in_canvas"))
def sample_images(
    library: Library,
    key: jax.Array,
    n_concepts: int,
    n_exemplars: int,
    blur_sigma: float = 0.5,
    epsilon: float = 0.0,
    in_canvas: bool = True,
) -> jnp.ndarray:
    """``f32 (n_concepts, 1 + n_exemplars, 105, 105)``: per new type its noise-free token, then
    ``n_exemplars`` sampled tokens. ``in_canvas``: types and tokens kept inside the canvas
    (the module docstring); False draws them from the untruncated prior."""
    type_keys, token_keys = jax.random.split(key)
    draw_type = sample_type_in_canvas if in_canvas else sample_type
    draw_token = sample_token_in_canvas if in_canvas else sample_token
    types = jax.vmap(lambda k: draw_type(library, key=k))(jax.random.split(type_keys, n_concepts))

    def one_concept(type_, k):
        tokens = jax.vmap(lambda kk: draw_token(library, type_, key=kk))(
            jax.random.split(k, n_exemplars)
        )
        mean = token_from_type(library, type_)
        draw = partial(token_image, blur_sigma=blur_sigma, epsilon=epsilon)
        return jnp.concatenate([draw(mean)[None], jax.vmap(draw)(tokens)], axis=0)

    return jax.vmap(one_concept)(types, jax.random.split(token_keys, n_concepts))


def border_ink_share(images: np.ndarray, ring: int = 2, threshold: float = 0.5) -> float:
    """Share of ``images (..., H, W)`` (ink probabilities or bool) with ink (``> threshold``) in
    the outer ``ring`` pixels."""
    images = np.asarray(images, np.float32)
    inner = np.zeros(images.shape[-2:], bool)
    inner[ring:-ring, ring:-ring] = True
    touched = np.any((images > threshold) & ~inner, axis=(-2, -1))
    return float(np.mean(touched))


def save_grid(images: np.ndarray, path: str, gap: int = 3) -> None:
    """Write ``images (rows, cols, H, W)`` in ``[0, 1]`` (1 = ink) as a black-on-white PNG."""
    rows, cols, h, w = images.shape
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), 0.6)
    for r in range(rows):
        for c in range(cols):
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            canvas[y : y + h, x : x + w] = 1.0 - images[r, c]
    Image.fromarray(np.uint8(np.clip(canvas, 0, 1) * 255)).save(path)
