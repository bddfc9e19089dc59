"""The ViT's image pipeline: a 105 px character -> ink levels ``float32 (4, 35, 35)`` once, then
clean (:func:`downsample`) or randomly augmented (:func:`augment`: affine, translation, stroke
thickness) views ``float32 (size, size)``, each one jittable function of one image."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from conceptlearn.datasets.omniglot import IMAGE_SIZE


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine (output -> input map), stroke thickness and translation; ``strength``
    scales every range (0 = no augmentation)."""

    strength: float = 1.0
    rotate_deg: float = 10.0  # max |rotation|
    scale: float = 0.15  # log-uniform zoom in [exp(-s), exp(s)]
    aspect: float = 0.1  # log-uniform x/y aspect change
    shear: float = 0.15  # max |shear|
    translate_px: float = 6.0  # max |shift| in 105-px units
    thickness_p: tuple[float, float, float, float] = (
        0.15,
        0.45,
        0.3,
        0.1,
    )  # P(thin, same, +1, +2 px)


LEVEL_SIZE = 35  # the 105 px image is area-downsampled 3x to this size once (exact)


def _max_pool(ink: jax.Array, size: int) -> jax.Array:
    return jax.lax.reduce_window(ink, -jnp.inf, jax.lax.max, (size, size), (1, 1), "SAME")


def ink_levels(image: jax.Array) -> jax.Array:
    """``bool (105, 105)`` -> ``float32 (4, 35, 35)``: ink coverage of the thinned, same, +1 px and
    +2 px stroke variants, each the exact 3x3 area mean. Computed once per image (pretraining
    precomputes the whole background), so augmentation samples a 35 px map, not a 105 px one."""
    ink = image.astype(jnp.float32)
    thin = -_max_pool(-ink, 3)
    thin = jnp.where(thin.sum() > 0.25 * ink.sum(), thin, ink)  # never erase a character
    variants = jnp.stack([thin, ink, _max_pool(ink, 3), _max_pool(ink, 5)])
    return variants.reshape(4, LEVEL_SIZE, 3, LEVEL_SIZE, 3).mean(axis=(2, 4))


def render(
    levels: jax.Array, matrix: jax.Array, shift: jax.Array, thickness: jax.Array, size: int
) -> jax.Array:
    """Resample one image to ``size`` px through an affine map, anti-aliased.

    levels ``float (4, 35, 35)`` from :func:`ink_levels`; matrix ``(2, 2)`` maps output offsets
    from the centre to input offsets (identity = plain downsampling); shift ``(2,)`` in 105-px
    units (row, col); thickness int in 0..3 (thin, same, +1, +2). Bilinear, 2x2 supersampled.
    Returns ``float32 (size, size)`` ink coverage in [0, 1].
    """
    ink = levels[thickness]
    sub = 2  # supersamples per output pixel and axis
    n = size * sub
    centre = (LEVEL_SIZE - 1) / 2
    grid = (jnp.arange(n, dtype=jnp.float32) + 0.5) * (LEVEL_SIZE / n) - 0.5 - centre
    rr, cc = jnp.meshgrid(grid, grid, indexing="ij")
    offsets = jnp.stack([rr.ravel(), cc.ravel()])  # (2, n*n)
    coords = matrix @ offsets + (shift * (LEVEL_SIZE / IMAGE_SIZE) + centre)[:, None]
    samples = jax.scipy.ndimage.map_coordinates(
        ink, [coords[0], coords[1]], order=1, mode="constant", cval=0.0
    )
    return samples.reshape(size, sub, size, sub).mean(axis=(1, 3))


def random_transform(key: jax.Array, aug: AugmentConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw one augmentation: ``(matrix (2, 2), shift (2,), thickness int)``."""
    k_rot, k_scale, k_aspect, k_shear, k_shift, k_thick = jax.random.split(key, 6)
    s = aug.strength
    angle = jnp.deg2rad(aug.rotate_deg * s) * jax.random.uniform(k_rot, minval=-1.0, maxval=1.0)
    zoom = jnp.exp(aug.scale * s * jax.random.uniform(k_scale, minval=-1.0, maxval=1.0))
    aspect = jnp.exp(aug.aspect * s * jax.random.uniform(k_aspect, minval=-1.0, maxval=1.0))
    shear = aug.shear * s * jax.random.uniform(k_shear, minval=-1.0, maxval=1.0)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
    shear_m = jnp.stack(
        [
            jnp.stack([jnp.ones_like(shear), shear]),
            jnp.stack([jnp.zeros_like(shear), jnp.ones_like(shear)]),
        ]
    )
    scale_m = jnp.diag(jnp.stack([zoom * aspect, zoom / aspect]))
    shift = aug.translate_px * s * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
    p = jnp.asarray(aug.thickness_p, jnp.float32)
    p = jnp.where(s > 0, p, jnp.asarray([0.0, 1.0, 0.0, 0.0], jnp.float32))
    thickness = jax.random.choice(k_thick, 4, p=p / p.sum())
    return rotation @ shear_m @ scale_m, shift, thickness


def augment(
    key: jax.Array, levels: jax.Array, aug: AugmentConfig, size: int, rot90: jax.Array | int = 0
) -> jax.Array:
    """One random view of an image's ``levels`` ``float (4, 35, 35)`` (:func:`ink_levels`) ->
    ``float32 (size, size)``, after an optional exact rotation by ``rot90`` quarter turns."""
    matrix, shift, thickness = random_transform(key, aug)
    quarter = jnp.asarray(rot90, jnp.float32) * (jnp.pi / 2)
    c, s = jnp.round(jnp.cos(quarter)), jnp.round(jnp.sin(quarter))
    turn = jnp.stack([jnp.stack([c, s]), jnp.stack([-s, c])])  # as np.rot90(image, rot90)
    return render(levels, turn @ matrix, shift, thickness, size)


def downsample(levels: jax.Array, size: int) -> jax.Array:
    """The clean view: ``float (4, 35, 35)`` levels -> ``float32 (size, size)``."""
    return render(levels, jnp.eye(2), jnp.zeros(2), jnp.asarray(1), size)
