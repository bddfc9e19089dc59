"""conceptlearn: few-shot concept learning with a BPL-style generative model, and its comparators.

The public API (``learn`` -> ``Concepts``, ``load``, ``score``, ``classify``, ``predict_proba``,
``parse``, ``sample``, ``load_library``, ``save_library``, ``make_contender``) lives in ``conceptlearn.api`` and is imported on first use,
so ``import conceptlearn`` stays light.
"""

__version__ = "0.1.0"

_API = {"learn", "load", "score", "classify", "predict_proba", "parse", "sample"}
_API |= {"load_library", "save_library", "Learned", "Concepts"}
__all__ = sorted(_API | {"make_contender"})


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("conceptlearn.api"), name)
    if name == "make_contender":
        from conceptlearn.contenders import make_contender

        return make_contender
    raise AttributeError(f"module 'conceptlearn' has no attribute {name!r}")
