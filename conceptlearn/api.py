"""The small public API, re-exported by ``conceptlearn``.

    import conceptlearn as cl
    concepts = cl.learn(support)                # bool (n_concepts, k, H, W) or (k, H, W): one concept
    concepts.score(queries)                     # f32 (n_query, n_concepts), higher = more likely
    concepts.predict_proba(queries)             # f32 (n_query, n_concepts), rows sum to 1
    concepts.classify(queries)                  # int (n_query,)
    concepts.sample(9, key=jax.random.key(0))   # f32 (n_concepts, 9, 105, 105): new exemplars
    concepts.save("c.npz"); cl.load("c.npz")    # pickle-free
    cl.parse(image)                             # the K best programs (strokes) of one image
    cl.sample(cl.load_library("lib.npz"), n_concepts=4, n_exemplars=6)

Any contender of the comparison can learn (``model="mhd"``, ``"vit"`` with ``checkpoint=...``,
``"bpl"``, ...); the default is the generative model, ``bpl``. ``cl.score(concepts, images)``
and ``cl.classify(concepts, images)`` are the methods as functions. The concept object is
:class:`conceptlearn.concept.Concepts`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from conceptlearn.concept import Concepts, learn, load

Learned = Concepts  # the name of the learned-concepts type before it grew methods

__all__ = ["Concepts", "Learned", "learn", "load", "score", "classify", "predict_proba"]


def score(learned: Concepts, images: Any) -> np.ndarray:
    """``learned.score(images)``: ``f32 (n, n_concepts)`` for ``images (n, H, W)`` or one
    ``(H, W)``."""
    return learned.score(images)


def classify(learned: Concepts, images: Any) -> np.ndarray:
    """``learned.classify(images)``: the most likely concept ``int (n,)`` of each image."""
    return learned.classify(images)


def predict_proba(learned: Concepts, images: Any) -> np.ndarray:
    """``learned.predict_proba(images)``: ``f32 (n, n_concepts)``, rows sum to 1."""
    return learned.predict_proba(images)


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
