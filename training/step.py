"""The per-paper step object that :class:`training.loop.Trainer` drives (interface in
``training/__init__.py``), with the gradient helper every paper shares and
:class:`SingleModelTrainStep`, the one-model / one-Adam / one-loss step that MIMO-UNet, IDC and
Two-Way specialise."""

from __future__ import annotations

import tensorflow as tf

from training import optimizers, schedules


class TrainStep:
    """Base class of a paper's training step. Subclasses set the attributes and implement
    :meth:`build`, :meth:`checkpoint_items` and :meth:`train_step`.

    Attributes:
        paper: the paper / script name written to ``run_config.json`` (``"mimo_unet"``).
        model_name: the registry name of the inference model (``models.build_model``).
        model_kwargs: the keyword overrides it was built with (JSON-serialisable).
        progress_terms: the returned terms shown on the progress line (default ``("loss",)``).
    """

    paper: str = ""
    model_name: str = ""
    model_kwargs: dict = {}
    # Keys of train_step's dict shown on the progress line (all of them go to TensorBoard).
    progress_terms: tuple = ("loss",)

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

    # Validation runs the inference model through ``predict``: traced by the loop (a
    # ``tf.function``) unless ``predict_traced`` is False (a step whose prediction is faster
    # eagerly, e.g. RP-GAN's framework with its CSR blur operator).
    predict_traced = True

    def predict(self, blur):
        """The validation prediction for (1, H, W, 3) ``blur`` in [0, 1]: the inference model run
        through :func:`models.inference.restore` (padded, cropped back, not clamped)."""
        from models.inference import restore

        return restore(self.inference_model, blur)

    def optimizers(self) -> dict:
        """Name -> Keras optimizer (as checkpointed: the inner Adam of a loss-scaling wrapper);
        default: the checkpoint items with an ``iterations`` counter."""
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

    # ---- validation (the loop's validate() and best/) -------------------------------------------
    # The score that selects best/ and its direction: a deblurring step keeps the best PSNR; a
    # flow estimator (SEN) the lowest flow MSE.
    validation_metric: str = "psnr"
    validation_higher_is_better: bool = True

    def validation_scores(self, output, target) -> dict:
        """Per-image scores of one validation batch: name -> (N,) tensor. ``output`` is the
        inference model's prediction for the set's input (:meth:`ValidationSet.tensors`),
        ``target`` the set's label. Default: PSNR/SSIM of a restored image against the sharp one
        (uint8 convention, :func:`metrics.batch_psnr_ssim`)."""
        import metrics

        psnr, ssim = metrics.batch_psnr_ssim(output, target)
        return {"psnr": psnr, "ssim": ssim}

    def validation_text(self, result) -> str:
        """The scores of a validation ``result`` (means) as the progress message states them."""
        return f"PSNR {result['psnr']:.3f} dB, SSIM {result['ssim']:.4f}"

    def validation_images(self, inputs, output, target) -> tuple[dict, dict]:
        """TensorBoard images of one validation pair: ``(fixed, varying)`` dicts name -> (1, H,
        W, 1|3) float in [0, 1]; ``fixed`` (input, label) are logged once per process, ``varying``
        at every validation."""
        return {"blur": inputs, "sharp": target}, {"output": tf.clip_by_value(output, 0.0, 1.0)}

    def run_config(self) -> dict:
        """The run-directory contract's model entries of ``run_config.json``."""
        return {
            "model": self.model_name,
            "model_kwargs": dict(self.model_kwargs),
            "paper": self.paper,
        }


class SingleModelTrainStep(TrainStep):
    """One registry model, one Adam optimizer, one loss: the step of MIMO-UNet, IDC and Two-Way.

    A paper's step only chooses the model, the loss, the learning-rate schedule and the Adam
    formula; building the model and optimizer, the gradient tape and the update are here once.

    ``loss_model_options`` (class attribute) names model attributes passed to the loss as keyword
    arguments once the model is built: IDC and Two-Way pass ``pyramid_mode`` so that the labels of
    the coarser scales are made the way the model makes its input pyramid ("obtained in the same
    way"), whatever ``model_kwargs`` chose.

    Args:
        model_name: registry name (``models.build_model``).
        loss_fn: ``(predictions, sharp) -> dict`` with the total under ``"loss"`` (the contract of
            :mod:`losses`); every entry is logged.
        schedule: a ``keras.optimizers.schedules.LearningRateSchedule`` (keyed on the optimizer's
            iteration counter, so a restored checkpoint restores its position) or a float.
        model_kwargs: ``models.build_model`` overrides (JSON-serialisable).
        beta_1, beta_2, epsilon: Adam's parameters (0.9, 0.999, 1e-8: PyTorch's and TF1's
            defaults; Keras 3's epsilon default is 1e-7, so it is always passed explicitly).
        adam_formula: ``"pytorch"`` (papers whose original code is PyTorch) or ``"keras"`` (TF1's
            ``AdamOptimizer``), see :mod:`training.optimizers`; recorded in ``run_config.json``
            as ``"optimizer"``.
        schedule_text, loss_text: one-line descriptions for the run summary.
    """

    loss_model_options: tuple = ()

    def __init__(
        self,
        model_name,
        *,
        loss_fn,
        schedule,
        model_kwargs=None,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        adam_formula="keras",
        schedule_text="",
        loss_text="",
    ):
        if adam_formula not in optimizers.FORMULAS:
            raise ValueError(
                f"adam_formula must be one of {optimizers.FORMULAS}, got {adam_formula!r}."
            )
        self.model_name, self.model_kwargs = model_name, dict(model_kwargs or {})
        self.loss_fn, self.schedule = loss_fn, schedule
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.adam_formula = adam_formula
        self.schedule_text, self.loss_text = schedule_text, loss_text
        self.model = self.optimizer = None
        self.loss_options = {}

    def build(self, strategy):
        from models import build_model  # lazy: the loop's unit tests need no model registry

        with strategy.scope():
            self.model = build_model(self.model_name, **self.model_kwargs)
            self.model.build((None, None, None, 3))
            self.optimizer = optimizers.make_adam(
                self.adam_formula,
                learning_rate=self.schedule,
                beta_1=self.beta_1,
                beta_2=self.beta_2,
                epsilon=self.epsilon,
            )
            # Slots must exist before a restore (Keras 3 otherwise drops Adam's moments) and before
            # the first step under MirroredStrategy (variables cannot be created in a replica).
            self.optimizer.build(self.model.trainable_variables)
        self.loss_options = {name: getattr(self.model, name) for name in self.loss_model_options}

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": optimizers.checkpointed(self.optimizer)}

    def train_step(self, blur, sharp):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            predictions = self.model(blur, training=True)
            terms = self.loss_fn(predictions, sharp, **self.loss_options)
        grads = minimize(tape, terms["loss"], variables, self.optimizer)
        return {**terms, **loss_scale_terms({"optimizer": grads}, {"optimizer": self.optimizer})}

    def describe(self):
        # Not "optimizer": that key is run_config()'s identity entry, which describe() must not
        # overwrite in run_config.json.
        initial = self.schedule(0) if callable(self.schedule) else self.schedule
        loss = self.loss_text
        if self.loss_options:
            options = ", ".join(f"{k}={v!r}" for k, v in sorted(self.loss_options.items()))
            loss = f"{loss}; labels follow the model's {options}"
        return {
            "optimizer_settings": f"lr={float(initial):g}, betas=({self.beta_1:g}, "
            f"{self.beta_2:g}), epsilon={self.epsilon:g}",
            "schedule": self.schedule_text,
            "loss": loss,
            "parameters": int(sum(int(tf.size(v)) for v in self.model.trainable_variables)),
        }

    def run_config(self):
        """The base entries plus ``"optimizer"``: ``"Adam (PyTorch formula)"`` or ``"Adam (Keras
        formula)"`` (:data:`training.optimizers.FORMULA_NAMES`), which a resume must not change."""
        return {**super().run_config(), "optimizer": optimizers.FORMULA_NAMES[self.adam_formula]}


class PolynomialDecayTrainStep(SingleModelTrainStep):
    """A :class:`SingleModelTrainStep` whose rate follows SRN's polynomial decay over the whole run,
    then is held (:func:`training.schedules.polynomial_decay`): the IDC and Two-Way recipes.

    Args:
        model_name, loss_fn, model_kwargs, epsilon, adam_formula, loss_text: as
            :class:`SingleModelTrainStep`.
        total_steps: length of the run; the rate decays over it.
        learning_rate, end_learning_rate, power: ``lr0``, ``end`` and the power of the decay.
    """

    def __init__(
        self,
        model_name,
        *,
        loss_fn,
        total_steps,
        learning_rate,
        end_learning_rate,
        power,
        model_kwargs=None,
        epsilon=1e-8,
        adam_formula="keras",
        loss_text="",
    ):
        super().__init__(
            model_name,
            loss_fn=loss_fn,
            schedule=schedules.polynomial_decay(
                learning_rate, total_steps, end_learning_rate, power
            ),
            model_kwargs=model_kwargs,
            epsilon=epsilon,
            adam_formula=adam_formula,
            schedule_text=f"polynomial decay {learning_rate:g} -> {end_learning_rate:g}, power "
            f"{power:g}, over {total_steps} steps, then held",
            loss_text=loss_text,
        )


def minimize(tape, loss, variables, optimizer, output_gradients=None):
    """Applies one update for a per-replica mean ``loss`` recorded on ``tape``.

    Keras 3's optimizer all-reduces (sums) the gradients over replicas in ``apply_gradients``, so
    each replica's gradients are first divided by the number of replicas R: with equal per-replica
    batches (the loop drops remainders) the sum is the gradient of the mean over the global batch,
    as on one device. A loss-scaling optimizer (float16, :mod:`training.optimizers`) gets the
    gradients of ``scale * loss`` (the backward pass seeded with the scale, so float16 gradients
    do not underflow); it unscales them, and skips the update if any is not finite.
    ``output_gradients``: the seed when ``loss`` is not a scalar (e.g. a cotangent of G's output);
    it is multiplied by the scale too. Returns the gradients as applied (per replica, scaled).
    """
    seed = output_gradients
    scale = optimizers.loss_scale(optimizer)
    if scale is not None:
        seed = tf.cast(scale, loss.dtype) * (1.0 if seed is None else seed)
    grads = tape.gradient(loss, variables, output_gradients=seed)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        grads = [None if g is None else g / replicas for g in grads]
    optimizer.apply_gradients(zip(grads, variables, strict=True))
    return grads


def loss_scale_terms(named_grads: dict, optimizers_by_name: dict) -> dict:
    """The float16 bookkeeping to log for one step: ``skipped_updates`` (updates whose scaled
    gradients were not finite, so the optimizer skipped them and halved its scale) and
    ``loss_scale`` (the first optimizer's scale after the step). Empty when no optimizer scales
    its loss (float32, bfloat16), so other precisions log nothing more."""
    scaled = {k: o for k, o in optimizers_by_name.items() if optimizers.loss_scale(o) is not None}
    if not scaled:
        return {}
    skipped = [
        1.0 - tf.cast(_all_finite(named_grads[name]), tf.float32)
        for name in scaled
        if name in named_grads
    ]
    first = next(iter(scaled.values()))
    return {
        "skipped_updates": tf.add_n(skipped) if skipped else tf.constant(0.0),
        "loss_scale": tf.identity(optimizers.loss_scale(first)),
    }


def _all_finite(grads):
    present = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
    return tf.reduce_all(tf.stack(present)) if present else tf.constant(True)
