"""Adam as each paper's original code computed it: PyTorch's formula or Keras's (= TF1's).

The two formulas keep the same moments ``m``, ``v`` and differ only in where epsilon sits:

* **PyTorch** (``torch.optim.Adam``, no amsgrad, no weight decay; MIMO-UNet's official trainer,
  and the coming GradientNet, SEN, RP-GAN)::

      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
      p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

* **Keras** (``keras.optimizers.Adam``, TF1's ``AdamOptimizer``; IDC and Two-Way)::

      p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

  i.e. PyTorch's update with ``eps / sqrt(1 - b2^t)`` in place of ``eps``: 3.2e-7 instead of
  1e-8 at step 1, converging to ``eps`` after some 5000 steps (beta2 0.999). Weights whose
  gradients are of order 1e-6 or less move less under Keras's formula: on the full MIMO-UNet (the
  parity fixture's weights, one batch) the first update differs by 14 % (norm of the difference
  over the norm of PyTorch's update; 10 % of the weights move less than 90 % as far).

:class:`PyTorchAdam` is the first as a Keras optimizer (``keras.ops`` only, so it runs inside
``strategy.run`` under ``tf.distribute`` and under the other backends); its slots are created the
way Keras Adam creates them (``momentum``, ``velocity``), so checkpoints hold them under the same
paths and :meth:`build` before a restore keeps them. :func:`make_adam` picks a formula by name.

**float16** (``--precision float16``, :mod:`precision`): under Keras' ``mixed_float16`` policy
:func:`make_adam` wraps the optimizer in ``keras.optimizers.LossScaleOptimizer`` (dynamic scaling:
starts at 2^15, halves and skips the update on non-finite gradients, doubles after 2000 finite
steps), as ``keras.Model.compile`` does. :func:`training.step.minimize` seeds the backward pass
with the scale; the wrapper unscales, checks and applies (all replicas skip together under
``tf.distribute``). Checkpoints hold the inner Adam (:func:`checkpointed`), so a run's checkpoints
do not depend on its precision; the loss scale is not saved and restarts at 2^15 on a resume.
"""

from __future__ import annotations

import keras
from keras import ops

FORMULAS = ("pytorch", "keras")
# The optimizer's identity in run_config.json: a resume under another formula is a different run.
FORMULA_NAMES = {"pytorch": "Adam (PyTorch formula)", "keras": "Adam (Keras formula)"}


@keras.saving.register_keras_serializable(package="deblur")
class PyTorchAdam(keras.optimizers.Optimizer):
    """Adam with PyTorch's epsilon placement (``torch.optim.Adam``, amsgrad off, weight decay 0).

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` (evaluated at the iteration count
            before the update, as every Keras optimizer does).
        beta_1, beta_2: decay rates of the first and second moments (0.9, 0.999).
        epsilon: added to the bias-corrected ``sqrt(v_hat)`` (PyTorch's default 1e-8).
        **kwargs: the base optimizer's arguments (``name``, ``clipnorm``, ...).
    """

    formula = "pytorch"

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, var_list):
        """Creates one ``momentum`` and one ``velocity`` slot per variable (Keras Adam's names)."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        """One PyTorch Adam update of ``variable``, written in torch's order of operations."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        bias_correction_1 = 1 - ops.power(ops.cast(self.beta_1, dtype), step)
        bias_correction_2 = 1 - ops.power(ops.cast(self.beta_2, dtype), step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        # torch: exp_avg.lerp_(grad, 1 - b1); exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        decayed = ops.multiply(v, self.beta_2)
        self.assign(v, ops.add(decayed, ops.multiply(ops.square(gradient), 1 - self.beta_2)))
        # torch: denom = sqrt(v) / sqrt(bc2) + eps; param.addcdiv_(m, denom, -lr / bc1)
        denom = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(bias_correction_2)), self.epsilon)
        step_size = ops.divide(lr, bias_correction_1)
        self.assign_sub(variable, ops.multiply(ops.divide(m, denom), step_size))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


def make_adam(formula, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """Adam with ``formula`` ``"pytorch"`` (:class:`PyTorchAdam`) or ``"keras"``
    (``keras.optimizers.Adam``, TF1's formula), wrapped in a ``LossScaleOptimizer`` when Keras'
    global policy is ``mixed_float16`` (module docstring). Raises ``ValueError`` for another
    name."""
    if formula == "pytorch":
        adam = PyTorchAdam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    elif formula == "keras":
        adam = keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    else:
        raise ValueError(f"Unknown Adam formula {formula!r}; expected one of {FORMULAS}.")
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam


def checkpointed(optimizer):
    """What a checkpoint holds of ``optimizer``: the inner optimizer of a ``LossScaleOptimizer``
    (so checkpoints do not depend on the precision), else the optimizer itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def loss_scale(optimizer):
    """The current loss scale (float32 scalar variable) of a ``LossScaleOptimizer``, else
    ``None``."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale
    return None


def adam_formula(optimizer):
    """``"pytorch"`` or ``"keras"`` for an optimizer :func:`make_adam` built, else ``None``."""
    optimizer = checkpointed(optimizer)
    if isinstance(optimizer, PyTorchAdam):
        return "pytorch"
    if isinstance(optimizer, keras.optimizers.Adam) and not optimizer.amsgrad:
        return "keras"
    return None
