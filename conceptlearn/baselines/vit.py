"""The comparator: a Vision Transformer (flax.nnx) pretrained on background characters and
adapted per episode; three contenders for the harness (conceptlearn/contenders.py).

- ``vit``: pretrained backbone; a new cosine head whose class weights start at the class-mean
  support embeddings; then ``steps`` AdamW steps on augmented support views, moving all weights,
  the last ``train_blocks`` blocks + head, or the head alone.
- ``vit-proto``: pretrained backbone, nearest class mean (cosine), no fine-tuning.
- ``vit-scratch``: the same architecture from random initialisation, trained on the support alone.

Speed: one episode's whole fit (augment -> frozen prefix once -> ``lax.scan`` over steps) is one
jitted call per episode shape; ``TRACE_COUNTS`` counts traces so tests can prove there is no
retrace across episodes. Checkpoints are ``params.npz`` (flat parameter pytree) + ``config.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from conceptlearn.datasets.omniglot import IMAGE_SIZE

# How many times each jitted function has been traced (tests assert no retrace).
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not match its config."""


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ViTConfig:
    """Architecture. Images are resampled from 105 px to ``image_size`` before patching."""

    image_size: int = 28  # input resolution (px) after downsampling 105 px
    patch_size: int = 4  # patch side (px); image_size must be a multiple
    depth: int = 4  # transformer blocks
    width: int = 96  # token dimension
    heads: int = 4  # attention heads; width must be a multiple
    mlp_ratio: float = 2.0  # MLP hidden size / width
    dropout: float = 0.0  # dropout on attention output and MLP output (training only)
    # Convolutional stem (Xiao et al. 2021): channels of 3x3 stride-2 convs that turn the image
    # into the token grid (2 ** len(stem) must equal patch_size); () = linear patch embedding.
    stem: tuple[int, ...] = (32, 64)

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        object.__setattr__(self, "stem", tuple(int(c) for c in self.stem))  # JSON lists -> tuple
        if self.stem and 2 ** len(self.stem) != self.patch_size:
            raise ValueError(
                f"a stem of {len(self.stem)} stride-2 convs makes patches of "
                f"{2 ** len(self.stem)} px, not patch_size {self.patch_size}"
            )

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


PRESETS: dict[str, ViTConfig] = {
    "cpu": ViTConfig(),
    "gpu": ViTConfig(
        image_size=32,  # (the ink levels are 35 px: larger inputs would only upsample)
        patch_size=4,
        depth=8,
        width=256,
        heads=8,
        mlp_ratio=4.0,
        dropout=0.1,
        stem=(64, 128),
    ),
    "tiny": ViTConfig(
        image_size=16, patch_size=4, depth=1, width=16, heads=2, mlp_ratio=2.0, stem=()
    ),
}


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine (output -> input map), stroke thickness and translation; ``strength``
    scales every range (0 = no augmentation)."""

    strength: float = 1.0
    rotate_deg: float = 10.0  # max |rotation|
    scale: float = 0.15  # log-uniform zoom in [exp(-s), exp(s)]
    aspect: float = 0.1  # log-uniform x/y aspect change
    shear: float = 0.15  # max |shear|
    translate_px: float = 6.0  # max |shift| in 105-px units
    thickness_p: tuple[float, float, float, float] = (
        0.15,
        0.45,
        0.3,
        0.1,
    )  # P(thin, same, +1, +2 px)


# --------------------------------------------------------------------------- images

LEVEL_SIZE = 35  # the 105 px image is area-downsampled 3x to this size once (exact)


def _max_pool(ink: jax.Array, size: int) -> jax.Array:
    return jax.lax.reduce_window(ink, -jnp.inf, jax.lax.max, (size, size), (1, 1), "SAME")


def ink_levels(image: jax.Array) -> jax.Array:
    """``bool (105, 105)`` -> ``float32 (4, 35, 35)``: ink coverage of the thinned, same, +1 px and
    +2 px stroke variants, each the exact 3x3 area mean. Computed once per image (pretraining
    precomputes the whole background), so augmentation samples a 35 px map, not a 105 px one."""
    ink = image.astype(jnp.float32)
    thin = -_max_pool(-ink, 3)
    thin = jnp.where(thin.sum() > 0.25 * ink.sum(), thin, ink)  # never erase a character
    variants = jnp.stack([thin, ink, _max_pool(ink, 3), _max_pool(ink, 5)])
    return variants.reshape(4, LEVEL_SIZE, 3, LEVEL_SIZE, 3).mean(axis=(2, 4))


def render(
    levels: jax.Array, matrix: jax.Array, shift: jax.Array, thickness: jax.Array, size: int
) -> jax.Array:
    """Resample one image to ``size`` px through an affine map, anti-aliased.

    levels ``float (4, 35, 35)`` from :func:`ink_levels`; matrix ``(2, 2)`` maps output offsets
    from the centre to input offsets (identity = plain downsampling); shift ``(2,)`` in 105-px
    units (row, col); thickness int in 0..3 (thin, same, +1, +2). Bilinear, 2x2 supersampled.
    Returns ``float32 (size, size)`` ink coverage in [0, 1].
    """
    ink = levels[thickness]
    sub = 2  # supersamples per output pixel and axis
    n = size * sub
    centre = (LEVEL_SIZE - 1) / 2
    grid = (jnp.arange(n, dtype=jnp.float32) + 0.5) * (LEVEL_SIZE / n) - 0.5 - centre
    rr, cc = jnp.meshgrid(grid, grid, indexing="ij")
    offsets = jnp.stack([rr.ravel(), cc.ravel()])  # (2, n*n)
    coords = matrix @ offsets + (shift * (LEVEL_SIZE / IMAGE_SIZE) + centre)[:, None]
    samples = jax.scipy.ndimage.map_coordinates(
        ink, [coords[0], coords[1]], order=1, mode="constant", cval=0.0
    )
    return samples.reshape(size, sub, size, sub).mean(axis=(1, 3))


def random_transform(key: jax.Array, aug: AugmentConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw one augmentation: ``(matrix (2, 2), shift (2,), thickness int)``."""
    k_rot, k_scale, k_aspect, k_shear, k_shift, k_thick = jax.random.split(key, 6)
    s = aug.strength
    angle = jnp.deg2rad(aug.rotate_deg * s) * jax.random.uniform(k_rot, minval=-1.0, maxval=1.0)
    zoom = jnp.exp(aug.scale * s * jax.random.uniform(k_scale, minval=-1.0, maxval=1.0))
    aspect = jnp.exp(aug.aspect * s * jax.random.uniform(k_aspect, minval=-1.0, maxval=1.0))
    shear = aug.shear * s * jax.random.uniform(k_shear, minval=-1.0, maxval=1.0)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
    shear_m = jnp.stack(
        [
            jnp.stack([jnp.ones_like(shear), shear]),
            jnp.stack([jnp.zeros_like(shear), jnp.ones_like(shear)]),
        ]
    )
    scale_m = jnp.diag(jnp.stack([zoom * aspect, zoom / aspect]))
    shift = aug.translate_px * s * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
    p = jnp.asarray(aug.thickness_p, jnp.float32)
    p = jnp.where(s > 0, p, jnp.asarray([0.0, 1.0, 0.0, 0.0], jnp.float32))
    thickness = jax.random.choice(k_thick, 4, p=p / p.sum())
    return rotation @ shear_m @ scale_m, shift, thickness


def augment(
    key: jax.Array, levels: jax.Array, aug: AugmentConfig, size: int, rot90: jax.Array | int = 0
) -> jax.Array:
    """One random view of an image's ``levels`` ``float (4, 35, 35)`` (:func:`ink_levels`) ->
    ``float32 (size, size)``, after an optional exact rotation by ``rot90`` quarter turns."""
    matrix, shift, thickness = random_transform(key, aug)
    quarter = jnp.asarray(rot90, jnp.float32) * (jnp.pi / 2)
    c, s = jnp.round(jnp.cos(quarter)), jnp.round(jnp.sin(quarter))
    turn = jnp.stack([jnp.stack([c, s]), jnp.stack([-s, c])])  # as np.rot90(image, rot90)
    return render(levels, turn @ matrix, shift, thickness, size)


def downsample(levels: jax.Array, size: int) -> jax.Array:
    """The clean view: ``float (4, 35, 35)`` levels -> ``float32 (size, size)``."""
    return render(levels, jnp.eye(2), jnp.zeros(2), jnp.asarray(1), size)


# --------------------------------------------------------------------------- model


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class Block(nnx.Module):
    """Pre-norm transformer block on ``(batch, tokens, width)``."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        hidden = int(round(cfg.width * cfg.mlp_ratio))
        self.heads = cfg.heads
        self.rate = cfg.dropout
        self.norm1 = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.qkv = nnx.Linear(cfg.width, 3 * cfg.width, rngs=rngs)
        self.proj = nnx.Linear(cfg.width, cfg.width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.fc1 = nnx.Linear(cfg.width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, cfg.width, rngs=rngs)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        b, t, w = x.shape
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        q, k, v = jnp.split(
            self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, w // self.heads), 3, axis=2
        )
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (b, t, heads, dh)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(w // self.heads)
        attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(b, t, w)
        x = x + _dropout(self.proj(attn), self.rate, k1)
        return x + _dropout(self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)))), self.rate, k2)


class ViT(nnx.Module):
    """Backbone: ``float (batch, size, size)`` -> features ``(batch, width)`` (mean-pooled tokens)."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        channels = (1, *cfg.stem)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
                for a, b in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        fan_in = cfg.stem[-1] if cfg.stem else cfg.patch_size**2
        self.patch = nnx.Linear(fan_in, cfg.width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.n_patches, cfg.width)))
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

    def embed(self, images: jax.Array) -> jax.Array:
        """``(batch, size, size)`` -> tokens ``(batch, n_patches, width)``."""
        b, p = images.shape[0], self.cfg.patch_size
        g = self.cfg.image_size // p
        # Ink 1 on background 0, NOT centred: with 2x-1 the ~90% blank patches all became one
        # large identical token that swamped the mean-pooled feature and stalled pretraining
        # (loss 6.31 -> 6.16 vs 6.25 -> 5.57 in 150 steps; docs/results/vit.md). A blank patch
        # now contributes only the embedding bias (tested).
        x = images
        if self.cfg.stem:
            x = x[..., None]  # (b, size, size, 1)
            for conv in self.convs:
                x = jax.nn.gelu(conv(x))  # halves the grid
            patches = x.reshape(b, g * g, x.shape[-1])
        else:
            patches = x.reshape(b, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(b, g * g, p * p)
        return self.patch(patches) + self.pos[...][None]

    def run_blocks(
        self, tokens: jax.Array, start: int = 0, *, key: jax.Array | None = None
    ) -> jax.Array:
        """Blocks ``start..depth-1`` on ``(batch, n_patches, width)``."""
        for i in range(start, self.cfg.depth):
            tokens = self.blocks[i](tokens, key=None if key is None else jax.random.fold_in(key, i))
        return tokens

    def pool(self, tokens: jax.Array) -> jax.Array:
        """``(batch, n_patches, width)`` -> ``(batch, width)``."""
        return self.norm(tokens).mean(axis=1)

    def __call__(self, images: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.pool(self.run_blocks(self.embed(images), key=key))


def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class CosineHead(nnx.Module):
    """Logits ``scale * cos(feature, class weight)``: ``(batch, width)`` -> ``(batch, n_classes)``."""

    def __init__(self, width: int, n_classes: int, *, rngs: nnx.Rngs, scale: float = 10.0):
        self.weight = nnx.Param(jax.random.normal(rngs.params(), (n_classes, width)))
        self.log_scale = nnx.Param(jnp.asarray(np.log(scale), jnp.float32))

    def __call__(self, features: jax.Array) -> jax.Array:
        return jnp.exp(self.log_scale[...]) * (
            _normalize(features) @ _normalize(self.weight[...]).T
        )


class LinearHead(nnx.Module):
    """Logits ``weight @ feature + bias``, zero-initialised: ``(batch, width)`` ->
    ``(batch, n_classes)``."""

    def __init__(self, width: int, n_classes: int):
        self.weight = nnx.Param(jnp.zeros((n_classes, width)))
        self.bias = nnx.Param(jnp.zeros((n_classes,)))

    def __call__(self, features: jax.Array) -> jax.Array:
        return features @ self.weight[...].T + self.bias[...][None]


HEADS = ("cosine", "linear")


class Classifier(nnx.Module):
    """Backbone + head: ``(batch, size, size)`` -> logits ``(batch, n_classes)``. Episodes use
    the cosine head; pretraining may use either (``head``)."""

    def __init__(
        self,
        cfg: ViTConfig,
        n_classes: int,
        *,
        rngs: nnx.Rngs,
        scale: float = 10.0,
        head: str = "cosine",
    ):
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
        self.backbone = ViT(cfg, rngs=rngs)
        self.head = (
            CosineHead(cfg.width, n_classes, rngs=rngs, scale=scale)
            if head == "cosine"
            else LinearHead(cfg.width, n_classes)
        )

    def __call__(self, images: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.head(self.backbone(images, key=key))


def init_classifier(
    cfg: ViTConfig, n_classes: int, seed: int = 0, scale: float = 10.0, head: str = "cosine"
) -> tuple[nnx.GraphDef, nnx.State]:
    """A randomly initialised classifier (``head`` "cosine" with temperature ``scale``, or
    "linear") as ``(graphdef, params)``."""
    return nnx.split(Classifier(cfg, n_classes, rngs=nnx.Rngs(seed), scale=scale, head=head))


# --------------------------------------------------------------------------- checkpoints


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def flatten_tree(tree) -> dict[str, np.ndarray]:
    """A pytree -> ``{"path/to/leaf": array}``."""
    return {_path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_like(template, arrays: dict[str, np.ndarray], where: str):
    """Fill ``template``'s structure from ``arrays`` (from :func:`flatten_tree`); a missing leaf
    or a shape/dtype mismatch raises :class:`CheckpointError` naming ``where``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, ref in leaves:
        name = _path_name(path)
        if name not in arrays:
            raise CheckpointError(
                f"{where}: missing array {name!r} (checkpoint does not match its config)"
            )
        value = arrays[name]
        if value.shape != np.shape(ref) or value.dtype != np.asarray(ref).dtype:
            raise CheckpointError(
                f"{where}: array {name!r} has shape {value.shape} {value.dtype}, "
                f"expected {np.shape(ref)} {np.asarray(ref).dtype}"
            )
        out.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, out)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` without pickle; any unreadable file raises :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise CheckpointError(
            f"{path}: corrupt checkpoint file ({type(err).__name__}: {err})"
        ) from err


def save_checkpoint(
    folder: str | os.PathLike, cfg: ViTConfig, params: nnx.State, meta: dict[str, Any]
) -> None:
    """Write ``folder/params.npz`` (classifier parameters) and ``folder/config.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_npz(folder / "params.npz", flatten_tree(params))
    n_classes = int(np.shape(params["head"]["weight"][...])[0])
    head = "cosine" if "log_scale" in params["head"] else "linear"
    config = {"model": dataclasses.asdict(cfg), "n_classes": n_classes, "head": head, **meta}
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, folder / "config.json")


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/config.json`` as a dict, with clear errors."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: not found (is {folder} a pretrain-vit checkpoint folder?)")
    try:
        config = json.loads(path.read_text())
        ViTConfig(**config["model"])
        int(config["n_classes"])
        if config.get("head", "cosine") not in HEADS:
            raise ValueError(f"unknown head {config['head']!r}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: corrupt checkpoint config ({type(err).__name__}: {err})"
        ) from err
    return config


def load_checkpoint(
    folder: str | os.PathLike,
) -> tuple[ViTConfig, nnx.GraphDef, nnx.State, dict[str, Any]]:
    """Read a checkpoint folder -> ``(cfg, graphdef, params, config dict)``."""
    config = read_config(folder)
    cfg = ViTConfig(**config["model"])
    graphdef, template = init_classifier(
        cfg, int(config["n_classes"]), head=config.get("head", "cosine")
    )
    path = Path(folder) / "params.npz"
    params = unflatten_like(template, read_npz(path), str(path))
    return cfg, graphdef, params, config


# --------------------------------------------------------------------------- per-episode fit


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


# --------------------------------------------------------------------------- contenders


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
) -> tuple[ViTConfig, nnx.State, dict]:
    if checkpoint is None:
        raise ValueError(
            f"model {model!r} needs --checkpoint DIR (made by `conceptlearn pretrain-vit`)"
        )
    cfg, _, params, config = load_checkpoint(checkpoint)
    return cfg, params["backbone"], config


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
    cfg, backbone, config = _pretrained(checkpoint, "vit")
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
    cfg, backbone, config = _pretrained(checkpoint, "vit-proto")
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
