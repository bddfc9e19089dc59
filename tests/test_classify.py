"""The bpl contender: finite scores on odd images, a tiny episode, no retrace, determinism."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import line

from conceptlearn.contenders import make_contender
from conceptlearn.inference.classify import (
    PairTerms,
    _two_way_score_jit,
    pair_scores,
    pair_terms,
    score_pairs,
    two_way_score,
)
from conceptlearn.inference.fit import TRACE_COUNT, strokes_used
from conceptlearn.model.library import save_library, toy_library

TINY = {
    "max_candidates": 2,
    "max_strokes": 3,
    "n_points": 8,
    "n_parses": 2,
    "parse_steps": 4,
    "refit_steps": 6,
    "prune_steps": 2,
    "prune_width": 2,
    "n_samples": 16,
    "refit_coarse_steps": 4,
    "parse_coarse_steps": 2,
}


def _draw(strokes, shift=(0, 0)) -> np.ndarray:
    img = np.zeros((105, 105), bool)
    for s in strokes:
        s = np.asarray(s, float) + np.asarray(shift, float)
        for (c0, r0), (c1, r1) in zip(s[:-1], s[1:], strict=True):
            rr, cc = line(int(r0), int(c0), int(r1), int(c1))
            img[rr, cc] = True
    return ndimage.binary_dilation(img, iterations=2)


SHAPES = [
    [[[20, 50], [85, 50]], [[52, 15], [52, 90]]],  # plus
    [[[20, 20], [20, 85], [85, 85]]],  # L
    [[[15, 85], [50, 15], [88, 85]]],  # caret
]


@pytest.fixture(scope="module")
def contender(tmp_path_factory):
    """The tiny contender, weighing parses by log P(type) under a toy library."""
    path = tmp_path_factory.mktemp("library") / "toy.npz"
    save_library(toy_library(n_primitives=6), path)
    bpl = make_contender("bpl", seed=0, quick=True, overrides=TINY, library=str(path))
    assert bpl._library is not None
    return bpl


def _episode(shift):
    support = np.stack([_draw(s)[None] for s in SHAPES])  # (3, 1, 105, 105)
    queries = np.stack([_draw(SHAPES[i], shift) for i in (2, 0, 1)])
    return support, queries, np.array([2, 0, 1])


def test_tiny_episode_no_retrace_and_determinism(contender):
    support, queries, labels = _episode((3, -2))
    key = jax.random.key(0)
    state = contender.fit(support, key=key)
    scores = contender.scores(state, queries, key=key)
    assert scores.shape == (3, 3) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores.argmax(1), labels)
    # same seed, same numbers
    again = contender.scores(contender.fit(support, key=key), queries, key=key)
    np.testing.assert_array_equal(scores, again)
    # another episode of the same shape: nothing is traced again
    traced = dict(TRACE_COUNT)
    support2, queries2, labels2 = _episode((-2, 4))
    s2 = contender.scores(contender.fit(support2[::-1], key=key), queries2, key=key)
    assert dict(TRACE_COUNT) == traced
    np.testing.assert_array_equal(s2.argmax(1), 2 - labels2)


def test_scores_finite_on_odd_queries(contender):
    support, _, _ = _episode((0, 0))
    rng = np.random.default_rng(0)
    odd = np.stack(
        [np.zeros((105, 105), bool), np.ones((105, 105), bool), rng.random((105, 105)) < 0.3]
    )
    state = contender.fit(support, key=jax.random.key(1))
    scores = contender.scores(state, odd, key=jax.random.key(2))
    assert scores.shape == (3, 3) and np.all(np.isfinite(scores))
    # images that are not 105 x 105 are resized (documented in classify.py)
    small = _draw(SHAPES[0])[::3, ::3]  # (35, 35); three of them keep the traced batch shape
    s = contender.scores(state, np.stack([small] * 3), key=jax.random.key(2))
    assert np.all(np.isfinite(s)) and np.all(s.argmax(1) == 0)


def test_k_sweep_gives_the_predictions_of_separate_evaluations(contender):
    """One sweep over k = 1, 2 scores each k exactly as a contender fitted to those shots."""
    support = np.stack([np.stack([_draw(s), _draw(s, (2, 3))]) for s in SHAPES])
    queries = np.stack([_draw(SHAPES[i], (-3, 1)) for i in (1, 2, 0)])
    state = contender.fit(support, key=jax.random.key(0))
    sweep = contender.scores_for_ks(state, queries, [1, 2], key=jax.random.key(1))
    for k in (1, 2):
        alone = contender.fit(support[:, :k], key=jax.random.key(0))
        separate = contender.scores(alone, queries, key=jax.random.key(1))
        np.testing.assert_allclose(sweep[k], separate, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(sweep[k].argmax(1), separate.argmax(1))
    with pytest.raises(ValueError, match="ks must lie"):
        contender.scores_for_ks(state, queries, [3])


def test_pair_terms_are_one_pair_function_batched(contender):
    """score_pairs over a chunked, padded batch, with unused stroke slots cut, equals
    pair_terms called on each pair alone with every slot."""
    support, queries, _ = _episode((3, -2))
    parses = contender.parse(support[:, 0])
    q_parses = contender.parse(queries)
    assert strokes_used(parses.mask).max(1).min() < parses.mask.shape[2]  # some slots are cut
    cfg = dataclasses.replace(contender.cfg, pair_chunk=2)  # 3 pairs: two chunks, one padded
    c_idx, q_idx = np.array([0, 2, 1]), np.array([1, 1, 0])
    batched = score_pairs(parses, support[:, 0], q_parses, queries, c_idx, q_idx, cfg,
                          n_steps=cfg.refit_steps, n_coarse=cfg.refit_coarse_steps)
    for m, (c, q) in enumerate(zip(c_idx, q_idx, strict=True)):
        one = pair_terms(jax.tree.map(lambda x, c=c: x[c], parses), jnp.asarray(support[c, 0]),
                         jax.tree.map(lambda x, q=q: x[q], q_parses), jnp.asarray(queries[q]),
                         cfg, cfg.refit_steps, cfg.refit_coarse_steps)
        # the two programs round differently (cut slots, batch), and the refit's Adam steps
        # carry that along: up to about 1 nat of a score of -2,700
        np.testing.assert_allclose(batched.forward[m], one.forward, rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(batched.backward[m], one.backward, rtol=1e-3, atol=1e-2)


def test_config_and_bad_input(contender):
    json.dumps(contender.config)
    assert contender.config["prune_width"] == 2
    with pytest.raises(ValueError, match="unknown bpl overrides"):
        make_contender("bpl", overrides={"no_such_knob": 1})
    with pytest.raises(ValueError, match="support must be"):
        contender.fit(np.zeros((3, 105, 105), bool))


def test_two_shot_episode(contender):
    """k = 2: every shot is parsed; the class score is the log-mean-exp over shots."""
    support = np.stack([np.stack([_draw(s), _draw(s, (2, 3))]) for s in SHAPES])
    queries = np.stack([_draw(SHAPES[i], (-3, 1)) for i in (1, 2, 0)])
    scores = contender.scores(
        contender.fit(support, key=jax.random.key(0)), queries, key=jax.random.key(1)
    )
    assert np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores.argmax(1), [1, 2, 0])


def test_pair_scores_match_two_way_score_and_compile_per_power_of_two():
    """Episodes have data-dependent pair counts; the host-side pair scores pad them to powers of
    two, so that a sweep of episodes compiles a handful of programs, not one set per episode (each
    kept in jax's caches: a worker's memory grew by about 30 MB per episode)."""
    rng = np.random.default_rng(0)
    before = _two_way_score_jit._cache_size()
    for m in (70, 91, 128, 5):
        terms = PairTerms(*(rng.normal(size=(m, 2)).astype(np.float32) * 50 for _ in range(2)))
        weights = [np.log(rng.dirichlet([1.0, 1.0], size=m)).astype(np.float32) for _ in range(2)]
        evidence = rng.normal(size=m).astype(np.float32) * 100
        for two_way in (True, False):
            got = pair_scores(terms, *weights, evidence, two_way)
            want = np.asarray(two_way_score(terms, *weights, evidence, two_way))
            assert got.shape == (m,)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    # 70, 91 and 128 share the 128 bucket and 5 pads to 64: two shapes, each way
    assert _two_way_score_jit._cache_size() - before <= 4


def test_pruning_at_coarse_levels_keeps_the_true_class(contender):
    """The cheap pruning score at level 3 (35 x 35 pixels, as both presets prune) and at level 4
    ranks each query's own shape first, as at level 2, and differs from the level-2 score."""
    from conceptlearn.inference.classify import prune_scores

    support, queries, labels = _episode((3, -2))
    state = contender.fit(support, key=jax.random.key(0))
    q_parses, q_images = contender._queries(queries)
    cheap = {level: prune_scores(state, q_parses, q_images,
                                 dataclasses.replace(contender.cfg, prune_level=level))[..., 0]
             for level in (2, 3, 4)}
    for level, scores in cheap.items():
        assert scores.shape == (3, 3) and np.all(np.isfinite(scores)), level
        np.testing.assert_array_equal(scores.argmax(1), labels)
    assert not np.allclose(cheap[2], cheap[3]) and not np.allclose(cheap[3], cheap[4])


def test_the_pruning_refit_has_its_own_start_grid_and_reaches_shrunk_queries(contender):
    """``prune_start_scale`` starts the pruning refit from a grid of scales (``start_scale`` is
    the two-way refits' and leaves the pruning score alone); from it, queries drawn at 0.6 times
    the size score their own class higher than from the plain start, and first."""
    from conceptlearn.inference.classify import prune_scores

    support, _, labels = _episode((0, 0))
    shrunk = [[[[52 + 0.6 * (c - 52), 52 + 0.6 * (r - 52)] for c, r in stroke] for stroke in shape]
              for shape in SHAPES]
    queries = np.stack([_draw(shrunk[i]) for i in (2, 0, 1)])
    state = contender.fit(support, key=jax.random.key(0))
    q_parses, q_images = contender._queries(queries)
    cfg = dataclasses.replace(contender.cfg, start_scales=5)

    def cheap(**grid):
        return prune_scores(state, q_parses, q_images, dataclasses.replace(cfg, **grid))[..., 0]

    plain = cheap()
    np.testing.assert_array_equal(cheap(start_scale=0.5), plain)
    grid = cheap(prune_start_scale=0.5)
    own = (np.arange(3), labels)
    assert np.all(grid[own] > plain[own])
    np.testing.assert_array_equal(grid.argmax(1), labels)


@pytest.mark.slow  # three refit configs and two evidence programs compiled: minutes
def test_a_query_only_occluder_sums_out_in_the_forward_refits_alone(contender):
    """With ``occluder_query_only`` the forward refits (class parse -> query) score as with the
    occluder, and the backward refits and the evidence (class images) as without it."""
    from conceptlearn.inference.classify import self_scores

    support, queries, _ = _episode((3, -2))
    parses = contender.parse(support[:2, 0])
    q_parses = contender.parse(queries[:1])
    pair = (jax.tree.map(lambda x: x[0], parses), jnp.asarray(support[0, 0]),
            jax.tree.map(lambda x: x[0], q_parses), jnp.asarray(queries[0]))
    base = dataclasses.replace(contender.cfg, occluder_side=25, occluder_log_prior=-5.0,
                               occluder_ink=0.3, occluder_query_only=False)
    steps = (base.refit_steps, base.refit_coarse_steps)
    both = pair_terms(*pair, base, *steps)
    none = pair_terms(*pair, dataclasses.replace(base, occluder_side=0), *steps)
    query_only = pair_terms(*pair, dataclasses.replace(base, occluder_query_only=True), *steps)
    np.testing.assert_allclose(query_only.forward, both.forward, rtol=1e-6)
    np.testing.assert_allclose(query_only.backward, none.backward, rtol=1e-6)
    assert np.all(np.asarray(both.backward) > np.asarray(none.backward))
    own = {name: self_scores(parses, support[:2, 0], cfg, *steps) for name, cfg in (
        ("none", dataclasses.replace(base, occluder_side=0)),
        ("query_only", dataclasses.replace(base, occluder_query_only=True)))}
    np.testing.assert_allclose(own["query_only"], own["none"], rtol=1e-6)
