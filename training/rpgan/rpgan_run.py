"""An RP-GAN training run assembled from its configuration (Wu et al., paper §4.2 and §6.2;
``sen_rpgan.md`` §9): the frozen SEN, the training images and their deconvolution cache, the step
object, the pre-training / replay-buffer data that feeds it
(:class:`training.rpgan.rpgan_data.RPGANData`, built with its step) and the framework's validation
set.

``config`` is a :class:`training.config.TrainConfig` whose ``paper`` is ``train_rpgan.py``'s
``RPGANRecipe``: ``pretrain_epochs``, ``sources`` (``sen_checkpoint``, ``flow_dir``, ``u_max``,
``synthetic_images``, ``cache_dir``, ``train_flow_source``) and ``buffer`` (``buffer_size``,
``buffer_fractions``, ``buffer_passes``, ``buffer_margin``, ``betas``, ``cg_tol``,
``cg_max_iter``, ``val_levels``) are read here; the script's ``make_step`` reads the rest.

Nothing here reads flags, and nothing imports TensorFlow at module load (the script imports this
module before its checks). Errors are :class:`config.ConfigError` with one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from config import ConfigError
from training import runner


def build_trainer(config, make_step: Callable, *, default_run_dir: str, out=None):
    """``config`` -> ``Trainer`` (the shared assembly of :func:`training.runner.build_trainer`).

    Args:
        config: the run's configuration (module docstring).
        make_step: ``(config, steps_per_epoch, sen, sen_record) -> RPGANTrainStep`` (not built).
        default_run_dir: run directory when ``config.loop.run_dir`` is None (the SEN's weights
            are written there).
        out: stream for the run summary and progress (stdout).

    The step object is made before the loop seeds the initialisation: its constructor draws no
    random number (the networks are built by the loop, after the seed is set).
    """
    sen, sen_record = load_sen(config.paper.sources.sen_checkpoint)
    images, description = training_images(config)
    cache = deconvolution_cache(config, images, sen)
    steps_per_epoch = epoch_steps(config, len(images))
    step = make_step(config, steps_per_epoch, sen, sen_record)
    data = runner.TrainingData(
        size=steps_per_epoch * config.data.batch_size,
        epoch_datasets=segmented_data(
            config,
            cache,
            step,
            sen,
            steps_per_epoch=steps_per_epoch,
            run_dir=config.loop.run_dir or default_run_dir,
        ),
        validation=lambda: validation(config),
        description={**description, "cache": cache.folder},
        unit="images",
    )
    return runner.build_trainer(
        config,
        lambda **sizes: step,  # sizes: those of ``data``, which the step was made with
        default_run_dir=default_run_dir,
        out=out,
        data_factory=lambda _: data,
    )


def epoch_steps(config, images: int) -> int:
    """Steps of one epoch: ⌈images / batch⌉ (§9: 3103 images = 194 steps of 16)."""
    from training.rpgan import rpgan_data

    return rpgan_data.steps_per_epoch(images, config.data.batch_size)


def segmented_data(config, cache, step, sen, *, steps_per_epoch: int, run_dir: str):
    """The ``pretrain_epochs`` x ``steps_per_epoch`` pre-training batches, then the replay
    buffer's cycles, of ``step`` (an ``RPGANTrainStep`` with ``replay_snapshot``); the frozen
    ``sen``'s weights are written to ``run_dir`` at the first segment."""
    from training.rpgan import rpgan_data

    return rpgan_data.RPGANData(
        cache,
        step,
        batch_size=config.data.batch_size,
        crop_size=config.data.crop_size,
        pretrain_steps=config.paper.pretrain_epochs * steps_per_epoch,
        buffer_kwargs=buffer_kwargs(config),
        seed=max(config.data.seed, 0),
        run_dir=run_dir,
        sen=sen,
    )


def betas(config) -> list[float]:
    """The β ladder of training and validation: ``betas``, or 0.02·5^(n-1) for as many levels as
    the buffer and the validation framework use (register #20)."""
    buffer = config.paper.buffer
    if buffer.betas is None:
        from deconvolution.hqs import beta_ladder

        return list(beta_ladder(max(len(buffer.buffer_fractions), buffer.val_levels)))
    return [float(beta) for beta in buffer.betas]


def buffer_kwargs(config) -> dict:
    """The :class:`training.rpgan.replay_buffer.ReplayBuffer` settings of ``config``."""
    buffer = config.paper.buffer
    return {
        "size": buffer.buffer_size,
        "fractions": [float(f) for f in buffer.buffer_fractions],
        "betas": betas(config),
        "margin": buffer.buffer_margin,
        "passes": buffer.buffer_passes,
        "tol": buffer.cg_tol,
        "max_iter": buffer.cg_max_iter,
    }


def framework_kwargs(config) -> dict:
    """The validation framework's settings (run_config.json ``"framework"``)."""
    buffer = config.paper.buffer
    return {
        "levels": buffer.val_levels,
        "betas": betas(config)[: buffer.val_levels],
        "cg_tol": buffer.cg_tol,
        "cg_max_iter": buffer.cg_max_iter,
    }


def load_sen(path: str):
    """(frozen SEN, its run_config.json ``"sen"`` record) from a train_sen.py run folder,
    checkpoint or weights file ``path``."""
    from inference import signatures, sources
    from training.rpgan import deconv_cache

    as_file = os.path.isfile(path)
    try:
        sen, info = sources.load_keras_model(
            checkpoint=None if as_file else path,
            weights=path if as_file else None,
            task=signatures.TASK_FLOW,
        )
    except sources.ModelSourceError as error:
        raise ConfigError(str(error)) from None
    sen.trainable = False
    record = {
        "model": info.get("model", "sen"),
        "model_kwargs": info.get("model_kwargs", {}),
        "weights": "sen.weights.h5",
        "digest": deconv_cache.model_digest(sen),
        "u_max": info.get("u_max"),
    }
    return sen, record


def training_images(config):
    """(:class:`training.rpgan.deconv_cache.TrainingImage` list, description): the first
    ``synthetic_images`` of the flow set's training split (evenly spaced), then GoPro's training
    pairs when ``data_dir`` is given."""
    from data import readers
    from training.rpgan import deconv_cache

    sources, data = config.paper.sources, config.data
    root = flow_dir(config)
    pairs = spread(readers.list_pairs(root, "train"), sources.synthetic_images)
    images = deconv_cache.from_pairs(pairs, with_labels=sources.train_flow_source == "true")
    description = {"flow_set": root, "synthetic_images": len(images)}
    if data.data_dir:
        gopro = readers.list_pairs(data.data_dir, "train", data.blur_variant)
        images += deconv_cache.from_pairs(gopro)
        description.update(data_dir=data.data_dir, gopro_images=len(gopro))
    description["train_images"] = len(images)
    return images, description


def spread(items, count):
    """``count`` items evenly spaced over ``items`` (all if fewer): the flow sets hold 20 flows per
    sharp source in order, so the first N would see N / 20 sources only."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def flow_dir(config) -> str:
    """``flow_dir`` or the small default flow set of ``u_max`` (generated on first use)."""
    sources = config.paper.sources
    if sources.flow_dir:
        return sources.flow_dir
    from data import default_data

    return default_data.default_flow_dir(sources.u_max)


def cache_dir(config) -> str:
    """``cache_dir`` or ``<data cache>/rpgan_deconv``."""
    if config.paper.sources.cache_dir:
        return config.paper.sources.cache_dir
    from data import default_data

    return os.path.join(default_data.cache_root(), "rpgan_deconv")


def deconvolution_cache(config, images, sen):
    """The flows and I*_1 = CG(beta_1; Z_0 = O) of ``images`` (made at the first segment), in a
    folder keyed by the SEN's digest, beta_1 and the CG settings."""
    from training.rpgan import deconv_cache

    buffer = config.paper.buffer
    return deconv_cache.DeconvCache(
        cache_dir(config),
        images,
        sen=sen,
        flow_source=config.paper.sources.train_flow_source,
        beta=betas(config)[0],
        tol=buffer.cg_tol,
        max_iter=buffer.cg_max_iter,
    )


def validation(config):
    """The framework's validation pairs: the flow set's test split (or ``val_data_dir``); the
    step validates the framework and the identity-prior HQS baseline on them together."""
    from training import inputs

    data = config.data
    return inputs.load_validation(
        data.val_data_dir or flow_dir(config),
        split=data.val_split,
        num_images=data.val_images,
        crop=data.val_crop,
        explicit_dir=bool(data.val_data_dir),
    )
