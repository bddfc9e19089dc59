"""Learned concepts as one object: score, predict_proba, classify, parses, sample, save / load.

    import conceptlearn as cl
    concepts = cl.learn(support)            # bool (n_concepts, k, H, W), (k, H, W) or (H, W)
    concepts.score(queries)                 # f32 (n, n_concepts) log scores, higher = more likely
    concepts.predict_proba(queries)         # f32 (n, n_concepts), rows sum to 1
    concepts.classify(queries)              # int (n,)
    concepts.parses()                       # the programs found (generative model)
    concepts.sample(9, key=jax.random.key(0))  # f32 (n_concepts, 9, 105, 105) new exemplars
    concepts.save("concepts.npz"); cl.load("concepts.npz")

Any contender of the comparison learns through the same object (``model="mhd"``, ``"vit"``,
``"bpl"``, ...); ``parses`` and ``sample`` need the generative model (``bpl``) and raise
``NotImplementedError`` for the others.

Images may be bool (True = ink), integers (0/1, or 0..255 with 255 = ink) or floats in
``[0, 1]`` (1 = ink), of any size (resized to 105 x 105); anything else is a ``ValueError`` of
one line naming the argument. Note that a PNG read as it is stores white paper as True:
invert it (``~image``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptlearn.contenders import Contender, make_contender

IMAGE_SIZE = 105
MIN_SIZE = 16  # px: smaller images are not drawings
FORMAT = "conceptlearn.concepts/1"
TEMPERATURES_FILE = os.path.join(os.path.dirname(__file__), "data", "temperatures.json")


# ------------------------------------------------------------------------------- input checks


def _ink(image: np.ndarray) -> np.ndarray:
    """One grey image ``f32 (H, W)`` in [0, 1] -> ``bool (105, 105)``."""
    if image.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return image >= 0.5
    from skimage.transform import resize

    grey = resize(image, (IMAGE_SIZE, IMAGE_SIZE), order=1, anti_aliasing=True)
    return grey > 0.25  # thin lines keep their ink when shrunk (the bpl reader's rule)


def as_images(images: Any, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """Check and convert ``images`` to ``bool (..., 105, 105)`` (True = ink); the input has one
    of the ranks ``ndims`` (its last two axes are the image). Raises a one-line ``ValueError``
    naming ``name``."""
    try:
        array = np.asarray(images)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ValueError(f"{name}: not an array of images ({str(err).splitlines()[0]})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected bool or numeric pixels, got dtype {array.dtype}")
    if array.ndim not in ndims:
        shapes = " or ".join(_SHAPE_NAMES[n] for n in ndims)
        raise ValueError(f"{name}: expected shape {shapes}, got {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: empty array of shape {array.shape}")
    h, w = array.shape[-2:]
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"{name}: images of {h} x {w} px are too small (at least {MIN_SIZE})")
    if array.dtype.kind == "b":
        grey = array
    elif array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(f"{name}: integer pixels must lie in 0..255, got {low}..{high}")
        grey = array.astype(np.float32) / (255.0 if high > 1 else 1.0)
    else:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: pixels must be finite (found NaN or inf)")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name}: float pixels must lie in [0, 1] (1 = ink), got {low:g}..{high:g}"
            )
        grey = array.astype(np.float32)
    lead = array.shape[:-2]
    flat = grey.reshape(-1, h, w)
    if array.dtype.kind == "b" and (h, w) == (IMAGE_SIZE, IMAGE_SIZE):
        out = flat.astype(bool)
    else:
        out = np.stack([_ink(np.asarray(im, np.float32)) for im in flat])
    blank = np.flatnonzero(~out.any(axis=(1, 2)))
    if blank.size:
        where = tuple(int(i) for i in np.unravel_index(blank[0], lead)) if lead else ()
        raise ValueError(f"{name}{list(where) if where else ''}: image has no ink (True = ink)")
    return out.reshape(*lead, IMAGE_SIZE, IMAGE_SIZE)


_SHAPE_NAMES = {2: "(H, W)", 3: "(n, H, W)", 4: "(n_concepts, k, H, W)"}


def support_images(images: Any) -> np.ndarray:
    """``images`` for :func:`learn`: ``(n_concepts, k, H, W)``; ``(k, H, W)`` is one concept
    from k examples, ``(H, W)`` one concept from one -> ``bool (n_concepts, k, 105, 105)``."""
    support = as_images(images, "images", (2, 3, 4))
    return support.reshape((1,) * (4 - support.ndim) + support.shape)


def query_images(images: Any) -> np.ndarray:
    """Queries ``(n, H, W)`` or one ``(H, W)`` -> ``bool (n, 105, 105)``."""
    queries = as_images(images, "images", (2, 3))
    return queries[None] if queries.ndim == 2 else queries


# ------------------------------------------------------------------------------ the object


class Program(NamedTuple):
    """One parse of a support image: ``strokes``, a list in drawing order of ``f32 (n_i, 2)``
    trajectories in ``(col, row)`` pixels; ``weight``, its posterior weight among the image's
    parses; ``log_post``, the unnormalised ``log P(image, parse)``."""

    strokes: list
    weight: float
    log_post: float


def temperatures() -> dict[str, dict]:
    """The fitted softmax temperatures per contender (``scripts/fit_temperature.py``)."""
    try:
        with open(TEMPERATURES_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


@dataclasses.dataclass(frozen=True, eq=False)
class Concepts:
    """Concepts learned from ``support bool (n_concepts, k, 105, 105)`` by contender ``model``
    (built from ``options`` and ``seed``); ``state`` is the contender's fitted state."""

    contender: Contender
    state: Any
    support: np.ndarray
    model: str
    options: dict
    seed: int = 0

    @property
    def n_concepts(self) -> int:
        return int(self.support.shape[0])

    def score(self, images: Any) -> np.ndarray:
        """Log scores ``f32 (n, n_concepts)`` of ``images`` ``(n, H, W)`` or one ``(H, W)``;
        higher = more likely. Their scale is the contender's own (bpl: nats)."""
        queries = query_images(images)
        key = jax.random.fold_in(jax.random.key(self.seed), 1)
        return np.asarray(self.contender.scores(self.state, queries, key=key), np.float32)

    def temperature(self) -> float:
        """The softmax temperature of :meth:`predict_proba`: fitted on dev runs for this
        contender (``conceptlearn/data/temperatures.json``), else 1."""
        return float(temperatures().get(self.model, {}).get("temperature", 1.0))

    def predict_proba(self, images: Any, temperature: float | None = None) -> np.ndarray:
        """``f32 (n, n_concepts)``: ``softmax(score / T)`` with the fitted temperature ``T``
        (:meth:`temperature`) unless one is given."""
        t = self.temperature() if temperature is None else float(temperature)
        if not (np.isfinite(t) and t > 0):
            raise ValueError(f"temperature: must be a positive number, got {temperature}")
        logits = self.score(images).astype(np.float64) / t
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def classify(self, images: Any) -> np.ndarray:
        """The most likely concept ``int (n,)`` of each image."""
        return self.score(images).argmax(axis=1)

    def _parses(self, what: str):
        parses = getattr(self.state, "parses", None)
        if parses is None:
            raise NotImplementedError(
                f"{what} needs the generative model's parses; model {self.model!r} learns none "
                "(learn with model='bpl')"
            )
        return parses

    def parses(self) -> list[list[list[Program]]]:
        """The programs found: ``[concept][shot][rank]`` -> :class:`Program`, best first, each
        with its strokes in drawing order (bpl only)."""
        parses = jax.tree.map(np.asarray, self._parses("parses()"))
        out = []
        for c in range(parses.points.shape[0]):
            shots = []
            for s in range(parses.points.shape[1]):
                programs = []
                for r in range(parses.points.shape[2]):
                    if not np.isfinite(parses.log_weight[c, s, r]):
                        continue
                    points, mask = parses.points[c, s, r], parses.mask[c, s, r]
                    strokes = [points[i][mask[i]] for i in range(len(points)) if mask[i].any()]
                    programs.append(
                        Program(
                            strokes,
                            float(np.exp(parses.log_weight[c, s, r])),
                            float(parses.log_post[c, s, r]),
                        )
                    )
                shots.append(programs)
            out.append(shots)
        return out

    def sample(self, n: int, key: jax.Array, blur_sigma: float = 0.5) -> np.ndarray:
        """``n`` new exemplars of every concept: ink probabilities ``f32 (n_concepts, n, 105,
        105)`` (:func:`conceptlearn.model.generate.sample_exemplars`; bpl only)."""
        parses = self._parses("sample()")
        return exemplars_of_parses(parses, self.support, self.contender.cfg, n, key, blur_sigma)

    def save(self, path: str | os.PathLike) -> None:
        """Write the concepts to ``path`` (``.npz``, no pickle): the support images, the
        contender's name, options and seed as JSON, and its fitted state where that is a tree
        of arrays and ``conceptlearn`` named tuples (bpl, mhd); other states (the ViT's) are
        fitted again on :func:`load`, from the same support and seed."""
        try:
            options = json.loads(json.dumps(self.options))
        except TypeError as err:
            raise ValueError(f"options: only JSON values can be saved ({err})") from None
        arrays: dict[str, np.ndarray] = {"support": np.asarray(self.support, bool)}
        try:
            state = _encode(self.state, "state", arrays)
        except _NotArrays:
            arrays = {"support": arrays["support"]}
            state = None
        meta = {
            "format": FORMAT,
            "model": self.model,
            "options": options,
            "seed": self.seed,
            "state": state,
        }
        np.savez(path, meta=np.asarray(json.dumps(meta)), **arrays)


def learn(images: Any, *, model: str = "bpl", seed: int = 0, **options: Any) -> Concepts:
    """Learn concepts from ``images``: ``(n_concepts, k, H, W)``, ``(k, H, W)`` for one concept
    from k examples, or one ``(H, W)`` image (module docstring: dtypes). ``options`` go to the
    contender's factory (``quick=True``, ``library=...``, ``checkpoint=...``,
    ``overrides={...}``)."""
    from conceptlearn.cache import enable_compilation_cache

    if not isinstance(model, str):
        raise ValueError(f"model: expected a contender name, got {model!r}")
    support = support_images(images)
    enable_compilation_cache()
    contender = make_contender(model, seed=seed, **options)
    state = contender.fit(support, key=jax.random.fold_in(jax.random.key(seed), 0))
    return Concepts(contender, state, support, model, dict(options), seed)


def exemplars_of_parses(
    parses, support, cfg, n: int, key: jax.Array, blur_sigma: float = 0.5
):
    """``n`` new exemplars ``f32 (n_concepts, n, 105, 105)`` of concepts whose support images
    ``support bool (n_concepts, k, 105, 105)`` have ``parses`` (leading axes ``(n_concepts,
    k)``), with the token noise of ``cfg`` and each support image's pen
    (:func:`conceptlearn.model.generate.parse_pen`), spread by ``cfg.pen_sigma``."""
    from conceptlearn.model.generate import TokenNoise, sample_exemplars, support_pens

    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    noise = TokenNoise.of(cfg)._replace(width_sigma=float(cfg.pen_sigma))
    pens = support_pens(parses.points, parses.mask, jnp.asarray(support, bool), blur_sigma)
    keys = jax.random.split(key, parses.points.shape[0])
    return np.stack(
        [
            np.asarray(
                sample_exemplars(
                    parses.points[c],
                    parses.mask[c],
                    parses.log_weight[c],
                    noise,
                    key=keys[c],
                    n=int(n),
                    blur_sigma=blur_sigma,
                    pen=pens[c],
                )
            )
            for c in range(parses.points.shape[0])
        ]
    )


def generate(
    images: Any,
    n: int,
    *,
    seed: int = 0,
    quick: bool = False,
    library=None,
    blur_sigma: float = 0.5,
    overrides: dict | None = None,
) -> np.ndarray:
    """New exemplars of the concepts shown by ``images`` (as for :func:`learn`): ink
    probabilities ``f32 (n_concepts, n, 105, 105)``. The same as ``learn(images).sample(n,
    key)`` with ``key = jax.random.key(seed)``, without the work that only scoring needs (the
    support's log evidence). ``overrides``: bpl config fields, e.g. the token noise
    ``{"width_sigma": 0.0}``."""
    from conceptlearn.cache import enable_compilation_cache

    support = support_images(images)
    enable_compilation_cache()
    contender = make_contender("bpl", seed=seed, quick=quick, library=library, overrides=overrides)
    n_concepts, k = support.shape[:2]
    parses = contender.parse(support.reshape(n_concepts * k, IMAGE_SIZE, IMAGE_SIZE))
    parses = jax.tree.map(lambda x: x.reshape(n_concepts, k, *x.shape[1:]), parses)
    return exemplars_of_parses(
        parses, support, contender.cfg, n, jax.random.key(seed), blur_sigma
    )


def generate_in_style(
    images: Any,
    n: int,
    *,
    seed: int = 0,
    quick: bool = False,
    library=None,
    blur_sigma: float = 0.5,
) -> np.ndarray:
    """``n`` new characters in the style of ``images`` ``(n_characters, H, W)`` (characters of
    one alphabet): ink probabilities ``f32 (n, 105, 105)`` of their noise-free tokens.

    Each character's best parse becomes a type, the library's categorical parts are re-fitted
    to those types (:func:`conceptlearn.model.generate.style_library`), and new types are drawn
    from the re-fitted prior, inside the canvas (:func:`conceptlearn.model.sample.sample_images`).
    """
    from conceptlearn.cache import enable_compilation_cache
    from conceptlearn.model.generate import stroke_controls, style_library
    from conceptlearn.model.sample import sample_images
    from conceptlearn.model.type_prior import type_from_splines
    from conceptlearn.shipped import resolve_library

    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    shown = query_images(images)
    enable_compilation_cache()
    contender = make_contender("bpl", seed=seed, quick=quick, library=library)
    lib = resolve_library(library)
    parses = jax.tree.map(np.asarray, contender.parse(shown))
    types = []
    for points, mask in zip(parses.points[:, 0], parses.mask[:, 0], strict=True):
        controls = stroke_controls(points, mask)[: len(lib.n_strokes_probs)]
        if controls:
            types.append(type_from_splines(lib, controls))
    if not types:
        raise ValueError("images: no character could be parsed into strokes")
    styled = style_library(lib, types)
    key = jax.random.fold_in(jax.random.key(seed), 2)
    return np.asarray(sample_images(styled, key, int(n), 1, blur_sigma))[:, 0]


def load(path: str | os.PathLike) -> Concepts:
    """Read concepts written by :meth:`Concepts.save` (``allow_pickle=False``)."""
    path = str(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"path: {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"path: {path} is not a saved concepts .npz ({err})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != FORMAT:
            raise KeyError("format")
        support = arrays["support"].astype(bool)
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"path: {path} is not a saved concepts .npz (no {err})") from None
    model, options, seed = meta["model"], meta["options"], int(meta["seed"])
    contender = make_contender(model, seed=seed, **options)
    if meta["state"] is None:
        state = contender.fit(support, key=jax.random.fold_in(jax.random.key(seed), 0))
    else:
        state = _decode(meta["state"], arrays)
    return Concepts(contender, state, support, model, options, seed)


# ------------------------------------------------------------------ state trees, pickle-free


class _NotArrays(Exception):
    """A state holds something other than arrays and conceptlearn named tuples."""


def _encode(tree: Any, name: str, arrays: dict[str, np.ndarray]) -> dict:
    """Describe ``tree`` as JSON, putting its arrays into ``arrays`` under ``name/...``."""
    if isinstance(tree, np.ndarray | jax.Array):
        arrays[name] = np.asarray(tree)
        return {"array": name, "jax": isinstance(tree, jax.Array)}
    cls = type(tree)
    if (
        isinstance(tree, tuple)
        and hasattr(cls, "_fields")
        and cls.__module__.startswith("conceptlearn.")
    ):
        fields = {f: _encode(getattr(tree, f), f"{name}/{f}", arrays) for f in cls._fields}
        return {"namedtuple": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise _NotArrays(type(tree).__name__)


def _decode(spec: dict, arrays: dict[str, np.ndarray]) -> Any:
    if "array" in spec:
        array = arrays[spec["array"]]
        return jax.numpy.asarray(array) if spec["jax"] else array
    module, qualname = spec["namedtuple"].split(":")
    if not module.startswith("conceptlearn."):
        raise ValueError(f"path: state class {spec['namedtuple']} is not conceptlearn's")
    cls = getattr(importlib.import_module(module), qualname)
    return cls(**{f: _decode(s, arrays) for f, s in spec["fields"].items()})
