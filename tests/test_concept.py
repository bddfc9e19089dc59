"""The concept object: input checks (property-based), scores and probabilities, save / load."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import conceptlearn as cl
from conceptlearn.concept import Concepts, as_images, query_images, support_images


def _bars():
    """Two concepts (vertical, horizontal bar) with 2 shots each, and a query of each."""

    def bar(r0, r1, c0, c1):
        image = np.zeros((105, 105), dtype=bool)
        image[r0:r1, c0:c1] = True
        return image

    vertical = [bar(20 + s, 80 + s, 50, 53) for s in (0, 4, 8)]
    horizontal = [bar(50, 53, 20 + s, 80 + s) for s in (0, 4, 8)]
    return np.stack([vertical[:2], horizontal[:2]]), np.stack([horizontal[2], vertical[2]])


# --------------------------------------------------------------------------- input checks

DTYPES = st.sampled_from([np.bool_, np.uint8, np.int16, np.int64, np.float32, np.float64])


@st.composite
def any_images(draw):
    """Arrays of any rank 0..5, any numeric dtype, small or odd sizes and wild values."""
    rank = draw(st.integers(0, 5))
    side = st.integers(0, 40) if rank < 2 else st.integers(0, 3)
    shape = tuple(draw(side) for _ in range(max(rank - 2, 0)))
    if rank >= 2:
        shape += (draw(st.sampled_from([0, 5, 16, 33, 105])), draw(st.sampled_from([16, 105])))
    else:
        shape = shape[:rank]
    dtype = draw(DTYPES)
    elements = None
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-2.0, 2.0, width=32) | st.sampled_from([np.nan, np.inf, 0.0, 1.0])
    elif np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        elements = st.integers(max(int(info.min), -300), min(int(info.max), 300))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_images(), st.sampled_from([(2, 3), (2, 3, 4)]))
def test_any_input_converts_or_gets_a_one_line_error_naming_the_argument(array, ndims):
    try:
        out = as_images(array, "images", ndims)
    except ValueError as err:
        message = str(err)
        assert message.startswith("images") and "\n" not in message
        return
    assert array.ndim in ndims and out.dtype == np.bool_
    assert out.shape == array.shape[:-2] + (105, 105)
    assert out.reshape(-1, 105, 105).any(axis=(1, 2)).all()  # every image has ink


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.bool_, (2, 105, 105)), st.sampled_from([np.uint8, np.float32]))
def test_full_size_images_keep_their_pixels_in_any_dtype(mask, dtype):
    mask[:, 50, 50] = True  # some ink in each
    scale = 255 if dtype == np.uint8 else 1
    np.testing.assert_array_equal(as_images(mask, "images", (3,)), mask)
    np.testing.assert_array_equal(as_images((mask * scale).astype(dtype), "images", (3,)), mask)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3))
def test_support_and_query_ranks(n, k):
    image = np.zeros((105, 105), bool)
    image[40:60, 50] = True
    assert support_images(image).shape == (1, 1, 105, 105)
    assert support_images(np.stack([image] * k)).shape == (1, k, 105, 105)
    assert support_images(np.zeros((n, k, 105, 105), bool) | image).shape == (n, k, 105, 105)
    assert query_images(image).shape == (1, 105, 105)
    assert query_images(np.stack([image] * n)).shape == (n, 105, 105)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.full((105, 105), np.nan), "finite"),
        (np.full((105, 105), -3, np.int32), "0..255"),
        (np.full((105, 105), 1.5), r"\[0, 1\]"),
        (np.zeros((105, 105), bool), "no ink"),
        (np.zeros((2, 3, 4, 105, 105), bool), "shape"),
        (np.zeros((3, 3), bool), "too small"),
        (np.full((105, 105), "x"), "dtype"),
        ([np.ones((105, 105)), np.ones((50, 50))], "not an array"),
    ],
)
def test_bad_images_are_named(value, message):
    with pytest.raises(ValueError, match=f"^images.*{message}"):
        cl.learn(value, model="mhd")


def test_the_blank_image_is_located():
    support, _ = _bars()
    support[1, 0] = False
    with pytest.raises(ValueError, match=r"^images\[1, 0\]: image has no ink"):
        cl.learn(support, model="mhd")


# --------------------------------------------------------------------------- the object


def test_mhd_concepts_score_predict_classify_and_round_trip(tmp_path):
    support, queries = _bars()
    concepts = cl.learn(support, model="mhd")
    assert isinstance(concepts, Concepts) and concepts.n_concepts == 2
    scores = concepts.score(queries)
    proba = concepts.predict_proba(queries)
    assert scores.shape == proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(proba.argmax(1), concepts.classify(queries))
    np.testing.assert_array_equal(concepts.classify(queries), [1, 0])
    # a higher temperature flattens the probabilities, a lower one sharpens them
    hot, cold = concepts.predict_proba(queries, 1e3), concepts.predict_proba(queries, 1e-3)
    assert hot.max() < proba.max() <= cold.max()
    with pytest.raises(ValueError, match="^temperature"):
        concepts.predict_proba(queries, temperature=0.0)
    concepts.save(tmp_path / "c.npz")
    loaded = cl.load(tmp_path / "c.npz")
    assert loaded.model == "mhd" and loaded.n_concepts == 2
    np.testing.assert_array_equal(loaded.score(queries), scores)
    np.testing.assert_array_equal(cl.score(loaded, queries), scores)  # the function form
    for method, args in (("parses", ()), ("sample", (2, None))):
        with pytest.raises(NotImplementedError, match="'mhd'"):
            getattr(concepts, method)(*args)


def test_saved_files_are_pickle_free_and_checked(tmp_path):
    support, _ = _bars()
    concepts = cl.learn(support, model="mhd")
    concepts.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        assert {"meta", "support"} <= set(data.files)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="^path: .*not a saved concepts"):
        cl.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="^path"):
        cl.load(tmp_path / "missing.npz")
    bad = Concepts(concepts.contender, concepts.state, support, "mhd", {"x": object()})
    with pytest.raises(ValueError, match="^options"):
        bad.save(tmp_path / "bad.npz")


@pytest.mark.slow  # parses four images with the generative model and compiles its refits
def test_bpl_concepts_parse_sample_and_round_trip(tmp_path):
    import jax

    support, queries = _bars()
    concepts = cl.learn(support, model="bpl", quick=True)
    np.testing.assert_array_equal(concepts.classify(queries), [1, 0])
    programs = concepts.parses()
    assert len(programs) == 2 and all(len(shots) == 2 for shots in programs)
    for shots in programs:
        for ranked in shots:
            weights = [p.weight for p in ranked]
            assert weights == sorted(weights, reverse=True)
            np.testing.assert_allclose(sum(weights), 1.0, rtol=1e-4)
            assert all(s.ndim == 2 and s.shape[1] == 2 for p in ranked for s in p.strokes)
    exemplars = concepts.sample(3, jax.random.key(1))
    assert exemplars.shape == (2, 3, 105, 105)
    np.testing.assert_array_equal(exemplars, concepts.sample(3, jax.random.key(1)))
    # vertical bars stay vertical: more ink spread over rows than over columns
    ink = exemplars[0] > 0.5
    rows, cols = np.nonzero(ink.any(axis=0))
    assert np.ptp(rows) > 2 * np.ptp(cols)
    # drawn with the support's pen (3-px bars, thinner than the default ink's 4-5 px lines)
    from conceptlearn.model.generate import line_core_share

    shares = [float(line_core_share(e > 0.5)) for e in exemplars.reshape(-1, 105, 105)]
    assert abs(np.mean(shares) - float(line_core_share(support[0, 0]))) < 0.1
    concepts.save(tmp_path / "bpl.npz")
    loaded = cl.load(tmp_path / "bpl.npz")
    np.testing.assert_array_equal(loaded.score(queries), concepts.score(queries))
    np.testing.assert_array_equal(loaded.sample(3, jax.random.key(1)), exemplars)


def test_predict_proba_uses_the_fitted_temperature():
    from conceptlearn.concept import temperatures

    support, queries = _bars()
    concepts = cl.learn(support, model="mhd")
    t = temperatures()["mhd"]["temperature"]
    assert concepts.temperature() == t and t != 1.0
    scores = concepts.score(queries).astype(np.float64) / t
    expected = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose(
        concepts.predict_proba(queries), expected / expected.sum(1, keepdims=True), rtol=1e-5
    )


def test_fit_temperature_recovers_the_temperature_of_simulated_scores():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "fit_temperature.py"
    spec = importlib.util.spec_from_file_location("fit_temperature", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (4000, 5))
    labels = np.array([rng.choice(5, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    t = module.fit_temperature(logits * 40.0, labels)  # scores 40x too sharp
    assert abs(t / 40.0 - 1.0) < 0.08
    assert module.nll(logits * 40.0, labels, t) < module.nll(logits * 40.0, labels, 1.0)
