"""Helpers of the framework-source tests: a tiny fake ``train_rpgan.py`` run directory written per
the run-directory contract (notes/COMMON.md), and small flow-labelled data sets in the GoPro layout.

Everything is tiny (G and SEN of ``width_divisor`` 16) and random; nothing is downloaded.
"""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import tensorflow as tf

import models
from training.tracking import track_layer_lists

TINY_G = {"width_divisor": 16}
TINY_SEN = {"width_divisor": 16, "num_stacks": 1}  # one stack: traces in half the time
FRAMEWORK = {"levels": 2, "betas": [0.02, 0.1], "cg_tol": 1e-5, "cg_max_iter": 20}


def build_tiny_networks(seed=0):
    """(G, SEN), tiny and built (dynamic H, W); random weights from ``seed``."""
    keras.utils.set_random_seed(seed)
    generator = models.build_prior("rpgan_generator", **TINY_G)
    generator.build((None, None, None, 6))
    sen = models.build_flow_estimator("sen", **TINY_SEN)
    sen.build((None, None, None, 3))
    return generator, sen


def write_rpgan_run(
    run,
    generator=None,
    sen=None,
    checkpoint=True,
    final=True,
    sen_weights=True,
    framework=None,
):
    """Writes a fake RP-GAN run into ``run`` (a ``pathlib.Path``); returns (run, G, SEN).

    ``run_config.json`` ("model" rpgan_generator, "sen" and "framework" entries),
    ``sen.weights.h5`` (unless ``sen_weights`` is False), ``checkpoints/ckpt-1`` with G under
    ``model`` (tracked as the training loop does) and ``final.weights.h5``.
    """
    if generator is None or sen is None:
        generator, sen = build_tiny_networks()
    run.mkdir(parents=True, exist_ok=True)
    config = {
        "model": "rpgan_generator",
        "model_kwargs": TINY_G,
        "paper": "rpgan",
        "config": {},
        "sen": {
            "model": "sen",
            "model_kwargs": TINY_SEN,
            "weights": "sen.weights.h5",
            "source": "/nowhere/sen",
            "digest": "0" * 64,
            "u_max": 23,
        },
        "framework": dict(FRAMEWORK if framework is None else framework),
    }
    (run / "run_config.json").write_text(json.dumps(config))
    if sen_weights:
        sen.save_weights(str(run / "sen.weights.h5"))
    if checkpoint:
        track_layer_lists(generator)
        saved = tf.train.Checkpoint(model=generator, step=tf.Variable(3, dtype=tf.int64))
        tf.train.CheckpointManager(saved, str(run / "checkpoints"), max_to_keep=2).save()
    if final:
        generator.save_weights(str(run / "final.weights.h5"))
    return run, generator, sen


def write_flow_set(root, sizes=((40, 52), (37, 53)), split="test", seed=0, labels=True):
    """A GoPro-layout set ``root/split/SEQ0/{blur,sharp,flow}/<frame>`` of smooth random images;
    ``flow/<frame>.npy`` are float32 (H, W, 2) uv_half labels of small integer flows (the blur
    is a plain box blur, not the label's: the tests need labels, not a faithful data set)."""
    rng = np.random.default_rng(seed)
    seq = root / split / "SEQ0"
    for kind in ("blur", "sharp", "flow") if labels else ("blur", "sharp"):
        (seq / kind).mkdir(parents=True, exist_ok=True)
    for i, (height, width) in enumerate(sizes):
        sharp = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (5, 5), 1.5)
        cv2.imwrite(str(seq / "sharp" / f"{i:06d}.png"), sharp)
        cv2.imwrite(str(seq / "blur" / f"{i:06d}.png"), cv2.blur(sharp, (5, 1)))
        if labels:
            flow = np.zeros((height, width, 2), np.float32)
            flow[..., 0] = rng.integers(1, 6)
            flow[..., 1] = rng.integers(-3, 4)
            np.save(seq / "flow" / f"{i:06d}.npy", flow)
    return root
