"""Bottom-up proposals recover the strokes of images drawn from known strokes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import line

from conceptlearn.inference.proposals import propose, skeleton_graph

TOLERANCE_PX = 2.0  # mean closest-point distance between a true and a recovered stroke


def _draw(strokes: list[np.ndarray], width: int = 1) -> np.ndarray:
    """Polylines ``(m, 2)`` (col, row) -> bool (105, 105), ink about 2 * width + 1 px wide."""
    img = np.zeros((105, 105), bool)
    for s in strokes:
        for (c0, r0), (c1, r1) in zip(s[:-1], s[1:], strict=True):
            rr, cc = line(int(round(r0)), int(round(c0)), int(round(r1)), int(round(c1)))
            img[rr, cc] = True
    return ndimage.binary_dilation(img, iterations=width)


def _dense(poly: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0, s[-1], max(int(s[-1]), 2))
    return np.stack([np.interp(t, s, poly[:, d]) for d in range(2)], axis=1)


def _chamfer(a: np.ndarray, b: np.ndarray) -> float:
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return 0.5 * (d.min(1).mean() + d.min(0).mean())


t = np.linspace(0, 2 * np.pi, 60)
CASES = {
    "T": [np.array([[20.0, 20], [80, 20]]), np.array([[50.0, 20], [50, 85]])],
    "plus": [np.array([[20.0, 50], [80, 50]]), np.array([[50.0, 20], [50, 85]])],
    "L": [np.array([[20.0, 20], [20, 80], [80, 80]])],
    "two": [np.array([[20.0, 20], [80, 20]]), np.array([[20.0, 60], [80, 90]])],
    "circle": [np.stack([50 + 25 * np.cos(t), 50 + 25 * np.sin(t)], 1)],
    "three": [
        np.array([[15.0, 15], [15, 90]]),
        np.array([[40.0, 30], [90, 30]]),
        np.array([[40.0, 70], [90, 70]]),
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_best_candidate_recovers_strokes(name):
    true = CASES[name]
    p = propose(_draw(true), max_candidates=6, max_strokes=5, n_points=12)
    assert p.points.shape == (6, 5, 12, 2) and p.points.dtype == np.float32
    assert p.mask.shape == (6, 5, 12) and p.valid.shape == (6,)
    assert p.valid[0] and np.all(np.diff(p.cost[p.valid]) >= 0)
    strokes = [p.points[0, s, p.mask[0, s]] for s in range(5) if p.mask[0, s, 0]]
    assert len(strokes) == len(true)
    for s in true:
        dist = min(_chamfer(_dense(s), _dense(q) if len(q) > 1 else q) for q in strokes)
        assert dist <= TOLERANCE_PX, (name, dist)


def test_blank_and_full_images_give_fixed_shapes():
    for img in (np.zeros((105, 105), bool), np.ones((105, 105), bool)):
        p = propose(img, max_candidates=4, max_strokes=3, n_points=8)
        assert p.points.shape == (4, 3, 8, 2) and p.valid[0]
        assert np.all(np.isfinite(p.points))
        assert not np.any(p.mask[~p.valid])


def test_dot_and_seed_determinism():
    img = np.zeros((105, 105), bool)
    img[30, 40] = True
    g = skeleton_graph(img)
    assert g.dots.tolist() == [[40.0, 30.0]]
    p = propose(img, max_candidates=2, max_strokes=2, n_points=4)
    assert p.mask[0, 0].tolist() == [True, False, False, False]
    noisy = _draw(CASES["plus"]) ^ (np.random.default_rng(1).random((105, 105)) < 0.02)
    a, b = propose(noisy, seed=3), propose(noisy, seed=3)
    np.testing.assert_array_equal(a.points, b.points)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="2-D"):
        propose(np.zeros((2, 105, 105), bool))


def _slots(strokes: list[np.ndarray], n_slots: int = 5, n_points: int = 16):
    points = np.zeros((n_slots, n_points, 2), np.float32)
    mask = np.zeros((n_slots, n_points), bool)
    for s, path in enumerate(strokes):
        t = np.linspace(0.0, 1.0, n_points)[:, None]
        points[s], mask[s] = (1 - t) * path[0] + t * path[1], True
    return points, mask


def test_merge_moves_join_strokes_whose_ends_meet():
    """A V split at its tip becomes one stroke running through the tip; a crossing cut into four
    arms at its centre becomes two straight strokes when every merge is taken (the last move);
    strokes far apart give no move."""
    from conceptlearn.inference.proposals import merge_moves

    v = [np.array([[20.0, 20], [40, 80]]), np.array([[60.0, 20], [41, 81]])]
    points, mask, valid = merge_moves(*_slots(v), n_moves=3)
    assert valid.tolist() == [True, False, False]
    assert mask[0].any(-1).sum() == 1
    path = points[0, 0][mask[0, 0]]
    ends = {tuple(np.round(path[0])), tuple(np.round(path[-1]))}
    assert ends == {(20.0, 20.0), (60.0, 20.0)}
    assert min(np.linalg.norm(path - [40.5, 80.5], axis=1)) < 4.0  # through the tip

    centre = np.array([50.0, 50.0])
    arms = [np.array([centre + d, centre + 30 * np.asarray(d)]) for d in ([1, 0], [-1, 0], [0, 1], [0, -1])]
    points, mask, valid = merge_moves(*_slots(arms), n_moves=4)
    greedy = np.nonzero(valid)[0][-1]
    assert mask[greedy].any(-1).sum() == 2
    for s in range(2):
        stroke = points[greedy, s]
        span = np.abs(stroke[-1] - stroke[0])
        assert span.max() > 55 and span.min() < 1  # a straight bar across the centre

    far = [np.array([[10.0, 10], [30, 10]]), np.array([[70.0, 70], [90, 90]])]
    assert not merge_moves(*_slots(far), n_moves=3)[2].any()


def test_spur_depth_drops_stubs_no_longer_than_the_ink_is_deep():
    """A 9-px stub off a bar 7 px thick (depth 4 at the junction) survives the fixed 5-px spur
    rule, goes at spur_depth 3 (limit 12 px) and stays at 2 (8 px)."""
    image = np.zeros((105, 105), bool)
    image[50, 20:85] = True
    image[50:62, 52] = True
    image = ndimage.binary_dilation(image, iterations=3)
    edges = {d: len(skeleton_graph(image, spur_depth=d).edges) for d in (0.0, 2.0, 3.0)}
    assert edges == {0.0: 3, 2.0: 3, 3.0: 1}
    merged = skeleton_graph(image, spur_depth=3.0).edges[0][2]
    assert np.ptp(merged[:, 0]) > 55 and np.ptp(merged[:, 1]) < 3  # the bar, spliced whole


def test_a_pen_click_blob_is_a_dot_with_dot_length():
    """A 5 x 5 blob of ink (a pen's click: it thins into a 4-5 px edge, not one pixel) is a
    one-point stroke at its centre with ``dot_length``, a short stroke without it; a short
    dash longer than ``dot_length`` and a blob touching a stroke stay strokes."""
    img = _draw(CASES["two"])
    img[8:13, 88:93] = True  # a click centred at (col 90, row 10)
    img[95:98, 10:25] = True  # a dash 15 px long
    plain = skeleton_graph(img)
    assert len(plain.dots) == 0 and len(plain.edges) == 4
    g = skeleton_graph(img, dot_length=5.0)
    assert len(g.edges) == 3
    np.testing.assert_allclose(g.dots, [[90.0, 10.0]], atol=1.0)
    p = propose(img, max_candidates=3, max_strokes=5, n_points=8, dot_length=5.0)
    one_point = p.mask[0].sum(-1) == 1
    assert one_point.sum() == 1 and (p.mask[0].sum(-1) == 8).sum() == 3
    np.testing.assert_allclose(p.points[0, one_point, 0], [[90.0, 10.0]], atol=1.0)
    touching = _draw(CASES["two"])
    touching[18:23, 78:83] = True  # on the first stroke's end
    assert len(skeleton_graph(touching, dot_length=5.0).dots) == 0
