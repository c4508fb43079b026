"""Learning-rate schedules keyed on the optimizer's iteration counter.

Keras calls a :class:`keras.optimizers.schedules.LearningRateSchedule` with ``optimizer.iterations``
(the number of updates already applied). That counter is an optimizer variable, so it is saved in
and restored from every checkpoint: a resumed run continues the schedule exactly where it stopped,
without any schedule state of its own.

* :class:`EpochMultiStepDecay`: PyTorch's ``MultiStepLR`` stepped once per epoch (MIMO-UNet,
  mimo_unet.md section 7: x0.5 after epochs 500, 1000, ..., 2500; milestones [500, ..., 3000]).
* :func:`polynomial_decay`: ``lr = (lr0 - end) * (1 - step / decay_steps) ** power + end``
  (IDC / Two-Way, SRN's schedule: power 0.3).
* :class:`HoldThenLinearDecay`: constant, then a linear decay per step to a final rate, then held
  (SEN, sen_rpgan.md section 5: 1.25e-3 for 50 epochs, linear to 1.25e-5 over 40).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deblur")
class EpochMultiStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Multiplies the learning rate by ``gamma`` at each epoch milestone (PyTorch ``MultiStepLR``).

    The update with iteration index ``i`` (0-based) belongs to epoch ``e = i // steps_per_epoch``
    (0-based) and uses ``initial_learning_rate * gamma ** #{m in milestones : e >= m}``. With
    milestones [500, 1000, ...] the first 500 epochs (1-500 counted from one, as the official code)
    use 1e-4 and epoch 501 the first halved rate, exactly as ``MultiStepLR.step()`` called after
    every epoch.

    Args:
        initial_learning_rate: rate of the first epochs.
        steps_per_epoch: optimizer updates per epoch (``len(train set) // batch``), > 0.
        milestones: increasing epoch counts after which the rate is multiplied by ``gamma``.
        gamma: decay factor (0.5 for MIMO-UNet).
    """

    def __init__(self, initial_learning_rate, steps_per_epoch, milestones, gamma=0.5):
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.milestones = milestones
        self.gamma = float(gamma)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        # Number of milestones passed, as a float exponent of gamma.
        passed = ops.zeros((), "float32")
        for milestone in self.milestones:
            passed = passed + ops.cast(ops.greater_equal(epoch, milestone), "float32")
        return self.initial_learning_rate * ops.power(self.gamma, passed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }


def every_n_epochs(period, total_epochs):
    """Milestones ``[period, 2 * period, ...]`` up to ``total_epochs``.

    The official MIMO-UNet list is ``[(x + 1) * 500 for x in range(3000 // 500)]``; a milestone at
    the last epoch has no effect.
    """
    if period <= 0:
        return []
    return [period * (k + 1) for k in range(max(total_epochs, 0) // period)]


def mimo_unet_schedule(
    learning_rate, steps_per_epoch, decay_every_epochs=500, total_epochs=3000, gamma=0.5
):
    """MIMO-UNet's schedule (mimo_unet.md section 7): x ``gamma`` every ``decay_every_epochs``."""
    milestones = every_n_epochs(decay_every_epochs, total_epochs)
    return EpochMultiStepDecay(learning_rate, steps_per_epoch, milestones, gamma)


def polynomial_decay(initial_learning_rate, decay_steps, end_learning_rate=0.0, power=0.3):
    """SRN-style polynomial decay for the IDC / Two-Way scripts.

    ``lr(i) = (lr0 - end) * (1 - min(i, decay_steps) / decay_steps) ** power + end``, keyed on the
    optimizer's iteration counter ``i`` (so it resumes exactly); constant ``end`` afterwards.
    """
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate,
        decay_steps=max(int(decay_steps), 1),
        end_learning_rate=end_learning_rate,
        power=power,
        cycle=False,
    )


@keras.saving.register_keras_serializable(package="deblur")
class HoldThenLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``initial_learning_rate`` for ``hold_steps`` updates, then linear in the update index down
    to ``end_learning_rate`` over ``decay_steps`` updates, then held at ``end_learning_rate``.

    The update with iteration index ``i`` (0-based) uses ``lr0`` for ``i <= hold_steps`` and
    ``lr0 + (end - lr0) * min(i - hold_steps, decay_steps) / decay_steps`` after; with
    ``decay_steps = 0`` the rate is ``lr0`` throughout (SEN's stage 2: a constant 1.25e-5). The
    decay is per update, not per epoch (the paper says "linearly decays ... in 40 epochs").
    """

    def __init__(self, initial_learning_rate, end_learning_rate, hold_steps, decay_steps):
        if hold_steps < 0 or decay_steps < 0:
            raise ValueError(f"hold and decay steps must be >= 0 ({hold_steps}, {decay_steps}).")
        self.initial_learning_rate = float(initial_learning_rate)
        self.end_learning_rate = float(end_learning_rate)
        self.hold_steps, self.decay_steps = int(hold_steps), int(decay_steps)

    def __call__(self, step):
        if self.decay_steps == 0:
            return ops.convert_to_tensor(self.initial_learning_rate, "float32")
        done = ops.cast(step, "float32") - float(self.hold_steps)
        fraction = ops.clip(done / float(self.decay_steps), 0.0, 1.0)
        delta = self.end_learning_rate - self.initial_learning_rate
        return self.initial_learning_rate + delta * fraction

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "end_learning_rate": self.end_learning_rate,
            "hold_steps": self.hold_steps,
            "decay_steps": self.decay_steps,
        }
