"""Modified Hausdorff Distance: against a scipy reference, and a hand-made episode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from conceptlearn.baselines.hausdorff import (
    EMPTY_DISTANCE,
    PAD_MULTIPLE,
    make_contender,
    pairwise_mhd,
)


def _reference_mhd(a: np.ndarray, b: np.ndarray) -> float:
    """The Omniglot demo's computation, in numpy."""

    def points(image):
        p = np.argwhere(image).astype(float)
        return p - p.mean(axis=0)

    d = cdist(points(a), points(b))
    return max(d.min(axis=1).mean(), d.min(axis=0).mean())


def _bar(r0, r1, c0, c1):
    image = np.zeros((105, 105), dtype=bool)
    image[r0:r1, c0:c1] = True
    return image


def test_matches_reference_on_random_images():
    rng = np.random.default_rng(0)
    images = rng.random((6, 105, 105)) < 0.04
    got = np.asarray(pairwise_mhd(jnp.asarray(images[:3]), jnp.asarray(images[3:]), PAD_MULTIPLE))
    want = np.array([[_reference_mhd(a, b) for b in images[3:]] for a in images[:3]])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_known_values():
    vertical, horizontal = _bar(20, 80, 50, 51), _bar(50, 51, 20, 80)
    # Centred, identical shapes are at distance 0, wherever they sit in the image.
    assert float(
        pairwise_mhd(
            jnp.asarray(vertical[None]), jnp.asarray(np.roll(vertical, 9, axis=1)[None]), 512
        )[0, 0]
    ) == pytest.approx(0.0, abs=1e-3)
    got = float(pairwise_mhd(jnp.asarray(vertical[None]), jnp.asarray(horizontal[None]), 512)[0, 0])
    assert got == pytest.approx(_reference_mhd(vertical, horizontal), rel=1e-5)


def test_empty_image_gets_the_sentinel():
    empty, bar = np.zeros((105, 105), dtype=bool), _bar(10, 20, 10, 20)
    d = np.asarray(pairwise_mhd(jnp.asarray(np.stack([empty, bar])), jnp.asarray(bar[None]), 512))
    assert d[0, 0] == EMPTY_DISTANCE and d[1, 0] == pytest.approx(0.0, abs=1e-3)


def test_hand_made_episode():
    """Three shapes, two shots each (shifted and thickened); queries are new variants."""
    shapes = [
        lambda s: _bar(20 + s, 80 + s, 50, 52),  # vertical bar
        lambda s: _bar(50, 52, 20 + s, 80 + s),  # horizontal bar
        lambda s: _bar(30 + s, 70 + s, 30, 70) & ~_bar(34 + s, 66 + s, 34, 66),  # square outline
    ]
    support = np.stack([np.stack([f(0), f(3)]) for f in shapes])
    queries = np.stack([shapes[i](7) for i in (2, 0, 1)])
    contender = make_contender(seed=0)
    state = contender.fit(support, key=jax.random.key(0))
    scores = contender.scores(state, queries, key=jax.random.key(1))
    assert scores.shape == (3, 3)
    np.testing.assert_array_equal(scores.argmax(axis=1), [2, 0, 1])
