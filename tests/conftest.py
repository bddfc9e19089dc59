"""Shared fixtures. Omniglot comes from $CONCEPTLEARN_DATA, else ../shared/omniglot beside the repo."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# Parse and compilation caches of this test session (and its subprocesses) stay out of the
# user's cache folder.
os.environ.setdefault("CONCEPTLEARN_CACHE", tempfile.mkdtemp(prefix="conceptlearn-tests-"))

REPO = Path(__file__).resolve().parents[1]


def _omniglot_root() -> Path | None:
    for candidate in (os.environ.get("CONCEPTLEARN_DATA"), REPO.parent / "shared" / "omniglot"):
        if candidate and (Path(candidate) / "images_background_small1.zip").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """The read-only folder holding the official Omniglot zips."""
    root = _omniglot_root()
    if root is None:
        pytest.skip("Omniglot zips not found (set CONCEPTLEARN_DATA)")
    return root


@pytest.fixture(scope="session")
def small1_images(omniglot_root):
    from conceptlearn.datasets.omniglot import OmniglotImages

    return OmniglotImages("small1", omniglot_root)


@pytest.fixture(scope="session")
def small1_strokes(omniglot_root):
    from conceptlearn.datasets.omniglot import OmniglotStrokes

    return OmniglotStrokes("small1", omniglot_root)
