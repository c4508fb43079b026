"""The SEN step object (sen_rpgan.md sections 4-5; paper section 3, eq. 1; register #3, #9).

* Loss (eq. 1): ``L = mean over all elements of (U* - U_label)^2``, computed in float32 whatever
  the model's compute dtype, at full resolution against the ``uv_half`` label. With
  ``sen_output="quarter"`` (register #3's alternative) the stack's H/4 output is compared with the
  label averaged over 4 x 4 boxes (a 2 x 2 box average applied twice; the label is first
  edge-replicated to multiples of 4, as SEN pads its input), see :func:`quarter_box_label`.
* Stages (the paper trains the stacks with separate schedules):

  - **stage 1** builds a **one-stack** SEN (``num_stacks=1``) and trains it on its own output. A
    one-stack SEN is a complete flow estimator (its run folder evaluates and exports like any
    other), its checkpoints hold nothing untrained, and stage 2 reads its stack from
    ``final.weights.h5``. (The alternative, a two-stack model whose loss only reads stack 1, would
    run stack 2 on every step for nothing and checkpoint an untrained stack.)
  - **stage 2** builds the two-stack SEN, copies the stage-1 stack into ``model.stacks[0]`` and
    freezes it (``trainable = False``: no updates, its BN in inference mode with the stage-1
    moving statistics; register #9), and trains stack 2 on stack 2's output. The frozen stack's
    own MSE is logged as ``stack1_mse`` (stack 2 should end below it). ``joint_finetune=True``
    (register #9's alternative, ``--sen_joint_finetune``) trains both stacks, still on the final
    output's loss.

* Optimizer: Adam with **PyTorch's formula** (the original is PyTorch; betas 0.9 / **0.99**,
  epsilon 1e-8, :class:`training.optimizers.PyTorchAdam`), rate from
  :class:`training.schedules.HoldThenLinearDecay` (stage 1: 1.25e-3 for 50 epochs, linear to
  1.25e-5 over 40; stage 2: 1.25e-5 constant for 15 epochs; set by ``train_sen.py``).
* Validation: flow MSE over every pixel and both components of each validation image (the
  Table 1 metric), **lower is better**: ``best/`` keeps the lowest (``validation_metric``).

Batches are (blur (B, h, w, 3) float32 in [0, 1], flow (B, h, w, 2) float32 ``uv_half`` pixels)
from :mod:`training.flow_inputs`.
"""

from __future__ import annotations

import tensorflow as tf

from training import optimizers
from training.step import TrainStep, loss_scale_terms, minimize

LEARNING_RATE_STAGE1 = 1.25e-3
LEARNING_RATE_END = 1.25e-5
BETA_1, BETA_2, EPSILON = 0.9, 0.99, 1e-8
STAGES = (1, 2)
DISPLAY_FLOW_RANGE = 46.0  # flow images map [-range, range] px to [0, 1] unless u_max is known


def flow_mse(prediction, label):
    """Per-image mean of (prediction - label)^2 over H, W and both components: (N,) float32."""
    diff = tf.cast(prediction, tf.float32) - tf.cast(label, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=[1, 2, 3])


def quarter_box_label(flow):
    """The H/4 label of ``sen_output="quarter"``: (N, H, W, 2) -> (N, ceil(H/4), ceil(W/4), 2),
    the mean of each 4 x 4 block (a 2 x 2 box average twice) after edge replication to multiples
    of 4 at the bottom/right (SEN's own padding), values unchanged (pixels of the full image)."""
    from models.inference import pad_to_multiple

    flow = pad_to_multiple(tf.cast(flow, tf.float32), 4)
    return tf.nn.avg_pool2d(flow, 4, 4, "VALID")


class SENTrainStep(TrainStep):
    """One Adam update of SEN on a (blur, flow) batch (see the module docstring).

    Args:
        stage: 1 (a one-stack SEN) or 2 (two stacks, stack 1 from ``init_weights``).
        schedule: a ``LearningRateSchedule`` keyed on the optimizer's iteration counter, or a float.
        model_kwargs: ``models.build_flow_estimator("sen", ...)`` overrides without ``num_stacks``
            (the stage sets it): ``sen_skips``, ``sen_output``, ``dilation_rates``,
            ``width_divisor``, ``upsampling``, ``res2_skip``, ``init``.
        init_weights: stage 2: the stage-1 run's ``final.weights.h5`` (a one-stack SEN with the same
            switches); None leaves stack 1 at its initialisation (tests only).
        joint_finetune: stage 2: train both stacks (register #9's alternative).
        beta_1, beta_2, epsilon, adam_formula: Adam's settings (0.9, 0.99, 1e-8, ``"pytorch"``).
        u_max: the data set's bound (23 or 46), recorded and used to scale the flow images.
        schedule_text: one line for the run summary.
    """

    paper = "sen"
    model_name = "sen"
    validation_metric = "flow_mse"
    validation_higher_is_better = False
    progress_terms = ("loss", "stack1_mse")  # stack1_mse: stage 2 only

    def __init__(
        self,
        *,
        stage=1,
        schedule=LEARNING_RATE_STAGE1,
        model_kwargs=None,
        init_weights=None,
        joint_finetune=False,
        beta_1=BETA_1,
        beta_2=BETA_2,
        epsilon=EPSILON,
        adam_formula="pytorch",
        u_max=None,
        schedule_text="",
    ):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
        if adam_formula not in optimizers.FORMULAS:
            raise ValueError(f"adam_formula must be one of {optimizers.FORMULAS}.")
        kwargs = dict(model_kwargs or {})
        if "num_stacks" in kwargs:
            raise ValueError("num_stacks is set by the stage (1 or 2), not by model_kwargs.")
        self.stage, self.joint_finetune = int(stage), bool(joint_finetune)
        self.model_kwargs = {"num_stacks": self.stage, **kwargs}
        self.schedule, self.schedule_text = schedule, schedule_text
        self.init_weights = init_weights
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.adam_formula, self.u_max = adam_formula, u_max
        self.model = self.optimizer = None

    @property
    def quarter(self) -> bool:
        return self.model_kwargs.get("sen_output", "full") == "quarter"

    @property
    def frozen_stack1(self) -> bool:
        return self.stage == 2 and not self.joint_finetune

    def build(self, strategy):
        from models import build_flow_estimator

        with strategy.scope():
            self.model = build_flow_estimator(self.model_name, **self.model_kwargs)
            self.model.build((None, None, None, 3))
            if self.stage == 2 and self.init_weights:
                self._load_stage1(self.init_weights)
            if self.frozen_stack1:
                self.model.stacks[0].trainable = False
            self.optimizer = optimizers.make_adam(
                self.adam_formula,
                learning_rate=self.schedule,
                beta_1=self.beta_1,
                beta_2=self.beta_2,
                epsilon=self.epsilon,
            )
            # Slots before any restore and outside replicas (training.step.SingleModelTrainStep).
            self.optimizer.build(self.model.trainable_variables)

    def _load_stage1(self, path):
        """Copies stack 1 of the one-stack SEN saved at ``path`` into ``model.stacks[0]``;
        :class:`training.loop.ConfigError` naming the file if it is not such a model."""
        from models import build_flow_estimator
        from training.loop import ConfigError

        source = build_flow_estimator(self.model_name, **{**self.model_kwargs, "num_stacks": 1})
        source.build((None, None, None, 3))
        try:
            source.load_weights(path)
        except Exception as error:  # noqa: BLE001 - h5py/Keras raise many types for a bad file
            first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            raise ConfigError(
                f"{path}: cannot load it as the stage-1 SEN (one stack, model_kwargs "
                f"{ {**self.model_kwargs, 'num_stacks': 1} }): {first}"
            ) from None
        pairs = zip(self.model.stacks[0].weights, source.stacks[0].weights, strict=True)
        for target, value in pairs:
            target.assign(value.numpy())

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": optimizers.checkpointed(self.optimizer)}

    def train_step(self, blur, flow):
        """Eq. 1 on the last stack's output (float32), one Adam update of the trainable stacks."""
        label = quarter_box_label(flow) if self.quarter else tf.cast(flow, tf.float32)
        with tf.GradientTape() as tape:
            outputs = self.model.stack_outputs(blur, training=True)
            loss = tf.reduce_mean(flow_mse(outputs[-1], label))
        grads = minimize(tape, loss, self.model.trainable_variables, self.optimizer)
        terms = {"loss": loss, **loss_scale_terms({"g": grads}, {"g": self.optimizer})}
        if len(outputs) > 1:  # how far stack 2 has moved from the stack it refines
            terms["stack1_mse"] = tf.reduce_mean(flow_mse(tf.stop_gradient(outputs[0]), label))
        return terms

    # ---- validation: flow MSE, lower is better --------------------------------------------------

    def validation_scores(self, output, target):
        return {"flow_mse": flow_mse(output, target)}

    def validation_text(self, result):
        return f"flow MSE {result['flow_mse']:.4f}"

    def validation_images(self, inputs, output, target):
        """u and v of the label (fixed) and of the estimate, as grey images: u in [0, u_max] and
        v in [-u_max, u_max] map to [0, 1] (0.5 = no vertical motion)."""
        scale = float(self.u_max or DISPLAY_FLOW_RANGE)

        def grey(flow, channel):
            values = tf.cast(flow[..., channel : channel + 1], tf.float32)
            values = values / scale if channel == 0 else 0.5 + values / (2.0 * scale)
            return tf.clip_by_value(values, 0.0, 1.0)

        fixed = {"blur": inputs, "label_u": grey(target, 0), "label_v": grey(target, 1)}
        return fixed, {"flow_u": grey(output, 0), "flow_v": grey(output, 1)}

    # ---- run folder ------------------------------------------------------------------------------

    def run_config(self):
        """Model entries plus what a resume must not change: the stage, joint fine-tuning, the
        data set's ``u_max`` and the Adam formula."""
        return {
            **super().run_config(),
            "optimizer": optimizers.FORMULA_NAMES[self.adam_formula],
            "stage": self.stage,
            "sen_joint_finetune": self.joint_finetune,
            "u_max": self.u_max,
        }

    def describe(self):
        initial = self.schedule(0) if callable(self.schedule) else self.schedule
        trained = "stacks 1 and 2 (joint fine-tuning)" if self.joint_finetune else "stack 2"
        loss = "MSE of the flow (eq. 1), " + (
            "H/4 output vs 4x4-box-averaged label" if self.quarter else "full resolution"
        )
        info = {
            "optimizer_settings": f"lr={float(initial):g}, betas=({self.beta_1:g}, "
            f"{self.beta_2:g}), epsilon={self.epsilon:g}",
            "schedule": self.schedule_text,
            "loss": loss,
            "trained": "stack 1 (one-stack SEN)" if self.stage == 1 else trained,
            "parameters": int(sum(int(tf.size(v)) for v in self.model.trainable_variables)),
        }
        if self.stage == 2:
            info["init_from"] = self.init_weights or "none (stack 1 at its initialisation)"
        return info
