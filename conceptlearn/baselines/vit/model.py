"""The ViT comparator's architecture (flax.nnx): its config and presets, the backbone (an
optional convolutional stem, pre-norm transformer blocks, mean-pooled tokens) and the
classifier heads: ``float (batch, size, size)`` images -> logits ``(batch, n_classes)``."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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
