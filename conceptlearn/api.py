"""The small public API, re-exported by ``conceptlearn``.

    import conceptlearn as cl
    learned = cl.learn(support)                 # bool (n_concepts, k, H, W) or (k, H, W): one concept
    cl.classify(learned, queries)               # int (n_query,)
    cl.score(learned, queries)                  # f32 (n_query, n_concepts), higher = more likely
    cl.parse(image)                             # the K best programs (strokes) of one image
    cl.sample(cl.load_library("lib.npz"), n_concepts=4, n_exemplars=6)

Any contender of the comparison can learn (``model="mhd"``, ``"vit"`` with ``checkpoint=...``,
``"bpl"``, ...); the default is the generative model, ``bpl``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from conceptlearn.cache import enable_compilation_cache
from conceptlearn.contenders import Contender, make_contender


class Learned(NamedTuple):
    """Concepts learned from support images: the contender and its fitted state."""

    contender: Contender
    state: Any
    n_concepts: int


def learn(images: np.ndarray, *, model: str = "bpl", seed: int = 0, **options: Any) -> Learned:
    """Learn concepts from ``images``: ``bool (n_concepts, k, H, W)``, or ``(k, H, W)`` for one
    concept from k examples (True = ink). ``options`` go to the contender's factory
    (``quick=True``, ``library=...``, ``checkpoint=...``, ``overrides={...}``)."""
    enable_compilation_cache()
    support = np.asarray(images, dtype=bool)
    if support.ndim == 3:
        support = support[None]
    if support.ndim != 4:
        raise ValueError(f"images must be (n_concepts, k, H, W) or (k, H, W), got {support.shape}")
    contender = make_contender(model, seed=seed, **options)
    state = contender.fit(support, key=jax.random.fold_in(jax.random.key(seed), 0))
    return Learned(contender, state, support.shape[0])


def score(learned: Learned, images: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Scores ``f32 (n, n_concepts)`` of ``images bool (n, H, W)`` (or one ``(H, W)`` image)."""
    queries = np.asarray(images, dtype=bool)
    if queries.ndim == 2:
        queries = queries[None]
    key = jax.random.fold_in(jax.random.key(seed), 1)
    return np.asarray(learned.contender.scores(learned.state, queries, key=key))


def classify(learned: Learned, images: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """The most likely concept ``int (n,)`` for each of ``images bool (n, H, W)``."""
    return score(learned, images, seed=seed).argmax(axis=1)


def parse(image: np.ndarray, *, quick: bool = False, seed: int = 0, library=None):
    """The K best parses of one image (``conceptlearn.inference.fit.Parse``: stroke points
    ``(K, S, P, 2)`` in ``(col, row)`` pixels, masks, normalised log weights), weighted by
    ``log P(type)`` under ``library``: a loaded library or a path to one; None: the shipped small1
    library; ``"standin"``: the stand-in prior."""
    from conceptlearn.inference.classify import FULL, QUICK, as_image
    from conceptlearn.inference.fit import parse_image
    from conceptlearn.shipped import resolve_library

    cfg = QUICK if quick else FULL
    return parse_image(as_image(image), cfg, seed=seed, library=resolve_library(library))


def sample(library, *, n_concepts: int, n_exemplars: int, seed: int = 0) -> np.ndarray:
    """New concepts from the prior and exemplars of each: ink probabilities
    ``f32 (n_concepts, 1 + n_exemplars, 105, 105)`` (first column: the noise-free token)."""
    from conceptlearn.model.sample import sample_images

    return np.asarray(sample_images(library, jax.random.key(seed), n_concepts, n_exemplars))


def load_library(path):
    """Load a learned library ``.npz`` (checked for consistency; no pickle)."""
    from conceptlearn.model.library import load_library as _load

    return _load(path)


def save_library(library, path) -> None:
    from conceptlearn.model.library import save_library as _save

    _save(library, path)
