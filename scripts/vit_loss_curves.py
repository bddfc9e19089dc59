"""Short pretraining loss curves of ViT variants on small1 (the diagnosis in docs/results/vit.md).

python scripts/vit_loss_curves.py NAME:key=val,... [NAME:key=val,...]

keys: polarity (01 = the model's input, ink 1 on 0; pm = the old 2x-1 input), aug (strength),
lr, head (linear | cosine), stem (e.g. 32-64, or none), width, depth, ls, batch, steps,
rot (1 | 0), loss (classify | proto), ways. Prints the mean batch loss over each sixth of the
steps and the wall time.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

from conceptlearn.baselines import vit
from conceptlearn.baselines.vit import pretraining as vt


def main(specs: list[str]) -> None:
    data = vt.background_levels(jnp.asarray(vt.load_background("small1")))
    original = vit.ViT.embed
    for spec in specs:
        name, _, kv = spec.partition(":")
        o = dict(x.split("=") for x in kv.split(",") if x)
        polarity = o.get("polarity", "01")

        def embed(self, images, polarity=polarity):
            return original(self, 2.0 * images - 1.0 if polarity == "pm" else images)

        vit.ViT.embed = embed
        stem = o.get("stem", "32-64")
        cfg = vit.ViTConfig(
            stem=() if stem == "none" else tuple(int(c) for c in stem.split("-")),
            width=int(o.get("width", 96)),
            depth=int(o.get("depth", 4)),
        )
        tcfg = vt.TrainConfig(
            batch=int(o.get("batch", 128)),
            steps=int(o.get("steps", 150)),
            lr=float(o.get("lr", 3e-3)),
            label_smoothing=float(o.get("ls", 0)),
            warmup_frac=0.1,
            loss=o.get("loss", "classify"),
            ways=int(o.get("ways", 64)),
            head=o.get("head", "linear"),
            augment=vit.AugmentConfig(strength=float(o.get("aug", 1.0))),
            rot_classes=o.get("rot", "1") == "1",
        )
        head, n_out = vt.head_of(tcfg, data.shape[0])
        graphdef, params = vit.init_classifier(cfg, n_out, 0, tcfg.head_scale, head)
        step, opt = vt.make_train_step(graphdef, cfg, tcfg, n_out)
        opt_state, key, losses = opt.init(params), jax.random.key(0), []
        start = time.time()
        for _ in range(tcfg.steps):
            key, sub = jax.random.split(key)
            params, opt_state, loss = step(params, opt_state, data, sub)
            losses.append(float(loss))
        q = tcfg.steps // 6
        curve = [round(sum(losses[i : i + q]) / q, 3) for i in range(0, 6 * q, q)]
        print(name, kv, curve, round(time.time() - start), "s", flush=True)
    vit.ViT.embed = original


if __name__ == "__main__":
    main(sys.argv[1:])
