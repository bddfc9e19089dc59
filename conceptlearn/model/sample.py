"""Sample new character types and exemplars of each, rendered as a grid.

``conceptlearn sample --library LIB.npz --new-concepts N --exemplars M --out grid.png``: row ``i``
is concept ``i``; its first column draws the type's noise-free token, the next ``M`` columns
sampled tokens. Images are ``pixel_probs(render(...))`` with a display blur (the token's own
ink parameters are drawn from a broad prior and would mostly wash the picture out).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from conceptlearn.model.image import pixel_probs
from conceptlearn.model.library import Library
from conceptlearn.model.render import render
from conceptlearn.model.token import sample_token, token_from_type, token_trajectories
from conceptlearn.model.type_prior import sample_type


def token_image(token, blur_sigma: float, epsilon: float) -> jnp.ndarray:
    """Pixel ink probabilities ``f32 (105, 105)`` of one token."""
    points, mask = token_trajectories(token)
    return pixel_probs(render(points, mask), blur_sigma, epsilon)


@partial(jax.jit, static_argnames=("n_concepts", "n_exemplars"))
def sample_images(
    library: Library,
    key: jax.Array,
    n_concepts: int,
    n_exemplars: int,
    blur_sigma: float = 0.5,
    epsilon: float = 0.0,
) -> jnp.ndarray:
    """``f32 (n_concepts, 1 + n_exemplars, 105, 105)``: per new type its noise-free token, then
    ``n_exemplars`` sampled tokens."""
    type_keys, token_keys = jax.random.split(key)
    types = jax.vmap(lambda k: sample_type(library, key=k))(jax.random.split(type_keys, n_concepts))

    def one_concept(type_, k):
        tokens = jax.vmap(lambda kk: sample_token(library, type_, key=kk))(
            jax.random.split(k, n_exemplars)
        )
        mean = token_from_type(library, type_)
        draw = partial(token_image, blur_sigma=blur_sigma, epsilon=epsilon)
        return jnp.concatenate([draw(mean)[None], jax.vmap(draw)(tokens)], axis=0)

    return jax.vmap(one_concept)(types, jax.random.split(token_keys, n_concepts))


def save_grid(images: np.ndarray, path: str, gap: int = 3) -> None:
    """Write ``images (rows, cols, H, W)`` in ``[0, 1]`` (1 = ink) as a black-on-white PNG."""
    rows, cols, h, w = images.shape
    canvas = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), 0.6)
    for r in range(rows):
        for c in range(cols):
            y, x = gap + r * (h + gap), gap + c * (w + gap)
            canvas[y : y + h, x : x + w] = 1.0 - images[r, c]
    Image.fromarray(np.uint8(np.clip(canvas, 0, 1) * 255)).save(path)
