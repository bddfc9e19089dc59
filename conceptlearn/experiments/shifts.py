"""Out-of-distribution shifts applied to query images at test time.

A shift is a pure function ``(image bool (105, 105), key, strength) -> bool (105, 105)``; the
harness applies it to every query of a run (the support stays clean), with a key derived from
the seed and the run, so shifted evaluations are reproducible and resumable. Neither contender
is trained on these transformations at these strengths: they probe generalisation.

Spec strings name a shift and its strength, e.g. ``rotate=30`` (degrees, sign drawn at random),
``scale=0.7``, ``shear=0.4``, ``thicken=2`` (pixels), ``thin=1``, ``flip=0.02`` (pixel-flip
probability), ``occlude=20`` (side of a blanked square, pixels), ``translate=15`` (pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

SIZE = 105
_CENTRE = (SIZE - 1) / 2.0


def _warp(image: jax.Array, matrix: jax.Array, offset: jax.Array) -> jax.Array:
    """Sample ``image`` at ``matrix @ (p - centre) + centre + offset`` for every pixel ``p``.

    ``matrix``: ``f32 (2, 2)`` acting on ``(row, col)``; bilinear, thresholded at 1/2.
    """
    rows, cols = jnp.meshgrid(
        jnp.arange(SIZE, dtype=jnp.float32), jnp.arange(SIZE, dtype=jnp.float32), indexing="ij"
    )
    centred = jnp.stack([rows.ravel(), cols.ravel()]) - _CENTRE  # (2, SIZE*SIZE)
    source = matrix @ centred + _CENTRE + offset[:, None]
    values = map_coordinates(image.astype(jnp.float32), [source[0], source[1]], order=1, cval=0.0)
    return values.reshape(SIZE, SIZE) > 0.5


def _random_sign(key: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)


def rotate(image: jax.Array, key: jax.Array, degrees: float) -> jax.Array:
    """Rotate about the centre by ``degrees`` in a random direction."""
    theta = jnp.deg2rad(degrees) * _random_sign(key)
    c, s = jnp.cos(theta), jnp.sin(theta)
    return _warp(image, jnp.array([[c, -s], [s, c]]), jnp.zeros(2))


def scale(image: jax.Array, key: jax.Array, factor: float) -> jax.Array:
    """Scale about the centre by ``factor`` (< 1 shrinks)."""
    del key
    return _warp(image, jnp.eye(2) / factor, jnp.zeros(2))


def shear(image: jax.Array, key: jax.Array, amount: float) -> jax.Array:
    """Horizontal shear ``col += amount * row`` in a random direction (slanted handwriting)."""
    k = amount * _random_sign(key)
    return _warp(image, jnp.array([[1.0, 0.0], [-k, 1.0]]), jnp.zeros(2))


def translate(image: jax.Array, key: jax.Array, pixels: float) -> jax.Array:
    """Shift by ``pixels`` in a random direction (ink leaving the frame is lost)."""
    angle = jax.random.uniform(key, (), maxval=2 * jnp.pi)
    return _warp(image, jnp.eye(2), -pixels * jnp.array([jnp.sin(angle), jnp.cos(angle)]))


def _dilate(image: jax.Array, radius: int) -> jax.Array:
    padded = jnp.pad(image, radius)
    out = image
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            if dr * dr + dc * dc <= radius * radius:
                out = out | jax.lax.dynamic_slice(padded, (radius + dr, radius + dc), (SIZE, SIZE))
    return out


def thicken(image: jax.Array, key: jax.Array, pixels: int) -> jax.Array:
    """Dilate the ink by a disc of radius ``pixels`` (a broader pen)."""
    del key
    return _dilate(image, int(pixels))


def thin(image: jax.Array, key: jax.Array, pixels: int) -> jax.Array:
    """Erode the ink by a disc of radius ``pixels`` (a finer pen); never erases every pixel."""
    del key
    eroded = ~_dilate(~image, int(pixels))
    return jnp.where(eroded.any(), eroded, image)


def flip(image: jax.Array, key: jax.Array, probability: float) -> jax.Array:
    """Flip each pixel independently with ``probability`` (scanner noise)."""
    return image ^ jax.random.bernoulli(key, probability, image.shape)


def occlude(image: jax.Array, key: jax.Array, side: int) -> jax.Array:
    """Blank a ``side`` x ``side`` square centred on a random ink pixel."""
    side = int(side)
    weights = image.ravel().astype(jnp.float32) + 1e-6
    centre = jax.random.choice(key, SIZE * SIZE, p=weights / weights.sum())
    row, col = centre // SIZE, centre % SIZE
    rows, cols = jnp.arange(SIZE)[:, None], jnp.arange(SIZE)[None, :]
    half = side // 2
    inside = (jnp.abs(rows - row) <= half) & (jnp.abs(cols - col) <= half)
    return image & ~inside


SHIFTS: dict[str, Callable] = {
    "rotate": rotate,
    "scale": scale,
    "shear": shear,
    "translate": translate,
    "thicken": thicken,
    "thin": thin,
    "flip": flip,
    "occlude": occlude,
}
_INTEGER = {"thicken", "thin", "occlude"}


def parse_shift(spec: str) -> tuple[str, float]:
    """``"rotate=30"`` -> ``("rotate", 30.0)``, with a clear error for anything else."""
    name, sep, value = spec.partition("=")
    if name not in SHIFTS or not sep:
        raise ValueError(f"--shift {spec!r}: expected NAME=STRENGTH with NAME in {sorted(SHIFTS)}")
    try:
        strength = float(value)
    except ValueError:
        raise ValueError(f"--shift {spec!r}: strength {value!r} is not a number") from None
    if name in _INTEGER and strength != int(strength):
        raise ValueError(f"--shift {spec!r}: {name} takes a whole number of pixels")
    if name == "scale" and strength <= 0:
        raise ValueError(f"--shift {spec!r}: scale factor must be positive")
    if name == "flip" and not 0 <= strength <= 1:
        raise ValueError(f"--shift {spec!r}: flip probability must be in [0, 1]")
    return name, strength


@partial(jax.jit, static_argnames=("name", "strength"))
def _apply(images: jax.Array, key: jax.Array, name: str, strength: float) -> jax.Array:
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda im, k: SHIFTS[name](im, k, strength))(images, keys)


def apply_shift(spec: str, images: np.ndarray, key: jax.Array) -> np.ndarray:
    """Apply shift ``spec`` to ``bool (n, 105, 105)`` images, one subkey per image."""
    name, strength = parse_shift(spec)
    return np.asarray(_apply(jnp.asarray(images, dtype=bool), key, name, strength))
