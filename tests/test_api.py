"""The public API: learn / score / classify with any contender, sample, library round trip."""

from __future__ import annotations

import numpy as np
import pytest

import conceptlearn as cl


def _shapes():
    def bar(r0, r1, c0, c1):
        image = np.zeros((105, 105), dtype=bool)
        image[r0:r1, c0:c1] = True
        return image

    vertical = [bar(20 + s, 80 + s, 50, 52) for s in (0, 4, 8)]
    horizontal = [bar(50, 52, 20 + s, 80 + s) for s in (0, 4, 8)]
    return np.stack([vertical[:2], horizontal[:2]]), np.stack([horizontal[2], vertical[2]])


def test_learn_classify_score_with_mhd():
    support, queries = _shapes()
    learned = cl.learn(support, model="mhd")
    assert learned.n_concepts == 2
    np.testing.assert_array_equal(cl.classify(learned, queries), [1, 0])
    scores = cl.score(learned, queries)
    assert scores.shape == (2, 2) and np.isfinite(scores).all()
    assert cl.score(learned, queries[0]).shape == (1, 2)
    one = cl.learn(support[0], model="mhd")  # one concept from k images
    assert one.n_concepts == 1 and cl.score(one, queries).shape == (2, 1)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(n_concepts, k, H, W\)"):
        cl.learn(np.zeros((1, 2, 3, 105, 105), dtype=bool), model="mhd")


@pytest.mark.slow  # compiling the batched type sampler takes about a minute on 2 cores
def test_sample_and_library_round_trip(tmp_path):
    from conceptlearn.model.library import toy_library

    library = toy_library()
    cl.save_library(library, tmp_path / "lib.npz")
    loaded = cl.load_library(tmp_path / "lib.npz")
    images = cl.sample(loaded, n_concepts=2, n_exemplars=3, seed=1)
    assert images.shape == (2, 4, 105, 105)
    assert ((images >= 0) & (images <= 1)).all()
    np.testing.assert_array_equal(images, cl.sample(loaded, n_concepts=2, n_exemplars=3, seed=1))


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="nope"):
        cl.nope  # noqa: B018
