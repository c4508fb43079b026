"""The MIMO-UNet / MIMO-UNet+ step object (mimo_unet.md section 7, the official ``train.py``).

Adam (betas 0.9/0.999, epsilon 1e-8 as PyTorch, no weight decay) on ``L_cont + 0.1 * L_MSFR`` over
the three outputs (:func:`losses.mimo_unet_loss`), learning rate x0.5 every 500 epochs stepped per
epoch (:func:`training.schedules.mimo_unet_schedule`). No warm-up, clipping, EMA or mixed precision.
The model keeps PyTorch's initialisation (``init="torch"``) unless ``model_kwargs`` says otherwise.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import losses
from models import build_model
from training import schedules
from training.step import TrainStep, minimize

VARIANTS = ("mimo_unet", "mimo_unet_plus")


class MimoUnetStep(TrainStep):
    """One Adam update of MIMO-UNet(+) on a (blur, sharp) batch.

    Args:
        variant: ``"mimo_unet"`` or ``"mimo_unet_plus"`` (registry names).
        steps_per_epoch: updates per epoch, for the per-epoch schedule.
        model_kwargs: ``models.build_model`` overrides (``num_res``, ``base_channels``, ``init``).
        learning_rate: initial rate (1e-4).
        decay_every_epochs, total_epochs, decay_rate: the MultiStep schedule (500, 3000, 0.5).
        epsilon: Adam epsilon (1e-8, PyTorch's default; Keras's default is 1e-7).
        fft_weight: lambda of the frequency term (0.1).
    """

    paper = "mimo_unet"

    def __init__(
        self,
        variant="mimo_unet",
        *,
        steps_per_epoch,
        model_kwargs=None,
        learning_rate=1e-4,
        decay_every_epochs=500,
        total_epochs=3000,
        decay_rate=0.5,
        epsilon=1e-8,
        fft_weight=losses.MIMO_FFT_WEIGHT,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"Unknown MIMO-UNet variant {variant!r}; expected one of {VARIANTS}.")
        self.model_name, self.model_kwargs = variant, dict(model_kwargs or {})
        self.steps_per_epoch, self.learning_rate = steps_per_epoch, learning_rate
        self.decay = (decay_every_epochs, total_epochs, decay_rate)
        self.epsilon, self.fft_weight = epsilon, fft_weight
        self.model = self.optimizer = None

    def build(self, strategy):
        with strategy.scope():
            self.model = build_model(self.model_name, **self.model_kwargs)
            self.model.build((None, None, None, 3))
            every, total, rate = self.decay
            schedule = schedules.mimo_unet_schedule(
                self.learning_rate, self.steps_per_epoch, every, total, rate
            )
            self.optimizer = keras.optimizers.Adam(
                learning_rate=schedule, beta_1=0.9, beta_2=0.999, epsilon=self.epsilon
            )
            # Slots must exist before a restore (Keras 3 otherwise drops Adam's moments) and before
            # the first step under MirroredStrategy (variables cannot be created in a replica).
            self.optimizer.build(self.model.trainable_variables)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def train_step(self, blur, sharp):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            predictions = self.model(blur, training=True)
            terms = losses.mimo_unet_loss(predictions, sharp, fft_weight=self.fft_weight)
        minimize(tape, terms["loss"], variables, self.optimizer)
        # Log the totals and the full-resolution terms; the per-scale terms go to TensorBoard too.
        return terms

    def describe(self):
        every, total, rate = self.decay
        return {
            "optimizer": f"Adam(lr={self.learning_rate:g}, betas=(0.9, 0.999), "
            f"epsilon={self.epsilon:g})",
            "schedule": f"x{rate:g} every {every} epochs (milestones up to {total}), "
            f"{self.steps_per_epoch} steps/epoch",
            "loss": f"L1 + {self.fft_weight:g} * FFT-L1 over 3 scales (losses.mimo_unet_loss)",
            "parameters": int(sum(int(tf.size(v)) for v in self.model.trainable_variables)),
        }
