"""Per-episode adaptation and the three ViT contenders (``vit``, ``vit-proto``,
``vit-scratch``): one jitted fit per episode shape (augment -> frozen prefix once -> ``lax.scan``
over AdamW steps) and scoring; ``TRACE_COUNTS`` counts traces so tests can prove there is no
retrace across episodes."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from conceptlearn.baselines.vit.augmentation import AugmentConfig, augment, downsample, ink_levels
from conceptlearn.baselines.vit.checkpoint import _path_name, load_checkpoint, read_config
from conceptlearn.baselines.vit.model import PRESETS, Classifier, ViTConfig, init_classifier
from conceptlearn.datasets.omniglot import IMAGE_SIZE

# How many times each jitted function has been traced (tests assert no retrace).
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True)
class FinetuneConfig:
    """Per-episode adaptation. ``train_blocks``: "all", or how many last blocks move with the
    head (0 = head only). ``steps = 0`` is the nearest-class-mean (proto) classifier."""

    steps: int = 50  # AdamW steps on the support set
    lr: float = 1e-2  # peak learning rate (cosine decay to 0 over the steps)
    head_lr_mult: float = 1.0  # learning-rate multiplier for the head
    weight_decay: float = 1e-4
    train_blocks: int | str = 0  # "all" | number of last blocks that move (0 = head only)
    views: int = 8  # augmented views per support image (the first is the clean image)
    batch: int = 64  # images per step (<= the pool of views)
    label_smoothing: float = 0.0
    head_scale: float = 10.0  # initial cosine-head temperature
    augment: AugmentConfig = AugmentConfig(strength=0.7)
    dropout: bool = False  # use the architecture's dropout while fine-tuning


def _replace(cfg, overrides: dict[str, Any], what: str):
    """``dataclasses.replace`` with a clear error for unknown keys; ``aug_*`` keys reach the
    nested :class:`AugmentConfig`."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    direct = {k: v for k, v in overrides.items() if not k.startswith("aug_")}
    nested = {k[4:]: v for k, v in overrides.items() if k.startswith("aug_")}
    unknown = sorted(set(direct) - fields)
    if unknown:
        raise ValueError(
            f"unknown {what} override(s) {unknown}; choose from {sorted(fields)} or aug_<field>"
        )
    if nested:
        aug_fields = {f.name for f in dataclasses.fields(AugmentConfig)}
        bad = sorted(set(nested) - aug_fields)
        if bad:
            raise ValueError(
                f"unknown augmentation override(s) {bad}; choose from {sorted(aug_fields)}"
            )
        if "thickness_p" in nested:
            nested["thickness_p"] = tuple(float(p) for p in nested["thickness_p"])
        direct["augment"] = dataclasses.replace(cfg.augment, **nested)
    return dataclasses.replace(cfg, **direct)


def _first_trained_block(cfg: ViTConfig, ft: FinetuneConfig) -> int:
    """Index of the first block that moves; ``-1`` = everything moves (patch embedding too);
    ``depth + 1`` = head only."""
    if ft.train_blocks == "all":
        return -1
    n = int(ft.train_blocks)
    if not 0 <= n <= cfg.depth:
        raise ValueError(f"train_blocks must be 'all' or 0..{cfg.depth}, got {ft.train_blocks!r}")
    return cfg.depth + 1 if n == 0 else cfg.depth - n


def _labels_for(cfg: ViTConfig, params: nnx.State, first: int) -> Any:
    """Optimizer labels: the head always moves; the final norm moves with any block."""

    def label(path, _):
        parts = _path_name(path).split("/")
        if parts[0] == "head":
            return "head"
        if first < 0:
            return "body"
        if parts[1] == "blocks" and int(parts[2]) >= first:
            return "body"
        if parts[1] == "norm" and first <= cfg.depth:
            return "body"
        return "frozen"

    return jax.tree_util.tree_map_with_path(label, params)


def _prefix(model: Classifier, images: jax.Array, first: int) -> jax.Array:
    """What the frozen part computes once per episode: the images (``first < 0``: everything
    moves), the tokens entering block ``first``, or pooled features (``first > depth``: head only)."""
    backbone = model.backbone
    if first < 0:
        return images
    tokens = backbone.embed(images)
    for i in range(min(first, backbone.cfg.depth)):
        tokens = backbone.blocks[i](tokens)
    return backbone.pool(tokens) if first > backbone.cfg.depth else tokens


def _suffix(model: Classifier, cached: jax.Array, first: int, key: jax.Array | None) -> jax.Array:
    """Logits from what :func:`_prefix` cached."""
    backbone = model.backbone
    if first < 0:
        return model(cached, key=key)
    if first > backbone.cfg.depth:
        return model.head(cached)
    return model.head(backbone.pool(backbone.run_blocks(cached, first, key=key)))


def _embed_views(cfg: ViTConfig, images: jax.Array) -> jax.Array:
    """Clean views: ``bool (n, 105, 105)`` -> ``float32 (n, size, size)``."""
    return jax.vmap(lambda im: downsample(ink_levels(im), cfg.image_size))(images)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "ft"))
def fit_episode(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    support: jax.Array,
    key: jax.Array,
    *,
    cfg: ViTConfig,
    ft: FinetuneConfig,
) -> tuple[nnx.State, jax.Array]:
    """Adapt to one episode: support ``bool (n_way, k, 105, 105)`` -> (classifier params with an
    ``n_way`` head, training losses ``(steps,)``). ``params`` must already have an ``n_way``
    head (its values are replaced by the class-mean embeddings). Compiled once per episode
    shape and config."""
    TRACE_COUNTS["fit_episode"] += 1
    n_way, k = support.shape[:2]
    flat = support.reshape(n_way * k, IMAGE_SIZE, IMAGE_SIZE)
    model = nnx.merge(graphdef, params)
    levels = jax.vmap(ink_levels)(flat)  # (n_way * k, 4, 35, 35)
    clean = jax.vmap(functools.partial(downsample, size=cfg.image_size))(levels)
    means = model.backbone(clean).reshape(n_way, k, cfg.width).mean(axis=1)
    model.head.weight[...] = means
    model.head.log_scale[...] = jnp.asarray(np.log(ft.head_scale), jnp.float32)
    if ft.steps == 0:
        return nnx.state(model), jnp.zeros((0,))

    # The pool: views x images (first view clean), passed once through the frozen prefix.
    first = _first_trained_block(cfg, ft)
    k_views, k_steps = jax.random.split(key)
    view_keys = jax.random.split(k_views, (ft.views - 1) * n_way * k)
    augmented = jax.vmap(lambda kk, lv: augment(kk, lv, ft.augment, cfg.image_size))(
        view_keys, jnp.repeat(levels, ft.views - 1, axis=0)
    )
    pool_images = jnp.concatenate([clean, augmented])
    labels = jnp.arange(n_way).repeat(k)
    pool_labels = jnp.concatenate([labels, labels.repeat(ft.views - 1)])
    cached = _prefix(model, pool_images, first)
    batch = min(ft.batch, pool_images.shape[0])

    graphdef2, params0 = nnx.split(model)
    tags = _labels_for(cfg, params0, first)
    schedule = optax.cosine_decay_schedule(ft.lr, ft.steps)
    head_schedule = optax.cosine_decay_schedule(ft.lr * ft.head_lr_mult, ft.steps)
    opt = optax.multi_transform(
        {
            "body": optax.adamw(schedule, weight_decay=ft.weight_decay),
            "head": optax.adamw(head_schedule, weight_decay=0.0),
            "frozen": optax.set_to_zero(),
        },
        tags,
    )

    def loss_fn(p, idx, drop_key):
        logits = _suffix(nnx.merge(graphdef2, p), cached[idx], first, drop_key)
        targets = optax.smooth_labels(jax.nn.one_hot(pool_labels[idx], n_way), ft.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets).mean()

    def step(carry, step_key):
        p, opt_state = carry
        k_idx, k_drop = jax.random.split(step_key)
        idx = jax.random.choice(k_idx, pool_images.shape[0], (batch,), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(p, idx, k_drop if ft.dropout else None)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    (params_out, _), losses = jax.lax.scan(
        step, (params0, opt.init(params0)), jax.random.split(k_steps, ft.steps)
    )
    return params_out, losses


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"))
def score_queries(
    graphdef: nnx.GraphDef, params: nnx.State, queries: jax.Array, *, cfg: ViTConfig
) -> jax.Array:
    """Queries ``bool (n_query, 105, 105)`` -> logits ``(n_query, n_way)``."""
    TRACE_COUNTS["score_queries"] += 1
    return nnx.merge(graphdef, params)(_embed_views(cfg, queries))


class EpisodeState(NamedTuple):
    """What ``fit`` returns: the adapted classifier and its fine-tuning losses ``(steps,)``."""

    n_way: int
    params: nnx.State
    losses: jax.Array


class ViTContender:
    """A ViT contender (see module docstring); state = adapted classifier params."""

    def __init__(
        self,
        name: str,
        cfg: ViTConfig,
        backbone: nnx.State,
        ft: FinetuneConfig,
        config: dict[str, Any],
    ):
        self.name = name
        self.cfg = cfg
        self.backbone = backbone  # params of the ViT backbone (pretrained or random)
        self.ft = ft
        self.config = config
        _first_trained_block(cfg, ft)  # validates train_blocks
        self._graphdefs: dict[int, tuple[nnx.GraphDef, nnx.State]] = {}

    def _template(self, n_way: int) -> tuple[nnx.GraphDef, nnx.State]:
        if n_way not in self._graphdefs:
            graphdef, params = init_classifier(self.cfg, n_way)
            params["backbone"] = self.backbone
            self._graphdefs[n_way] = (graphdef, params)
        return self._graphdefs[n_way]

    def fit(self, support: np.ndarray, *, key: jax.Array) -> EpisodeState:
        support = np.asarray(support)
        if support.ndim != 4 or support.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"support must be (n_way, k_shot, 105, 105), got {support.shape}")
        n_way = support.shape[0]
        graphdef, params = self._template(n_way)
        params, losses = fit_episode(
            graphdef, params, jnp.asarray(support, bool), key, cfg=self.cfg, ft=self.ft
        )
        return EpisodeState(n_way, params, losses)

    def scores(
        self, state: EpisodeState, queries: np.ndarray, *, key: jax.Array | None = None
    ) -> np.ndarray:
        graphdef, _ = self._template(state.n_way)
        return np.asarray(
            score_queries(graphdef, state.params, jnp.asarray(queries, bool), cfg=self.cfg)
        )


def _pretrained(
    checkpoint: str | os.PathLike | None, model: str
) -> tuple[ViTConfig, nnx.State, dict, str]:
    """The architecture, backbone parameters, config and path of ``checkpoint``, by default the
    shipped small1 checkpoint."""
    if checkpoint is None:
        from conceptlearn.shipped import default_checkpoint_path

        checkpoint = default_checkpoint_path()
    cfg, _, params, config = load_checkpoint(checkpoint)
    return cfg, params["backbone"], config, str(checkpoint)


def _pretrain_provenance(checkpoint, config: dict[str, Any]) -> dict[str, Any]:
    """Which pretrained checkpoint a contender starts from, for its results ``config``."""
    return {
        "checkpoint": str(checkpoint),
        "pretrain": config.get("train", {}),
        "pretrain_step": config.get("step"),
    }


def _describe(
    cfg: ViTConfig, ft: FinetuneConfig, seed: int, extra: dict[str, Any]
) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "vit": dataclasses.asdict(cfg),
                "finetune": dataclasses.asdict(ft),
                "seed": seed,
                **extra,
            }
        )
    )


FINETUNE_DEFAULT = FinetuneConfig()
SCRATCH_DEFAULT = FinetuneConfig(
    steps=150, lr=1e-3, train_blocks="all", views=8, batch=64, weight_decay=1e-4
)


def make_finetune_contender(
    *,
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
) -> ViTContender:
    """``vit``: pretrained backbone, head from class means, fine-tuned on the support set."""
    cfg, backbone, config, checkpoint = _pretrained(checkpoint, "vit")
    ft = _replace(FINETUNE_DEFAULT, overrides or {}, "vit")
    if quick:
        ft = dataclasses.replace(ft, steps=max(1, ft.steps // 4))
    extra = _pretrain_provenance(checkpoint, config)
    return ViTContender("vit", cfg, backbone, ft, _describe(cfg, ft, seed, extra))


def make_proto_contender(
    *,
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
) -> ViTContender:
    """``vit-proto``: pretrained embedding, nearest class mean (cosine), no fine-tuning."""
    cfg, backbone, config, checkpoint = _pretrained(checkpoint, "vit-proto")
    ft = _replace(FinetuneConfig(steps=0), overrides or {}, "vit-proto")
    if ft.steps != 0:
        raise ValueError("vit-proto does not fine-tune (steps must be 0); use --model vit")
    extra = _pretrain_provenance(checkpoint, config)
    return ViTContender("vit-proto", cfg, backbone, ft, _describe(cfg, ft, seed, extra))


def make_scratch_contender(
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
    checkpoint: str | os.PathLike | None = None,
) -> ViTContender:
    """``vit-scratch``: the architecture (``preset`` override: cpu | gpu | tiny, default that of
    ``checkpoint`` if given, else cpu) from random init ``seed``, trained on the support alone."""
    overrides = dict(overrides or {})
    preset = overrides.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        cfg = PRESETS[preset]
    elif checkpoint is not None:
        cfg = ViTConfig(**read_config(checkpoint)["model"])
    else:
        cfg = PRESETS["cpu"]
    ft = _replace(SCRATCH_DEFAULT, overrides, "vit-scratch")
    if quick:
        ft = dataclasses.replace(ft, steps=max(1, ft.steps // 4))
    _, params = init_classifier(cfg, 1, seed)
    return ViTContender("vit-scratch", cfg, params["backbone"], ft, _describe(cfg, ft, seed, {}))
