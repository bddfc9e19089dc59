"""The one interface every classifier in the comparison answers (DESIGN.md section 3).

A contender is built by a factory from keyword options (``seed`` always; ``checkpoint``,
``library``, ``quick`` and free-form ``overrides`` where it takes them) and answers:

- ``fit(support, *, key) -> state``: ``support`` is ``bool (n_way, k_shot, 105, 105)``, True = ink;
- ``scores(state, queries, *, key) -> float (n_query, n_way)``: higher = more likely;

plus a ``config`` dict (JSON-serialisable, every knob that changes its numbers) and a ``name``.
``key`` is a ``jax.random`` key that the harness derives from the seed and the run, so a
resumed evaluation reproduces an uninterrupted one.

Adding a contender means adding one line to ``REGISTRY``; the harness never changes.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np


class Contender(Protocol):
    name: str
    config: dict[str, Any]

    def fit(self, support: np.ndarray, *, key: Any) -> Any: ...

    def scores(self, state: Any, queries: np.ndarray, *, key: Any) -> np.ndarray: ...


# name -> "module:factory"; factories take keyword options and return a Contender.
REGISTRY: dict[str, str] = {
    "mhd": "conceptlearn.baselines.hausdorff:make_contender",
    "vit": "conceptlearn.baselines.vit.finetune:make_finetune_contender",
    "vit-proto": "conceptlearn.baselines.vit.finetune:make_proto_contender",
    "vit-scratch": "conceptlearn.baselines.vit.finetune:make_scratch_contender",
    "bpl": "conceptlearn.inference.classify:make_contender",
}


def make_contender(name: str, **options: Any) -> Contender:
    """Build contender ``name``; options left as None are not passed on."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(REGISTRY)}")
    module, factory = REGISTRY[name].split(":")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return getattr(importlib.import_module(module), factory)(**options)
    except TypeError as err:
        raise ValueError(
            f"model {name!r} does not accept these options {sorted(options)}: {err}"
        ) from err
