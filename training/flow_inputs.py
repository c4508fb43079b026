"""Motion-flow training inputs (SEN, sen_rpgan.md section 5): the training examples, per-epoch
datasets, the validation set of flow labels and its baselines.

Data sets are the ``GOPRO_Large``-layout flow sets of :mod:`data.flow_pipeline`
(``<root>/<split>/<sequence>/{blur,flow}/<frame>.{png,npy}``, labels float32 (H, W, 2) ``uv_half``
pixels). Epoch ``e`` is :func:`data.flow_pipeline.flow_dataset` with seed ``seed + e`` and no
repeat, so a run resumed mid-epoch sees the batches of an uninterrupted one (as the image
pipeline's :func:`training.inputs.epoch_dataset_fn`). No flips, rotations or noise (register #27).

Validation: the first ``num_images`` examples of ``split`` (default the test split: the flow sets
have no validation split, and the label says so), centre-cropped or full size, decoded at start-up
(a bad file stops the command before step 1 with the ``data.DataError`` naming it). The scores are
flow MSEs (:class:`training.steps.sen_step.SENTrainStep`), and the baselines a model must beat
are logged once: the **zero flow** (MSE = mean label^2) and the **training-mean flow** (one (u, v)
vector, the mean label of the training split, for every pixel).

:func:`flow_data` is SEN's ``data_factory`` of :func:`training.runner.build_trainer`: the flow set
of a :class:`training.config.TrainConfig` (:func:`training.sen_run.flow_root`) as
:class:`training.runner.TrainingData`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from training.inputs import centre_crop, per_epoch
from training.loop import ValidationSet


def flow_data(config):
    """``config`` -> :class:`training.runner.TrainingData` of its flow set: the training examples,
    per-epoch datasets (``config.data``'s batch, crop and seed), the lazy validation set and the
    ``run_config.json`` description (root, example count, training-mean flow)."""
    from data import flow_pipeline
    from training import runner, sen_run

    data = config.data
    root = sen_run.flow_root(config)
    examples = train_examples(root)
    mean = flow_pipeline.mean_flow(root, "train")
    return runner.TrainingData(
        size=len(examples),
        epoch_datasets=epoch_dataset_fn(
            root, batch_size=data.batch_size, crop_size=data.crop_size, seed=data.seed
        ),
        validation=lambda: load_validation(
            data.val_data_dir or root,
            split=data.val_split,
            num_images=data.val_images,
            crop=data.val_crop,
            mean_flow=mean,
            explicit_dir=bool(data.val_data_dir),
        ),
        description={
            "train": root,
            "train_examples": len(examples),
            "training_mean_flow": [round(float(x), 6) for x in mean],
        },
        unit="examples",
    )


def train_examples(root) -> list:
    """Sorted (blur PNG, flow .npy) paths of ``root/train``; ``data.DataError`` names a problem."""
    from data import flow_pipeline

    return flow_pipeline.flow_examples(root, "train")


def epoch_dataset_fn(root, *, batch_size, crop_size, seed=0):
    """``epoch -> tf.data.Dataset`` of (blur, flow) global batches of one epoch (drop remainder),
    random ``crop_size`` windows (None: whole images), seeded ``seed + epoch`` (``seed < 0``:
    fresh randomness each epoch)."""
    from data import flow_pipeline

    def build(dataset_seed):
        return flow_pipeline.flow_dataset(
            root,
            "train",
            batch_size,
            crop_size=crop_size,
            shuffle=True,
            seed=dataset_seed,
            repeat=False,
        )

    return per_epoch(build, seed)


@dataclasses.dataclass
class FlowValidationSet(ValidationSet):
    """Validation pairs ``(name, blur uint8 (H, W, 3), flow float32 (H, W, 2))`` and the
    training-mean flow of the mean-flow baseline."""

    mean_flow: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))

    def tensors(self, index):
        _, blur, flow = self.pairs[index]
        return tf.constant(blur[None], tf.float32) / 255.0, tf.constant(flow[None], tf.float32)

    def baselines(self) -> dict:
        """Flow MSE of the zero flow and of the training-mean flow, averaged over the images."""
        mean = np.asarray(self.mean_flow, np.float64)
        zero = [float(np.mean(np.square(flow, dtype=np.float64))) for _, _, flow in self.pairs]
        centred = [float(np.mean(np.square(flow - mean))) for _, _, flow in self.pairs]
        return {"zero_flow_mse": float(np.mean(zero)), "mean_flow_mse": float(np.mean(centred))}

    def baseline_text(self, baselines) -> str:
        u, v = (float(x) for x in self.mean_flow)
        return (
            f"zero flow: {baselines['zero_flow_mse']:.4f}, training-mean flow ({u:.2f}, {v:.2f}): "
            f"{baselines['mean_flow_mse']:.4f}"
        )


def load_validation(
    root,
    *,
    split="test",
    num_images=20,
    crop=0,
    mean_flow=(0.0, 0.0),
    explicit_dir=False,
    log=print,
):
    """The :class:`FlowValidationSet` of ``root/split``, or None (with a warning) if the split is
    missing and ``explicit_dir`` is False; ``data.DataError`` naming any damaged file."""
    import data
    from data import flow_pipeline, image_io, readers

    try:
        examples = flow_pipeline.flow_examples(root, split)
    except data.MissingSplitError as error:
        if explicit_dir:
            raise
        log(f"WARNING: no validation: {error} Training continues without validation.")
        return None
    chosen = examples[:num_images] if num_images else examples
    sizes = readers.check_flow_examples(chosen)
    pairs = []
    for (blur_path, label_path), size in zip(chosen, sizes, strict=True):
        blur = image_io.decode_rgb(blur_path, size)
        flow = readers.read_flow_label(label_path, size)
        if crop:
            blur, flow = centre_crop(blur, crop), centre_crop(flow, crop)
        pairs.append((blur_path, np.ascontiguousarray(blur), np.ascontiguousarray(flow)))
    size = f"centre {crop}x{crop} crops" if crop else "full size"
    label = (
        f"first {len(pairs)} of {len(examples)} examples of split {split!r} of {root}, {size}"
        + (" (the flow sets have no validation split)" if split == "test" else "")
    )
    return FlowValidationSet(pairs, label, mean_flow=np.asarray(mean_flow, np.float64))
