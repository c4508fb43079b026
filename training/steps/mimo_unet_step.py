"""The MIMO-UNet / MIMO-UNet+ step object (mimo_unet.md section 7, the official ``train.py``).

Adam (betas 0.9/0.999, epsilon 1e-8 as PyTorch, no weight decay) with **PyTorch's formula**
(:class:`training.optimizers.PyTorchAdam`: epsilon added to the bias-corrected sqrt(v); Keras's
formula changes the first update of the full model by 14 %, see :mod:`training.optimizers`) on
``L_cont + 0.1 * L_MSFR`` over the three outputs (:func:`losses.mimo_unet_loss`), learning rate
x0.5 every 500 epochs stepped per epoch (:func:`training.schedules.mimo_unet_schedule`). No
warm-up, clipping, EMA or mixed precision. The model keeps PyTorch's initialisation
(``init="torch"``) unless ``model_kwargs`` says otherwise.
Model building, the tape and the update are :class:`training.step.SingleModelTrainStep`'s.
"""

from __future__ import annotations

import functools

import losses
from training import schedules
from training.step import SingleModelTrainStep

VARIANTS = ("mimo_unet", "mimo_unet_plus")


class MimoUnetTrainStep(SingleModelTrainStep):
    """One Adam update of MIMO-UNet(+) on a (blur, sharp) batch.

    Args:
        variant: ``"mimo_unet"`` or ``"mimo_unet_plus"`` (registry names).
        steps_per_epoch: updates per epoch, for the per-epoch schedule.
        model_kwargs: ``models.build_model`` overrides (``num_res``, ``base_channels``, ``init``).
        learning_rate: initial rate (1e-4).
        decay_every_epochs, total_epochs, decay_rate: the MultiStep schedule (500, 3000, 0.5).
        epsilon: Adam epsilon (1e-8, PyTorch's default; Keras's default is 1e-7).
        fft_weight: lambda of the frequency term (0.1).
        adam_formula: ``"pytorch"`` (default: the official trainer's ``torch.optim.Adam``) or
            ``"keras"``.
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
        adam_formula="pytorch",
    ):
        if variant not in VARIANTS:
            raise ValueError(f"Unknown MIMO-UNet variant {variant!r}; expected one of {VARIANTS}.")
        self.steps_per_epoch, self.learning_rate = steps_per_epoch, learning_rate
        self.decay, self.fft_weight = (decay_every_epochs, total_epochs, decay_rate), fft_weight
        schedule = schedules.mimo_unet_schedule(
            learning_rate, steps_per_epoch, decay_every_epochs, total_epochs, decay_rate
        )
        super().__init__(
            variant,
            loss_fn=functools.partial(losses.mimo_unet_loss, fft_weight=fft_weight),
            schedule=schedule,
            model_kwargs=model_kwargs,
            epsilon=epsilon,
            adam_formula=adam_formula,
            schedule_text=f"x{decay_rate:g} every {decay_every_epochs} epochs (milestones up to "
            f"{total_epochs}), {steps_per_epoch} steps/epoch",
            loss_text=f"L1 + {fft_weight:g} * FFT-L1 over 3 scales (losses.mimo_unet_loss)",
        )
