"""The per-paper step object that :class:`training.loop.Trainer` drives (interface in
``training/__init__.py``), with the gradient helper every paper shares."""

from __future__ import annotations

import tensorflow as tf


class TrainStep:
    """Base class of a paper's training step. Subclasses set the attributes and implement
    :meth:`build`, :meth:`checkpoint_items` and :meth:`train_step`.

    Attributes:
        paper: the paper / script name written to ``run_config.json`` (``"mimo_unet"``).
        model_name: the registry name of the inference model (``models.build_model``).
        model_kwargs: the keyword overrides it was built with (JSON-serialisable).
    """

    paper: str = ""
    model_name: str = ""
    model_kwargs: dict = {}

    def build(self, strategy: tf.distribute.Strategy) -> None:
        """Creates the models and optimizers inside ``strategy.scope()`` and builds the optimizer
        variables (``optimizer.build(model.trainable_variables)``) so that checkpoints restore
        into existing slots. Called once, before any restore and before the first step."""
        raise NotImplementedError

    def checkpoint_items(self) -> dict:
        """Trackables for ``tf.train.Checkpoint``: ``"model"`` (the inference model) and
        ``"optimizer"`` at least; GANs add e.g. ``"discriminator"`` and ``"d_optimizer"``."""
        raise NotImplementedError

    def train_step(self, blur, sharp) -> dict:
        """One update on this replica's share of the global batch (runs under ``strategy.run``
        inside the loop's ``tf.function``). ``blur``/``sharp``: (B/R, H, W, 3) float32 in [0, 1].
        Returns a dict of float32 scalar tensors with the total under ``"loss"`` (the loop averages
        them over replicas, logs them and stops on a non-finite value)."""
        raise NotImplementedError

    @property
    def inference_model(self):
        """The Keras model that evaluation and export use (``checkpoint_items()["model"]``)."""
        return self.checkpoint_items()["model"]

    def optimizers(self) -> dict:
        """Name -> Keras optimizer; default: the checkpoint items with an ``iterations`` counter."""
        items = self.checkpoint_items().items()
        return {k: v for k, v in items if hasattr(v, "iterations") and hasattr(v, "apply")}

    def learning_rates(self) -> dict:
        """Name -> current learning rate (Python float) of every optimizer, for logs."""
        rates = {}
        for name, optimizer in self.optimizers().items():
            key = "learning_rate" if name == "optimizer" else f"learning_rate/{name}"
            rates[key] = float(optimizer.learning_rate)
        return rates

    def describe(self) -> dict:
        """Extra ``key: value`` lines for the run summary (optimizer, loss, schedule, ...)."""
        return {}

    def run_config(self) -> dict:
        """The run-directory contract's model entries of ``run_config.json``."""
        return {
            "model": self.model_name,
            "model_kwargs": dict(self.model_kwargs),
            "paper": self.paper,
        }


def scale_for_replicas(loss):
    """Divides a per-replica mean loss by the number of replicas in sync.

    Keras 3's optimizer all-reduces (sums) the gradients over replicas, so with equal per-replica
    batches (the loop drops remainders) the summed gradient of ``loss / R`` is the gradient of the
    mean over the global batch, as on one device.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def minimize(tape, loss, variables, optimizer):
    """Applies one update for a per-replica mean ``loss`` recorded on ``tape``.

    The gradients are divided by the number of replicas (see :func:`scale_for_replicas`; dividing
    the gradients equals differentiating the scaled loss), then Keras sums them over replicas in
    ``apply_gradients``. Returns the (per-replica, scaled) gradients.
    """
    grads = tape.gradient(loss, variables)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        grads = [None if g is None else g / replicas for g in grads]
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    return grads
