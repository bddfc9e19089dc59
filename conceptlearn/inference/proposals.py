"""Bottom-up parse candidates: skeleton -> graph of junctions and endpoints -> stroke walks.

This is BPL's proposal step (Lake et al. 2015, supplement S2): thin the ink to a one-pixel
skeleton, turn the skeleton into a graph whose nodes are endpoints and junctions and whose edges
are the pixel paths between them, then walk the graph into sets of strokes. A walk starts a
stroke at a free node, follows unused edges and, at a junction, either continues along the edge
that bends least or lifts the pen. Different turn thresholds and random choices give different
candidate parses (number of strokes, order, directions).

The graph part is plain numpy (it is not the hot loop); the result has fixed shapes so that the
refinement in :mod:`conceptlearn.inference.fit` can ``vmap`` over candidates:

- ``points`` ``f32 (max_candidates, max_strokes, n_points, 2)`` image coordinates ``(col, row)``,
  each stroke resampled uniformly in arc length;
- ``mask`` ``bool (max_candidates, max_strokes, n_points)``, a dot keeps one valid point;
- ``valid`` ``bool (max_candidates,)``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

MAX_STROKES = 8  # default cap on strokes per parse (the longest strokes are kept)
N_POINTS = 16  # default points per stroke after resampling


class Proposals(NamedTuple):
    """Fixed-shape parse candidates of one image (see module docstring for shapes).

    ``cost`` ``f32 (max_candidates,)``: the walk heuristic (strokes and bends; lower = simpler),
    ``inf`` where not valid. Candidates are sorted by cost.
    """

    points: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    cost: np.ndarray


@dataclass(frozen=True)
class Graph:
    """Skeleton graph: ``nodes`` ``(n_nodes, 2)`` positions; ``edges`` list of ``(a, b, path)``
    with ``path`` ``float (m, 2)`` ``(col, row)`` from node ``a`` to node ``b``; ``dots``
    ``(n_dots, 2)`` isolated skeleton pixels."""

    nodes: np.ndarray
    edges: tuple[tuple[int, int, np.ndarray], ...]
    dots: np.ndarray


_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _neighbours(skel: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """8-neighbour adjacency of skeleton pixels without redundant diagonals: a diagonal step is
    kept only if neither pixel it cuts the corner of is on the skeleton."""
    on = np.pad(np.asarray(skel, bool), 1).tolist()  # Python lists: [r + 1][c + 1], blank border
    nbrs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in zip(*np.nonzero(skel), strict=True):
        r, c = int(r), int(c)
        out = []
        for dr, dc in _OFFSETS:
            if not on[r + 1 + dr][c + 1 + dc]:
                continue
            if dr != 0 and dc != 0 and (on[r + 1 + dr][c + 1] or on[r + 1][c + 1 + dc]):
                continue
            out.append((r + dr, c + dc))
        nbrs[(r, c)] = out
    return nbrs


def thin(image: np.ndarray) -> np.ndarray:
    """The one-pixel skeleton ``bool (H, W)`` of ``image bool (H, W)`` (closed first, so that
    a one-pixel gap in a stroke does not split it)."""
    image = np.asarray(image, dtype=bool)
    return skeletonize(ndimage.binary_closing(image, iterations=1) | image)


def skeleton_graph(
    image: np.ndarray,
    *,
    spur_length: float = 5.0,
    merge_length: float = 4.0,
    spur_depth: float = 0.0,
    dot_length: float = 0.0,
) -> Graph:
    """Build the junction/endpoint graph of ``image`` ``bool (H, W)``.

    Spurs (an endpoint edge hanging off a junction, shorter than ``spur_length`` px, or than
    ``spur_depth`` times the ink's depth at the junction: its distance to the nearest blank
    pixel) are removed and junctions joined by an edge shorter than ``merge_length`` px are
    merged; both are artefacts of thinning thick ink. A sharp corner of a thick stroke thins
    into a junction with a spur about as long as the ink is deep there.

    A blob of ink alone (an edge touching no other edge, a loop included) whose skeleton is
    at most ``dot_length`` px long is a dot at its skeleton's mean: a pen's click thins into a
    4-5 px edge, not a single pixel.
    """
    skel = thin(image)
    nbrs = _neighbours(skel)
    degree = {p: len(n) for p, n in nbrs.items()}

    # nodes: clusters of junction pixels (degree >= 3), endpoints (1) and isolated pixels (0)
    node_of: dict[tuple[int, int], int] = {}
    node_pixels: list[list[tuple[int, int]]] = []
    for p in nbrs:
        if p in node_of or degree[p] == 2:
            continue
        cluster, stack = [], [p]
        node_of[p] = len(node_pixels)
        while stack:
            q = stack.pop()
            cluster.append(q)
            if degree[q] < 3:
                continue
            for n in nbrs[q]:
                if n not in node_of and degree[n] >= 3:
                    node_of[n] = len(node_pixels)
                    stack.append(n)
        node_pixels.append(cluster)

    edges: list[tuple[int, int, list[tuple[int, int]]]] = []
    used_steps: set[tuple[tuple[int, int], tuple[int, int]]] = set()

    def trace(start: tuple[int, int], first: tuple[int, int]) -> None:
        path, prev, cur = [start, first], start, first
        used_steps.add((start, first))
        while cur not in node_of:
            nxt = [n for n in nbrs[cur] if n != prev]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            path.append(cur)
        if cur in node_of:
            used_steps.add((cur, prev))
            edges.append((node_of[start], node_of[cur], path))

    for i, cluster in enumerate(node_pixels):
        for p in cluster:
            for n in nbrs[p]:
                if node_of.get(n) == i or (p, n) in used_steps:
                    continue
                trace(p, n)
    # loops without any node (an "o"): make one pixel of each a node
    seen = set(node_of)
    for p in nbrs:
        if p in seen:
            continue
        comp, stack = [], [p]
        seen.add(p)
        while stack:
            q = stack.pop()
            comp.append(q)
            for n in nbrs[q]:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        start = min(comp)
        node_of[start] = len(node_pixels)
        node_pixels.append([start])
        if nbrs[start]:
            trace(start, nbrs[start][0])

    nodes = np.array(
        [np.mean([(c, r) for r, c in cl], axis=0) for cl in node_pixels], dtype=np.float64
    ).reshape(-1, 2)
    paths = []
    for a, b, path in edges:
        xy = np.array([(c, r) for r, c in path], dtype=np.float64)
        xy[0], xy[-1] = nodes[a], nodes[b]
        paths.append((a, b, xy))
    dots = np.array([(c, r) for (r, c), d in degree.items() if d == 0], np.float64).reshape(-1, 2)
    depth = ndimage.distance_transform_edt(image) if spur_depth > 0 else None
    nodes, paths = _clean(nodes, paths, spur_length, merge_length, depth, spur_depth)
    if dot_length > 0:
        ends = collections.Counter(n for a, b, _ in paths for n in (a, b))
        blob = [ends[a] + ends[b] == (4 if a == b else 2) and _length(path) <= dot_length
                for a, b, path in paths]
        dots = np.concatenate([dots] + [path.mean(0, keepdims=True)
                                        for (_, _, path), b in zip(paths, blob, strict=True) if b])
        paths = [e for e, b in zip(paths, blob, strict=True) if not b]
    return Graph(nodes=nodes, edges=tuple(paths), dots=dots)


def _length(path: np.ndarray) -> float:
    return float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))


def _clean(nodes, edges, spur_length, merge_length, depth=None, spur_depth=0.0):
    """Remove spurs, merge close junctions, and splice out degree-2 nodes. ``depth``: the ink's
    distance transform ``(H, W)``, with which a spur shorter than ``spur_depth`` times the depth
    at its junction goes too."""
    edges = list(edges)

    def spur_limit(junction: int) -> float:
        if depth is None:
            return spur_length
        col, row = np.clip(np.rint(nodes[junction]).astype(int), 0, np.array(depth.shape[::-1]) - 1)
        return max(spur_length, spur_depth * float(depth[row, col]))

    for _ in range(20):
        changed = False
        deg = np.zeros(len(nodes), int)
        for a, b, _p in edges:
            deg[a] += 1
            deg[b] += 1
        # spurs: endpoint edge at a junction of degree >= 3
        for i, (a, b, p) in enumerate(edges):
            junction = b if deg[a] == 1 else a
            if (
                a != b
                and ((deg[a] == 1 and deg[b] >= 3) or (deg[b] == 1 and deg[a] >= 3))
                and _length(p) < spur_limit(junction)
            ):
                del edges[i]
                changed = True
                break
        if changed:
            continue
        # short edge between two junctions: contract into one node at the midpoint
        for i, (a, b, p) in enumerate(edges):
            if a != b and deg[a] >= 3 and deg[b] >= 3 and _length(p) < merge_length:
                del edges[i]
                nodes = nodes.copy()
                nodes[a] = p[len(p) // 2]
                edges = [(a if x == b else x, a if y == b else y, q) for x, y, q in edges]
                edges = [(x, y, _reanchor(q, nodes[x], nodes[y])) for x, y, q in edges]
                changed = True
                break
        if changed:
            continue
        # a node of degree 2 (left by pruning) joins its two edges
        for n in range(len(nodes)):
            inc = [i for i, (a, b, _p) in enumerate(edges) if n in (a, b)]
            if deg[n] != 2 or len(inc) != 2:
                continue
            (a1, b1, p1), (a2, b2, p2) = edges[inc[0]], edges[inc[1]]
            p1 = p1 if b1 == n else p1[::-1]
            o1 = a1 if b1 == n else b1
            p2 = p2 if a2 == n else p2[::-1]
            o2 = b2 if a2 == n else a2
            edges = [e for i, e in enumerate(edges) if i not in inc]
            edges.append((o1, o2, np.concatenate([p1, p2[1:]])))
            changed = True
            break
        if not changed:
            break
    return np.asarray(nodes), edges


def _reanchor(path: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    path = path.copy()
    path[0], path[-1] = start, end
    return path


def _direction(path: np.ndarray, at_end: bool, reach: float = 6.0) -> np.ndarray:
    """Unit tangent leaving the start of ``path`` (or arriving at its end)."""
    p = path[::-1] if at_end else path
    d = np.linalg.norm(p - p[0], axis=1)
    far = np.nonzero(d >= reach)[0]
    v = p[far[0]] - p[0] if len(far) else p[-1] - p[0]
    v = -v if at_end else v
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.zeros(2)


def edge_tangents(graph: Graph) -> np.ndarray:
    """``float (n_edges, 2, 2)``: each edge's unit tangent leaving its first node and arriving
    at its second (:func:`_direction`); traversed backwards, the two swap and flip sign."""
    return np.array(
        [[_direction(p, False), _direction(p, True)] for _, _, p in graph.edges]
    ).reshape(len(graph.edges), 2, 2)


def walk(
    graph: Graph,
    *,
    max_turn: float,
    rng: np.random.Generator | None = None,
    temperature: float = 0.3,
    tangents: np.ndarray | None = None,
) -> tuple[list[np.ndarray], float]:
    """One walk over ``graph`` into strokes.

    Strokes start at the free node with the fewest unused edges (endpoints first), top-left
    first; at a node the walk continues along the unused edge that bends least if the bend is
    below ``max_turn`` radians. With ``rng`` the start node and the continuation are sampled
    (softmax of minus bend / ``temperature``) instead. Returns ``(strokes, cost)`` with each
    stroke ``float (m, 2)`` and ``cost`` = number of strokes + total bend at junctions / pi.
    ``tangents``: :func:`edge_tangents` of ``graph`` (computed here when not given).
    """
    tangents = edge_tangents(graph) if tangents is None else tangents
    node_sums = graph.nodes.sum(axis=1).tolist() if len(graph.nodes) else []  # top-left first
    unused = set(range(len(graph.edges)))
    strokes, cost = [], 0.0
    while unused:
        counts: dict[int, int] = {}
        for i in unused:
            a, b, _p = graph.edges[i]
            counts[a] = counts.get(a, 0) + 1
            counts[b] = counts.get(b, 0) + 1
        order = sorted(counts, key=lambda n: (counts[n] % 2 == 0, node_sums[n]))
        if rng is not None and len(order) > 1 and rng.random() < 0.3:
            cur = order[int(rng.integers(len(order)))]
        else:
            cur = order[0]
        pieces: list[np.ndarray] = []
        heading = None
        while True:
            options = []  # (edge, path from cur, next node, tangent leaving, tangent arriving)
            for i in unused:
                a, b, p = graph.edges[i]
                if a == cur:
                    options.append((i, p, b, tangents[i, 0], tangents[i, 1]))
                if b == cur:
                    options.append((i, p[::-1], a, -tangents[i, 1], -tangents[i, 0]))
            if not options:
                break
            # one 2-vector product per option, as ever (a matrix product rounds differently)
            if heading is None:
                # first edge: prefer heading right/down (how people usually start), random if rng
                bends = -np.array([o[3] @ np.array([1.0, 0.5]) for o in options])
                k = int(np.argmin(bends))
                if rng is not None:
                    k = int(rng.integers(len(options)))
            else:
                bends = np.array([np.arccos(np.clip(heading @ o[3], -1, 1)) for o in options])
                if rng is not None:
                    w = np.exp(-(bends - bends.min()) / temperature)
                    k = int(rng.choice(len(options), p=w / w.sum()))
                else:
                    k = int(np.argmin(bends))
                if bends[k] > max_turn:
                    break
                cost += bends[k] / np.pi
            i, p, nxt, _, heading = options[k]
            unused.discard(i)
            pieces.append(p if not pieces else p[1:])
            cur = nxt
        strokes.append(np.concatenate(pieces))
        cost += 1.0
    return strokes, cost


def _resample(path: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``float (m, 2)`` -> ``(points f32 (n_points, 2), mask bool (n_points,))``."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    mask = np.ones(n_points, bool)
    if s[-1] < 1.0:  # a dot
        mask[1:] = False
        return np.repeat(path[:1], n_points, axis=0).astype(np.float32), mask
    t = np.linspace(0.0, s[-1], n_points)
    pts = np.stack([np.interp(t, s, path[:, d]) for d in range(2)], axis=1)
    return pts.astype(np.float32), mask


def _canonical(strokes: list[np.ndarray]) -> tuple:
    """Order- and direction-free signature of a stroke set (for de-duplication)."""
    sig = []
    for s in strokes:
        ends = sorted([tuple(np.round(s[0]).astype(int)), tuple(np.round(s[-1]).astype(int))])
        sig.append((tuple(ends), len(s)))
    return tuple(sorted(sig))


def propose(
    image: np.ndarray,
    *,
    max_candidates: int = 8,
    max_strokes: int = MAX_STROKES,
    n_points: int = N_POINTS,
    n_random: int = 24,
    seed: int = 0,
    spur_depth: float = 0.0,
    dot_length: float = 0.0,
) -> Proposals:
    """Parse candidates of one ``image`` ``bool (H, W)`` (see :class:`Proposals`).

    Deterministic walks with turn thresholds 0, 30, 60, 90 and 180 degrees come first, then
    ``n_random`` sampled walks (seeded by ``seed``); duplicates are dropped and the
    ``max_candidates`` lowest-cost candidates kept. A blank image gives one valid candidate: a dot
    at the centre. Strokes beyond ``max_strokes`` are dropped, shortest first. ``spur_depth``
    and ``dot_length``: see :func:`skeleton_graph`.
    """
    image = np.asarray(image, dtype=bool)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    graph = skeleton_graph(image, spur_depth=spur_depth, dot_length=dot_length)
    found: dict[tuple, tuple[float, list[np.ndarray]]] = {}

    def add(strokes, cost):
        if not strokes:
            return
        key = _canonical(strokes) + (tuple(tuple(np.round(s[0])) for s in strokes),)
        if key not in found or found[key][0] > cost:
            found[key] = (cost, strokes)

    if graph.edges:
        tangents = edge_tangents(graph)
        for deg in (60, 30, 90, 180, 0):
            add(*walk(graph, max_turn=np.deg2rad(deg), tangents=tangents))
        rng = np.random.default_rng(seed)
        for _ in range(n_random):
            add(*walk(graph, max_turn=np.deg2rad(rng.uniform(20, 120)), rng=rng,
                      tangents=tangents))
    # isolated pixels are dots; append them to every candidate
    dots = [d[None] for d in graph.dots]
    if not found:
        h, w = image.shape
        add(dots or [np.array([[w / 2.0, h / 2.0]])], 1.0)
        dots = []

    ranked = sorted(found.values(), key=lambda cs: cs[0])[:max_candidates]
    points = np.zeros((max_candidates, max_strokes, n_points, 2), np.float32)
    mask = np.zeros((max_candidates, max_strokes, n_points), bool)
    valid = np.zeros(max_candidates, bool)
    cost = np.full(max_candidates, np.inf, np.float32)
    for c, (cst, strokes) in enumerate(ranked):
        strokes = strokes + dots
        if len(strokes) > max_strokes:
            keep = sorted(
                np.argsort([-_length(s) if len(s) > 1 else 0.0 for s in strokes])[:max_strokes]
            )
            strokes = [strokes[i] for i in keep]
        for s, path in enumerate(strokes):
            points[c, s], mask[c, s] = _resample(path, n_points)
        valid[c] = True
        cost[c] = cst + len(dots)
    return Proposals(points=points, mask=mask, valid=valid, cost=cost)


# ------------------------------------------------------------ merge moves on a parse
# The walks split a stroke wherever the skeleton has a junction they will not turn through: a
# sharp corner drawn in one movement (its tip leaves a spur), or a crossing that thinning
# breaks into two junctions. A merge move joins two strokes of a refined parse whose ends meet
# into one stroke, so that refinement and log P(type) can judge the drawer's parse against the
# split one.


def _joins(strokes: list[np.ndarray], radius: float) -> list[tuple[float, int, int, bool, bool]]:
    """Every pair of strokes (neither a dot) with an end of each within ``radius`` px, as
    ``(cost, i, j, flip_i, flip_j)``: stroke ``i`` (reversed if ``flip_i``) runs into stroke
    ``j`` (reversed if ``flip_j``). ``cost`` is the gap in px plus the bend at the joint in
    px-equivalents (10 px per pi), cheapest first, one entry per pair."""
    out = []
    for i in range(len(strokes)):
        for j in range(i + 1, len(strokes)):
            a, b = strokes[i], strokes[j]
            if len(a) < 2 or len(b) < 2:
                continue
            best = None
            for flip_a in (False, True):
                for flip_b in (False, True):
                    pa, pb = (a[::-1] if flip_a else a), (b[::-1] if flip_b else b)
                    gap = float(np.linalg.norm(pa[-1] - pb[0]))
                    if gap > radius:
                        continue
                    turn = np.arccos(np.clip(_direction(pa, True) @ _direction(pb, False), -1, 1))
                    cost = gap + 10.0 * turn / np.pi
                    if best is None or cost < best[0]:
                        best = (cost, i, j, flip_a, flip_b)
            if best is not None:
                out.append(best)
    return sorted(out)


def _merge(strokes: list[np.ndarray], join) -> list[np.ndarray]:
    """``strokes`` with the pair of ``join`` (from :func:`_joins`) made one stroke, in the
    earlier stroke's place."""
    _, i, j, flip_i, flip_j = join
    first = strokes[i][::-1] if flip_i else strokes[i]
    second = strokes[j][::-1] if flip_j else strokes[j]
    joined = np.concatenate([first, second])
    return [joined if k == i else s for k, s in enumerate(strokes) if k != j]


def merge_moves(
    points: np.ndarray, mask: np.ndarray, *, n_moves: int, radius: float = 5.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses one merge away from a parse ``points f32 (S, P, 2)``, ``mask bool (S, P)``: the
    ``n_moves - 1`` cheapest single merges (:func:`_joins`) and, last, every merge taken
    greedily, cheapest first, until no two strokes' ends meet. Returns ``points f32 (n_moves,
    S, P, 2)``, ``mask bool (n_moves, S, P)``, ``valid bool (n_moves,)``; merged strokes are
    resampled evenly in arc length to ``P`` points."""
    S, P = mask.shape
    out_points = np.zeros((n_moves, S, P, 2), np.float32)
    out_mask = np.zeros((n_moves, S, P), bool)
    valid = np.zeros(n_moves, bool)
    strokes = [np.asarray(points[s][mask[s]], np.float64) for s in range(S) if mask[s].any()]
    joins = _joins(strokes, radius)
    if not joins or n_moves < 1:
        return out_points, out_mask, valid
    candidates = [_merge(strokes, join) for join in joins[: n_moves - 1]]
    greedy = strokes
    while (steps := _joins(greedy, radius)):
        greedy = _merge(greedy, steps[0])
    if len(greedy) < len(strokes) - 1 or not candidates:
        candidates.append(greedy)
    for c, parse in enumerate(candidates):
        for s, path in enumerate(parse):
            out_points[c, s], out_mask[c, s] = _resample(path, P)
        valid[c] = True
    return out_points, out_mask, valid
