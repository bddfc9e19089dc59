"""The pair batch sharded over several devices scores as on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    from scipy import ndimage
    from conceptlearn.inference import classify
    from conceptlearn.inference.config import preset
    from conceptlearn.inference.fit import parse_images

    cfg = preset(overrides=dict(max_candidates=2, max_strokes=3, n_points=8, parse_steps=2,
                                parse_coarse_steps=1, refit_steps=4, refit_coarse_steps=3,
                                n_samples=16, pair_chunk=6))
    images = np.zeros((3, 105, 105), bool)
    images[0, 50, 20:85] = True
    images[1, 20:85, 52] = True
    images[2, 30:80, 30:80] = np.eye(50, dtype=bool)
    images = np.stack([ndimage.binary_dilation(im, iterations=2) for im in images])
    parses = parse_images(images, cfg)
    c_idx, q_idx = np.array([0, 1, 2, 0, 1, 2, 0]), np.array([1, 2, 0, 0, 1, 2, 2])

    def run():
        return classify.score_pairs(parses, images, parses, images, c_idx, q_idx, cfg,
                                    n_steps=cfg.refit_steps, n_coarse=cfg.refit_coarse_steps)

    mesh = classify._mesh()
    sharded = run()
    classify._mesh = lambda: None
    single = run()
    print(json.dumps({
        "devices": jax.device_count(),
        "mesh": None if mesh is None else mesh.size,
        "sharded": np.concatenate([sharded.forward, sharded.backward]).tolist(),
        "single": np.concatenate([single.forward, single.backward]).tolist(),
    }))
    """
)


def test_sharded_and_single_device_pair_scores_agree():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["mesh"] == 2
    import numpy as np

    sharded, single = np.asarray(out["sharded"]), np.asarray(out["single"])
    assert sharded.shape == (14, 2) and np.all(np.isfinite(sharded))
    # 20 Adam steps (and the better of two fits) carry the rounding differences of the two
    # compiled programs along: a few 1e-4 of a score, far below any class margin
    np.testing.assert_allclose(sharded, single, rtol=1e-3, atol=1e-2)
