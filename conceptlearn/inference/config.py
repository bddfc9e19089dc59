"""Every knob of the ``bpl`` contender in one place, and its two presets.

The defaults of :class:`BPLConfig` are the operating point: ``BPLConfig()`` is the ``FULL``
preset, and ``QUICK`` differs in keeping 3 classes per query for the two-way refits instead of
6 (the others are pruned by a cheap score first; see ``prune_*``) and 2 parses per image
instead of 3 (the third costs the full preset about 18% per episode and buys about 4 of 800
dev errors: docs/benchmarks.md, session 14), and refitting tokens at 35 x 35 pixels instead
of 53 x 53 (``refit_level``).
Both configs are frozen (hashable) because they are static arguments of the jitted fits.

Resolution: every optimiser run takes its first ``*_coarse_steps`` steps at a coarse level
(:func:`conceptlearn.model.image.coarse_target`): refinement at ``coarse_level`` 2 (53 x 53
pixels, where a step costs about a third of a full-resolution one), token refits at
``refit_level`` (2; quick: 3, 35 x 35), and the rest at 105 x 105. In both presets every step
is coarse (``*_coarse_steps`` equal the step counts); scores are always taken at full
resolution, except the pruning score, which is coarse throughout (level ``prune_level``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Fields that change a parse (proposals, refinement, ranking); the parse cache keys on them.
PARSE_FIELDS = (
    "max_candidates",
    "spur_depth",
    "dot_length",
    "proposer",
    "proposer_candidates",
    "max_strokes",
    "n_points",
    "n_parses",
    "coarse_level",
    "parse_steps",
    "parse_coarse_steps",
    "parse_lr",
    "blur_start",
    "blur_sigma",
    "epsilon",
    "n_samples",
    "coarse_samples",
    "smooth_sigma",
    "stroke_cost",
    "type_prior",
    "type_max_pieces",
    "merge_rounds",
    "merge_moves",
    "merge_radius",
    "type_steps",
)


@dataclass(frozen=True)
class FitConfig:
    """Constants of proposals, refinement and token refits (the operating point)."""

    max_candidates: int = 10  # skeleton-walk proposals per image (0: none)
    spur_depth: float = 0.0  # > 0: the skeleton drops spurs shorter than this many times the
    # ink's depth at their junction (a thick stroke's sharp corner; proposals.skeleton_graph)
    dot_length: float = 0.0  # px, > 0: a blob of ink alone whose skeleton is at most this long
    # is a dot, a stroke of one point (proposals.skeleton_graph), which the library's dot
    # primitive scores; else it is a short stroke
    proposer: str = ""  # a train-proposer checkpoint folder: its proposals join the walks'
    proposer_candidates: int = 0  # learned proposals per image (with ``proposer``)
    max_strokes: int = 6  # strokes per parse (longest kept)
    n_points: int = 16  # trajectory points per stroke (10 cut long strokes into chords)
    n_parses: int = 3  # K best parses kept per image
    merge_rounds: int = 0  # rounds of merge moves on each image's best parse (join two strokes
    # whose ends meet: proposals.merge_moves), refined and ranked with the walks
    merge_moves: int = 4  # merged parses per image per round (the cheapest single merges, then
    # all merges at once)
    merge_radius: float = 5.0  # px: the largest gap between the ends that a merge joins
    type_steps: int = 0  # > 0: the K best parses of each image are refined as BPL types for
    # this many steps (image likelihood + log P(type) under the library, in place of the
    # stand-in smoothness prior; fit.type_refine) and re-ranked
    coarse_level: int = 2  # the coarse refinement steps' resolution, ceil(105 / level) pixels
    # a side
    refit_level: int = 2  # the same for the token refits' coarse steps (the pruning refit sets
    # it to prune_level; QUICK refits at 3, 35 x 35, for two thirds of the time: dev errors at
    # k = 1 / 2 / 5 / 10, full preset, 97 / 66 / 43 / 39 at level 3 against 93 / 64 / 42 / 32
    # at level 2; quick, k = 1, 100 against 101; session 16)
    parse_steps: int = 10  # Adam steps when refining a proposal
    parse_coarse_steps: int = 10  # of which at half resolution (all: the 4 full-resolution
    # steps cost 40% of refinement and bought nothing on the dev runs; session 15)
    parse_lr: float = 0.3  # px per step
    refit_steps: int = 20  # Adam steps when refitting a parse's token to another image
    refit_coarse_steps: int = 20  # of which at level refit_level
    refit_lr: float = 0.6
    refit_eps: float = 0.1  # Adam's epsilon in token refits. A variable whose true gradient is
    # about 0 has gradients of float rounding, and with eps 1e-8 Adam turns them into full
    # steps: two compiled programs of one refit (one device, two) then ended up to 4 nats
    # apart. At 0.1 they agree to 0.01; dev errors 100 against 101 (quick; session 16)
    wide_lr: float = 1.5  # > 0: a second refit, long steps from blur wide_blur; the better kept
    wide_blur: float = 12.0
    wide_steps: int = 10  # steps of the wide refit (0: as many as the refit's)
    match_scale: bool = False  # refits of one image's parse to another start at the scale
    # that matches their ink spreads (fit.start_log_scale), not at the prior's mean
    start_rotation: float = 0.0  # rad, > 0: the far-reaching refit (the wide one, else the
    # only one) starts from the best of rotations -r, 0, +r, judged at its first blur before
    # any step (0: from no rotation; fit.start_grid)
    start_scale: float = 0.0  # > 0: ... and of start_scales log scales over -s .. +s (times
    # each rotation), added to the refit's starting log scale (0: from it alone)
    start_scales: int = 3  # log scales of the start grid (odd, with start_scale > 0)
    blur_start: float = 6.0  # blur sigma (px) at the first step; geometric down to blur_sigma
    blur_sigma: float = 2.0  # blur sigma (px) of the score
    epsilon: float = 0.02  # pixel-flip probability of the score
    likelihood_weight: float = 1.0  # < 1: token refits (their steps and scores) weigh the
    # image log-likelihood by this against the token prior (a tempered likelihood)
    score_likelihood_weight: float = -1.0  # >= 0: the refit's score (not its steps) weighs the
    # image log-likelihood by this instead of likelihood_weight (< 0: likelihood_weight)
    occluder_side: int = 25  # px, > 0: in a token refit, a square of this side may be hidden
    # from the program: its pixels are ink with probability occluder_ink, whatever is drawn
    # there, summed out over every place (model.image.occluded_log_likelihood). A blank square
    # (the default) covers a blanked patch of the query; an inky one (0.15, session 10) ink of
    # strokes an occluder hid from the program's image. Session 19, quick, k = 1: occlude=25
    # queries 258 errors against 303 of 800, unshifted 100 against 98 (docs/benchmarks.md)
    occluder_log_prior: float = -10.0  # log probability that an image has the square
    occluder_ink: float = 0.01  # ink probability of a pixel under the square (epsilon / 2:
    # blank)
    occluder_steps: bool = True  # the refit's steps sum the square out too (else only its
    # score); with a blank square the token cannot escape ink into it, as it could with an
    # inky one
    occluder_query_only: bool = True  # the square may hide part of the query only: the
    # forward refits (class parse -> query) sum it out; the backward refits and the evidence
    # (whose image is a class image) do not
    n_samples: int = 24  # renderer arc-length samples per stroke
    coarse_samples: int = 0  # the same at half resolution (0: n_samples)
    smooth_sigma: float = 2.0  # px: std of a trajectory's second differences (stand-in prior)
    stroke_cost: float = 20.0  # nats per stroke (stand-in prior)
    type_prior: bool = True  # weigh parses by log P(type) under the library (else stand-in)
    type_max_pieces: int = 6  # sub-strokes a parse's stroke may be cut into when scoring its
    # type (model.type_prior.stroke_log_prob), as many as the library allows (MAX_SUBSTROKES)
    learned_noise: bool = True  # token sigmas from the library where it has them (learned_noise())
    motor_sigma: float = 0.7  # px: std of the motor noise at each point (token prior)
    motor_length: float = 0.0  # trajectory points, > 0: the motor noise is smooth along a
    # stroke, correlated over about this many points (model.token.motor_factor); 0: independent
    stroke_sigma: float = 5.0  # px: std of each stroke's shift (token prior)
    attach_sigma: float = 0.7  # px, > 0: a stroke starting on an earlier stroke's ink shifts
    # with it, plus its own shift of this std (model.token.stroke_parents); 0: all independent.
    # Session 18: dev error unchanged at k = 1 (full 95 errors against 93, quick 98 against 102
    # of 800) and k = 10 (quick 33 against 39, full 31 against 32); exemplars as varied as
    # real drawers' (docs/generation.md)
    width_sigma: float = 0.3  # std of the log pen width (token prior)
    pen_sigma: float = 0.039  # std of the log pen width of new exemplars around the support
    # image's pen: how much small1's drawers' pens differ (model.generate's docstring)
    scale_sigma: float = 0.15  # std of log scale (token prior)
    rotate_sigma: float = 0.15  # rad: std of the rotation (token prior)
    shear_sigma: float = 0.15  # std of the shear (token prior)
    shift_sigma: float = 8.0  # px: std of the translation (token prior)


@dataclass(frozen=True)
class BPLConfig(FitConfig):
    """Every knob of the ``bpl`` contender: the fit constants plus classification."""

    prune_width: int = 6  # classes per query kept for the two-way refits (>= n_way: all)
    prune_steps: int = 6  # coarse refit steps of the cheap pruning score (0: no refit)
    prune_lr: float = 1.5  # the pruning refit: one optimiser run, long steps ...
    prune_blur: float = 12.0  # ... from this blur (the wide refit's search, without the short one)
    prune_level: int = 3  # resolution level of the pruning refit's steps and score (35 x 35).
    # Of 800 dev queries, 39 have the true class outside the top 3 and 15 outside the top 6,
    # as at level 4 with 8 steps (39) and level 2 (14), in 0.49 s per episode against 0.62
    # and 1.37 (scripts/prune_recall.py; session 16)
    prune_start_scale: float = 0.0  # the pruning refit's start grid (fit.start_grid), in
    prune_start_rotation: float = 0.0  # place of start_scale and start_rotation
    two_way: bool = True  # False: one-way score log P(I_T | I_C) only
    pair_chunk: int = 0  # (query, support image) pairs per jitted call (0: 64 on CPU, 1024 else)


def learned_noise(cfg: FitConfig, library) -> FitConfig:
    """``cfg`` with the token noise learned into ``library`` (how the 20 drawers of a background
    character differ) where the refit's token has the same variable: the relation jitter of each
    stroke (``position_noise_sd``), the scale and shift of the affine warp (``affine_sd``, mean
    over the two axes). Motor noise at every trajectory point, rotation, shear and pen width
    have no counterpart in the library's spline token and keep ``cfg``'s values."""
    if library is None or not cfg.learned_noise:
        return cfg
    affine_sd = [float(x) for x in library.affine_sd]
    return dataclasses.replace(
        cfg,
        stroke_sigma=round(float(library.position_noise_sd), 4),
        scale_sigma=round((affine_sd[0] + affine_sd[1]) / 2, 4),
        shift_sigma=round((affine_sd[2] + affine_sd[3]) / 2, 4),
    )


FULL = BPLConfig()
QUICK = dataclasses.replace(FULL, prune_width=3, n_parses=2, refit_level=3)


def preset(quick: bool = False, overrides: dict[str, Any] | None = None) -> BPLConfig:
    """``QUICK`` or ``FULL`` with ``overrides`` (field -> value); unknown fields are an error."""
    cfg = QUICK if quick else FULL
    if overrides:
        names = {f.name for f in dataclasses.fields(BPLConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown bpl overrides {unknown}; known: {sorted(names)}")
        cfg = dataclasses.replace(cfg, **overrides)
    return cfg
