"""log P(type) of parses (conceptlearn.model.type_prior) against the numpy reference path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from conceptlearn.model.library import ALONG, END_OF, START_OF, toy_library
from conceptlearn.model.splines import bspline_basis, fit_spline
from conceptlearn.model.type_prior import (
    parse_type_log_prob,
    relation_log_prob,
    type_from_splines,
    type_marginal_log_prob,
    uniform_primitives,
)

LIB = toy_library(n_primitives=6, seed=3)


def _parse(strokes: list[np.ndarray], n_strokes: int = 3, n_points: int = 40):
    points = np.zeros((n_strokes, n_points, 2), np.float32)
    mask = np.zeros((n_strokes, n_points), bool)
    for i, s in enumerate(strokes):
        points[i, : len(s)], mask[i, : len(s)] = s, True
    return jnp.asarray(points), jnp.asarray(mask)


def test_one_stroke_parse_matches_the_numpy_type_path():
    control = np.array([[30.0, 40.0], [40.0, 30.0], [52.0, 35.0], [60.0, 50.0], [70.0, 52.0]])
    curve = bspline_basis(np.linspace(0.0, 1.0, 40), xp=np) @ control
    points, mask = _parse([curve])
    # the numpy path has no fit-residual term: switch it off (sd 1000 px)
    ours = float(parse_type_log_prob(LIB, points, mask, residual_sigma=1e3, max_pieces=1))
    fitted, _ = fit_spline(curve)
    reference = float(type_marginal_log_prob(LIB, type_from_splines(LIB, [fitted[None]])))
    np.testing.assert_allclose(ours, reference, atol=0.2)
    # with it, the 0.36 px arclength-vs-spline-parameter residual costs a little
    penalised = float(parse_type_log_prob(LIB, points, mask, max_pieces=1))
    assert reference - 3.0 < penalised < reference


def _log_n2(offset, sd):
    return stats.multivariate_normal(np.zeros(2), sd**2 * np.eye(2)).logpdf(offset)


def test_relation_is_the_best_of_the_four_against_scipy():
    first = np.stack([np.linspace(20.0, 60.0, 40), np.full(40, 50.0)], -1)
    second = np.stack([np.full(40, 61.0), np.linspace(50.0, 80.0, 40)], -1)  # 1 px past the end
    points, mask = _parse([first, second])
    sd = float(LIB.position_noise_sd)
    rel = np.asarray(LIB.relation_probs)
    start = second[0]
    weights, centres = np.asarray(LIB.position_weights), np.asarray(LIB.position_centers)
    position = np.log(
        sum(
            w * stats.multivariate_normal(c, float(LIB.position_sd) ** 2 * np.eye(2)).pdf(start)
            for w, c in zip(weights, centres, strict=True)
        )
    )
    expected = max(
        np.log(rel[0]) + position,
        np.log(rel[START_OF]) + _log_n2(start - first[0], sd),
        np.log(rel[END_OF]) + _log_n2(start - first[-1], sd),
        np.log(rel[ALONG]) - np.log(2.0) + _log_n2(np.array([1.0, 0.0]), sd),
    )
    got = float(jax.jit(relation_log_prob)(LIB, points, mask, jnp.asarray(1)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_batched_parses_with_dots_and_padding_are_finite_and_uniform_lesion_differs():
    line = np.stack([np.linspace(20.0, 80.0, 40), np.linspace(30.0, 70.0, 40)], -1)
    corner = np.concatenate(
        [
            np.stack([np.linspace(20.0, 50.0, 20), np.full(20, 20.0)], -1),
            np.stack([np.full(20, 50.0), np.linspace(21.0, 60.0, 20)], -1),
        ]
    )
    dot = np.array([[70.0, 80.0]])
    parses = [_parse([line]), _parse([corner, dot]), _parse([line, corner, dot])]
    points = jnp.stack([p for p, _ in parses])
    mask = jnp.stack([m for _, m in parses])
    batched = jax.vmap(parse_type_log_prob, (None, 0, 0))
    learned = np.asarray(batched(LIB, points, mask))
    uniform = np.asarray(batched(uniform_primitives(LIB), points, mask))
    assert np.all(np.isfinite(learned)) and np.all(np.isfinite(uniform))
    assert not np.allclose(learned, uniform)
    # one parse alone gives the same value as inside the batch
    np.testing.assert_allclose(float(parse_type_log_prob(LIB, *parses[1])), learned[1], rtol=1e-5)


def test_a_zigzag_of_five_sub_strokes_needs_more_than_three_pieces():
    """A stroke that turns sharply four times fits five sub-strokes; cut into at most three its
    spline residual costs many nats, so ``max_pieces`` up to the library's ``MAX_SUBSTROKES``
    lets log P(type) score such a stroke as the library would (not as split strokes). The
    shipped library's straight primitives make five pieces cheap (the toy library's do not)."""
    from conceptlearn.model.type_prior import parse_type_log_probs
    from conceptlearn.shipped import default_library_path, resolve_library

    library = resolve_library(default_library_path())

    corners = np.array([[20.0, 20], [35, 80], [50, 20], [65, 80], [80, 20], [95, 80]])
    t = np.linspace(0.0, 1.0, 8)[:-1, None]
    pieces = [a + t * (b - a) for a, b in zip(corners[:-1], corners[1:], strict=True)]
    zigzag = np.concatenate(pieces + [corners[-1:]])
    points, mask = _parse([zigzag])
    three = float(parse_type_log_probs(library, points[None], mask[None], max_pieces=3)[0])
    six = float(parse_type_log_probs(library, points[None], mask[None], max_pieces=6)[0])
    assert six > three + 100.0
