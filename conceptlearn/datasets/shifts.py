"""Out-of-distribution shifts applied to query images at test time.

A shift is a pure function ``(image bool (105, 105), key, strength) -> bool (105, 105)``
(``clutter`` also takes a donor image); the harness applies it to every query of a run (and,
when asked, to the support), with a key derived from the seed and the run, so shifted
evaluations are reproducible and resumable. Neither contender is trained on these
transformations at these strengths: they probe generalisation.

Spec strings name a shift and its strength, e.g. ``rotate=30`` (degrees, sign drawn at random),
``scale=0.7``, ``shear=0.4``, ``thicken=2`` (pixels), ``thin=1``, ``flip=0.02`` (pixel-flip
probability), ``occlude=20`` (side of a blanked square, pixels), ``translate=15`` (pixels),
``clutter=20`` (radius in pixels of a fragment of another character's ink added to the image).
``SEVERITIES`` holds three strengths per family (``thin`` two), mild to strong, and ``UNITS``
what they measure.
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


def clutter(image: jax.Array, key: jax.Array, radius: int, donor: jax.Array) -> jax.Array:
    """Add a fragment of ``donor``'s ink (another character, ``bool (105, 105)``): its ink within
    ``radius`` pixels of a random ink pixel, moved to a random place in the middle 60% of the
    frame (stray strokes beside or across the character)."""
    pick, place = jax.random.split(key)
    weights = donor.ravel().astype(jnp.float32) + 1e-6
    centre = jax.random.choice(pick, SIZE * SIZE, p=weights / weights.sum())
    source = jnp.stack([centre // SIZE, centre % SIZE]).astype(jnp.float32)
    rows, cols = jnp.arange(SIZE)[:, None], jnp.arange(SIZE)[None, :]
    near = (rows - source[0]) ** 2 + (cols - source[1]) ** 2 < float(radius) ** 2
    target = jnp.round(jax.random.uniform(place, (2,), minval=0.2 * SIZE, maxval=0.8 * SIZE))
    # whole-pixel offsets: the bilinear warp moves the fragment exactly
    return image | _warp(donor & near, jnp.eye(2), source - target)


SHIFTS: dict[str, Callable] = {
    "rotate": rotate,
    "scale": scale,
    "shear": shear,
    "translate": translate,
    "thicken": thicken,
    "thin": thin,
    "flip": flip,
    "occlude": occlude,
    "clutter": clutter,
}
_INTEGER = {"thicken", "thin", "occlude", "clutter"}
_NEEDS_DONOR = {"clutter"}

# Three strengths per family, mild to strong, and the unit of each family's strength. ``thin``
# has two: erosion by 3 px erases a quarter of the dev characters whole (and a shift that erases
# everything leaves the image as it was), so a third level would measure less, not more.
SEVERITIES: dict[str, tuple[float, ...]] = {
    "rotate": (15, 30, 45),
    "scale": (0.85, 0.7, 0.55),
    "shear": (0.2, 0.4, 0.6),
    "translate": (5, 10, 20),
    "thicken": (1, 2, 3),
    "thin": (1, 2),
    "flip": (0.01, 0.02, 0.05),
    "occlude": (15, 25, 35),
    "clutter": (10, 20, 40),
}
UNITS: dict[str, str] = {
    "rotate": "rotation (degrees)",
    "scale": "scale factor",
    "shear": "shear (column px per row px)",
    "translate": "translation (px)",
    "thicken": "dilation radius (px)",
    "thin": "erosion radius (px)",
    "flip": "pixel-flip probability",
    "occlude": "blanked square side (px)",
    "clutter": "clutter fragment radius (px)",
}


def parse_shift(spec: str) -> tuple[str, float]:
    """``"rotate=30"`` -> ``("rotate", 30.0)``, with a clear error for anything else."""
    name, sep, value = spec.partition("=")
    if name not in SHIFTS or not sep:
        raise ValueError(f"--shift {spec!r}: expected NAME=STRENGTH with NAME in {sorted(SHIFTS)}")
    try:
        strength = float(value)
    except ValueError:
        raise ValueError(f"--shift {spec!r}: strength {value!r} is not a number") from None
    if name in _INTEGER and (strength != int(strength) or strength < 0):
        raise ValueError(f"--shift {spec!r}: {name} takes a whole number of pixels (>= 0)")
    if name == "scale" and strength <= 0:
        raise ValueError(f"--shift {spec!r}: scale factor must be positive")
    if name == "flip" and not 0 <= strength <= 1:
        raise ValueError(f"--shift {spec!r}: flip probability must be in [0, 1]")
    return name, strength


@partial(jax.jit, static_argnames=("name", "strength", "exclude_self"))
def _apply(images, keys, donors, name: str, strength: float, exclude_self: bool) -> jax.Array:
    def one(index, image, key):
        if name not in _NEEDS_DONOR:
            return SHIFTS[name](image, key, strength)
        pick, key = jax.random.split(key)
        m = donors.shape[0]
        if exclude_self and m > 1:  # another image of the same batch
            j = (index + 1 + jax.random.randint(pick, (), 0, m - 1)) % m
        else:
            j = jax.random.randint(pick, (), 0, m)
        return SHIFTS[name](image, key, strength, donors[j])

    return jax.vmap(one)(jnp.arange(images.shape[0]), images, keys)


def shift_images(
    spec: str, images: np.ndarray, keys: jax.Array, *, donors: np.ndarray | None = None
) -> np.ndarray:
    """Apply shift ``spec`` to ``bool (n, 105, 105)`` images, image ``i`` with ``keys[i]`` (a key
    array of shape ``(n,)``). ``clutter`` takes its fragments from ``donors bool (m, 105, 105)``
    (default: the other images of ``images``)."""
    name, strength = parse_shift(spec)
    images = jnp.asarray(images, dtype=bool)
    pool = images if donors is None else jnp.asarray(donors, dtype=bool)
    return np.asarray(_apply(images, keys, pool, name, strength, donors is None))


def apply_shift(
    spec: str, images: np.ndarray, key: jax.Array, *, donors: np.ndarray | None = None
) -> np.ndarray:
    """Apply shift ``spec`` to ``bool (n, 105, 105)`` images, one subkey of ``key`` per image
    (see :func:`shift_images`)."""
    return shift_images(spec, images, jax.random.split(key, len(images)), donors=donors)
