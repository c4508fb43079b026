"""The Two-Way step object (two_way.md section 6; paper section 4.1, "implementation details").

* Loss: :func:`losses.two_way_loss`, ``1 MSE_1/4 + 1 MSE_1/2 + 5 MSE_1`` on the summed outputs
  (paper eq. 2, weights :data:`losses.TWO_WAY_SCALE_WEIGHTS`, A-TW-8). The labels of the coarser
  scales are made by the model's own pyramid (``pyramid_mode``: sequential halving by default, as
  IDC; ``"direct"`` by switch), read from the built model.
* Optimizer: Adam, beta1 0.9, beta2 0.999, epsilon 1e-8 as the paper states (Keras 3's default
  epsilon is 1e-7, so it is set explicitly), with TF1's ``AdamOptimizer`` formula, which
  ``keras.optimizers.Adam`` keeps (:mod:`training.optimizers`).
* Learning rate: 1e-4 "exponentially decayed to 0 using power 0.3", read as SRN's polynomial decay
  1e-4 -> 0 with power 0.3 over the whole run (:func:`training.schedules.polynomial_decay`, keyed
  on the optimizer's iteration counter so that a resumed run continues it).

Model building, the schedule, the tape and the update are
:class:`training.step.PolynomialDecayTrainStep`'s.
"""

from __future__ import annotations

import functools

import losses
from training.step import PolynomialDecayTrainStep

LEARNING_RATE = 1e-4
END_LEARNING_RATE = 0.0  # "decayed to 0"
POWER = 0.3


class TwoWayTrainStep(PolynomialDecayTrainStep):
    """One Adam update of the Two-Way network on a (blur, sharp) batch.

    Args:
        total_steps: length of the run; the learning rate decays over it (to 0 by default).
        model_kwargs: ``models.build_model("two_way", ...)`` overrides (``two_way``,
            ``deconv_kernel``, ``base_channels``, ``num_res``).
        learning_rate, end_learning_rate, power: the polynomial decay (1e-4 -> 0, 0.3).
        epsilon: Adam epsilon (1e-8).
        adam_formula: ``"keras"`` (default: TF1's ``AdamOptimizer`` formula, which Keras keeps) or
            ``"pytorch"`` (:mod:`training.optimizers`).
        scale_weights: alpha_i, coarse to fine (the losses constant (1, 1, 5)).
    """

    paper = "two_way"
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
        scale_weights=losses.TWO_WAY_SCALE_WEIGHTS,
    ):
        self.loss_kwargs = {"scale_weights": tuple(scale_weights)}
        weights = ", ".join(f"{w:g}" for w in scale_weights)
        super().__init__(
            "two_way",
            loss_fn=functools.partial(losses.two_way_loss, **self.loss_kwargs),
            total_steps=total_steps,
            learning_rate=learning_rate,
            end_learning_rate=end_learning_rate,
            power=power,
            model_kwargs=model_kwargs,
            epsilon=epsilon,
            adam_formula=adam_formula,
            loss_text=f"MSE weighted ({weights}) coarse to fine (losses.two_way_loss)",
        )
