"""The IDC step object (idc.md sections 5 and 8; paper section 4, "experiment environment").

* Loss: :func:`losses.idc_loss`, sum over the three scales of MSE + 0.1 (1 - SSIM) + 0.1 L_grad
  (paper eq. 5-6; weights :data:`losses.IDC_SSIM_WEIGHT`, :data:`losses.IDC_GRAD_WEIGHT`), the
  gradient term's norm a switch (A-IDC-5, L1 by default). The labels of the coarser scales are
  made by the model's own pyramid (``pyramid_mode``, A-IDC-11: sequential halving by default,
  ``"direct"`` by switch), read from the built model: the paper's labels are "obtained in the same
  way" as the blurred inputs.
* Optimizer: Adam with the TensorFlow "default settings" the paper names: beta1 0.9, beta2 0.999,
  epsilon 1e-8 (TF1's default; Keras 3's is 1e-7, so it is set explicitly), with TF1's
  ``AdamOptimizer`` formula, which ``keras.optimizers.Adam`` keeps (:mod:`training.optimizers`).
* Learning rate: "1e-4 ~ 1e-6" as SRN's polynomial decay with power 0.3 over the whole run, then
  held at 1e-6 (:func:`training.schedules.polynomial_decay`, keyed on the optimizer's iteration
  counter so that a resumed run continues it).

Model building, the schedule, the tape and the update are
:class:`training.step.PolynomialDecayTrainStep`'s. The noise of the training input (A-IDC-6) is
added by the data pipeline, not here.
"""

from __future__ import annotations

import functools

import losses
from training.step import PolynomialDecayTrainStep

LEARNING_RATE = 1e-4  # paper: "1×10^-4 ~ 1×10^-6"
END_LEARNING_RATE = 1e-6
POWER = 0.3  # SRN's decay power (the paper gives only the range)


class IdcTrainStep(PolynomialDecayTrainStep):
    """One Adam update of IDC on a (blur, sharp) batch.

    Args:
        total_steps: length of the run; the learning rate decays over it and is then held.
        model_kwargs: ``models.build_model("idc", ...)`` overrides (``decoder_reading``,
            ``use_texture``, ``n_scales``, ``base_channels``, ``num_res``).
        learning_rate, end_learning_rate, power: the polynomial decay (1e-4 -> 1e-6, 0.3).
        epsilon: Adam epsilon (1e-8).
        adam_formula: ``"keras"`` (default: TF1's ``AdamOptimizer`` formula, which Keras keeps) or
            ``"pytorch"`` (:mod:`training.optimizers`).
        ssim_weight, grad_weight: alpha and beta of eq. 5 (0.1 each, the losses constants).
        grad_loss_norm: ``"l1"`` (default, A-IDC-5) or ``"l2"``.
    """

    paper = "idc"
    loss_model_options = ("pyramid_mode",)  # labels follow the model's input pyramid

    def __init__(
        self,
        *,
        total_steps,
        model_kwargs=None,
        learning_rate=LEARNING_RATE,
        end_learning_rate=END_LEARNING_RATE,
        power=POWER,
        epsilon=1e-8,
        adam_formula="keras",
        ssim_weight=losses.IDC_SSIM_WEIGHT,
        grad_weight=losses.IDC_GRAD_WEIGHT,
        grad_loss_norm="l1",
    ):
        if grad_loss_norm not in ("l1", "l2"):
            raise ValueError(f"grad_loss_norm must be 'l1' or 'l2', got {grad_loss_norm!r}.")
        self.loss_kwargs = {
            "ssim_weight": ssim_weight,
            "grad_weight": grad_weight,
            "grad_loss_norm": grad_loss_norm,
        }
        super().__init__(
            "idc",
            loss_fn=functools.partial(losses.idc_loss, **self.loss_kwargs),
            total_steps=total_steps,
            learning_rate=learning_rate,
            end_learning_rate=end_learning_rate,
            power=power,
            model_kwargs=model_kwargs,
            epsilon=epsilon,
            adam_formula=adam_formula,
            loss_text=f"sum over scales of MSE + {ssim_weight:g} (1 - SSIM) + {grad_weight:g} "
            f"grad-{grad_loss_norm.upper()} (losses.idc_loss)",
        )
