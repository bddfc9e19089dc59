"""The learned library: every prior of the generative model as one frozen pytree.

``Library`` is a NamedTuple of arrays (a jax pytree), saved as one ``.npz`` (one entry per
field) and loaded with ``allow_pickle=False``; ``check_library`` runs on every load.
``K`` below is the number of primitives, ``S = MAX_STROKES``, ``J = MAX_SUBSTROKES``,
``G`` the number of start-position mixture components.
"""

from __future__ import annotations

import os
import zipfile
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from conceptlearn.model.image import BLUR_SIGMA_RANGE as BLUR_RANGE
from conceptlearn.model.image import EPSILON_RANGE
from conceptlearn.model.splines import N_CONTROL

MAX_STROKES = 10
MAX_SUBSTROKES = 6
POINTS_PER_SUBSTROKE = 20
N_POINTS = MAX_SUBSTROKES * POINTS_PER_SUBSTROKE  # trajectory points per stroke

# relation kinds
INDEPENDENT, START_OF, END_OF, ALONG = 0, 1, 2, 3
RELATION_NAMES = ("independent", "start_of", "end_of", "along")


class Library(NamedTuple):
    """Learned priors. All fields are float32 arrays.

    Type level:
    - ``shape_mean, shape_sd``: ``(K, 5, 2)`` diagonal Gaussian of each primitive's normalised shape;
    - ``log_scale_mean, log_scale_sd``: ``(K,)`` log-normal scale (pixels) of each primitive;
    - ``start_probs``: ``(K,)`` first primitive of a stroke; ``trans_probs``: ``(K, K)`` next one;
    - ``n_strokes_probs``: ``(S,)`` P(n_strokes = 1..S);
    - ``n_sub_probs``: ``(S, J)`` P(n_sub = 1..J | n_strokes = row + 1);
    - ``relation_probs``: ``(4,)`` independent / start-of / end-of / along (strokes after the first);
    - ``position_weights (G,)``, ``position_centers (G, 2)``, ``position_sd ()``: Gaussian mixture
      density over start positions of independent strokes after the first (pixels);
    - ``first_position_weights (G,)``: the mixture weights of the first stroke's start (same
      centres and sd; BPL learns the first stroke's start apart from the others'). Libraries
      written before this field load with ``position_weights`` in its place.

    Token level:
    - ``shape_noise_sd ()``: motor noise on normalised shapes;
    - ``log_scale_noise_sd ()``: motor noise on log scales;
    - ``position_noise_sd ()``: jitter of stroke start positions around their relation (pixels);
    - ``affine_mean, affine_sd``: ``(4,)`` ``(scale_col, scale_row, shift_col, shift_row)``;
    - ``blur_range, epsilon_range``: ``(2,)`` uniform ranges of the ink parameters.
    """

    shape_mean: jnp.ndarray
    shape_sd: jnp.ndarray
    log_scale_mean: jnp.ndarray
    log_scale_sd: jnp.ndarray
    start_probs: jnp.ndarray
    trans_probs: jnp.ndarray
    n_strokes_probs: jnp.ndarray
    n_sub_probs: jnp.ndarray
    relation_probs: jnp.ndarray
    position_weights: jnp.ndarray
    position_centers: jnp.ndarray
    position_sd: jnp.ndarray
    shape_noise_sd: jnp.ndarray
    log_scale_noise_sd: jnp.ndarray
    position_noise_sd: jnp.ndarray
    affine_mean: jnp.ndarray
    affine_sd: jnp.ndarray
    blur_range: jnp.ndarray
    epsilon_range: jnp.ndarray
    first_position_weights: jnp.ndarray

    @property
    def n_primitives(self) -> int:
        return int(self.shape_mean.shape[0])


class LibraryFormatError(ValueError):
    """A library file is unreadable or inconsistent."""


def _expected_shapes(n_primitives: int, n_centers: int) -> dict[str, tuple[int, ...]]:
    K, G, S, J = n_primitives, n_centers, MAX_STROKES, MAX_SUBSTROKES
    return {
        "shape_mean": (K, N_CONTROL, 2),
        "shape_sd": (K, N_CONTROL, 2),
        "log_scale_mean": (K,),
        "log_scale_sd": (K,),
        "start_probs": (K,),
        "trans_probs": (K, K),
        "n_strokes_probs": (S,),
        "n_sub_probs": (S, J),
        "relation_probs": (4,),
        "position_weights": (G,),
        "position_centers": (G, 2),
        "position_sd": (),
        "shape_noise_sd": (),
        "log_scale_noise_sd": (),
        "position_noise_sd": (),
        "affine_mean": (4,),
        "affine_sd": (4,),
        "blur_range": (2,),
        "epsilon_range": (2,),
        "first_position_weights": (G,),
    }


_PROBABILITIES = ("start_probs", "trans_probs", "n_strokes_probs", "n_sub_probs")
_PROBABILITIES += ("relation_probs", "position_weights", "first_position_weights")
# fields added after libraries were first written -> the field that stands in for them
_FALLBACKS = {"first_position_weights": "position_weights"}
_POSITIVE = ("shape_sd", "log_scale_sd", "position_sd", "shape_noise_sd")
_POSITIVE += ("log_scale_noise_sd", "position_noise_sd", "affine_sd")


def check_library(library: Library, where: str = "library") -> Library:
    """Raise ``LibraryFormatError`` (naming ``where``) unless shapes agree, every probability
    vector is non-negative and sums to one, every sd is positive and finite, and the ink ranges
    are ordered. Returns the library unchanged."""
    fields = {name: np.asarray(value) for name, value in library._asdict().items()}
    if fields["shape_mean"].ndim != 3 or fields["position_centers"].ndim != 2:
        raise LibraryFormatError(f"{where}: shape_mean/position_centers have the wrong rank")
    expected = _expected_shapes(len(fields["shape_mean"]), len(fields["position_centers"]))
    for name, shape in expected.items():
        if fields[name].shape != shape:
            raise LibraryFormatError(
                f"{where}: {name} has shape {fields[name].shape}, expected {shape}"
            )
        if not np.all(np.isfinite(fields[name])):
            raise LibraryFormatError(f"{where}: {name} has non-finite values")
    for name in _PROBABILITIES:
        p = fields[name]
        if np.any(p < 0) or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-4):
            raise LibraryFormatError(
                f"{where}: {name} is not a probability vector (sums "
                f"{np.round(p.sum(axis=-1), 5).tolist()})"
            )
    for name in _POSITIVE:
        if np.any(fields[name] <= 0):
            raise LibraryFormatError(f"{where}: {name} must be positive")
    for name in ("blur_range", "epsilon_range"):
        lo, hi = fields[name]
        if not 0 < lo < hi:
            raise LibraryFormatError(f"{where}: {name} must satisfy 0 < low < high")
    return library


def make_library(**fields) -> Library:
    """Build a checked ``Library`` from numpy/jax arrays (cast to float32)."""
    missing = set(Library._fields) - set(fields)
    if missing:
        raise ValueError(f"missing library fields: {sorted(missing)}")
    return check_library(
        Library(**{k: jnp.asarray(fields[k], jnp.float32) for k in Library._fields})
    )


def save_library(library: Library, path: str | os.PathLike) -> None:
    """Write ``library`` to ``path`` (.npz, one array per field)."""
    check_library(library, str(path))
    np.savez(path, **{k: np.asarray(v) for k, v in library._asdict().items()})


def load_library(path: str | os.PathLike) -> Library:
    """Read and check a library written by ``save_library``; errors name ``path``."""
    path = str(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"library file {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise LibraryFormatError(f"{path}: not a readable library .npz ({err})") from err
    for name, stand_in in _FALLBACKS.items():
        if name not in arrays and stand_in in arrays:
            arrays[name] = arrays[stand_in]
    missing = set(Library._fields) - set(arrays)
    if missing:
        raise LibraryFormatError(f"{path}: missing fields {sorted(missing)}")
    for name in Library._fields:
        if arrays[name].dtype.kind not in "fiu":
            raise LibraryFormatError(f"{path}: {name} is not numeric ({arrays[name].dtype})")
    library = Library(**{k: jnp.asarray(arrays[k], jnp.float32) for k in Library._fields})
    return check_library(library, path)


def toy_library(n_primitives: int = 4, n_centers: int = 4, seed: int = 0) -> Library:
    """A small random but consistent library (tests and examples; not learned from data)."""
    rng = np.random.default_rng(seed)
    K, G, S, J = n_primitives, n_centers, MAX_STROKES, MAX_SUBSTROKES

    def simplex(*shape):
        p = rng.uniform(0.2, 1.0, shape)
        return p / p.sum(axis=-1, keepdims=True)

    return make_library(
        shape_mean=rng.normal(0.0, 0.6, (K, N_CONTROL, 2)),
        shape_sd=rng.uniform(0.05, 0.2, (K, N_CONTROL, 2)),
        log_scale_mean=rng.uniform(1.0, 2.5, K),
        log_scale_sd=rng.uniform(0.2, 0.5, K),
        start_probs=simplex(K),
        trans_probs=simplex(K, K),
        n_strokes_probs=simplex(S),
        n_sub_probs=simplex(S, J),
        relation_probs=simplex(4),
        position_weights=simplex(G),
        position_centers=rng.uniform(20.0, 85.0, (G, 2)),
        position_sd=np.asarray(8.0),
        shape_noise_sd=np.asarray(0.1),
        log_scale_noise_sd=np.asarray(0.1),
        position_noise_sd=np.asarray(1.5),
        affine_mean=np.array([1.0, 1.0, 0.0, 0.0]),
        affine_sd=np.array([0.1, 0.1, 2.0, 2.0]),
        blur_range=np.array(BLUR_RANGE),
        epsilon_range=np.array(EPSILON_RANGE),
        first_position_weights=simplex(G),  # drawn last: the fields above keep their values
    )
