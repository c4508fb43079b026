"""Adversarial training in the one loop: a generator, one or more critics, an optimizer each.

:class:`AdversarialTrainStep` is the step object of every GAN paper (GradientNet GAN now, RP-GAN
next); :class:`training.loop.Trainer` drives it like any other step. One call of
:meth:`~AdversarialTrainStep.train_step` on a (blur, sharp) batch (DeblurGAN's practice, which
GradientNet's "the generator is updated once, and the discriminator is upgraded 5 times" follows,
gradientnet.md section 5):

1. G(b) is computed once, on the generator's tape;
2. ``critic_steps`` (n) updates of every critic on that same batch and that same G(b) (a constant
   for the critics), each with its own tape and optimizer;
3. one generator update with the generator loss, which sees the critics as updated in 2 (their
   weights are not changed by it). The generator's tape is paused during 2, so it records nothing
   of the critic updates and G(b) is not recomputed.

Every network and optimizer is built in ``build`` (before any restore: Keras 3 drops Adam's moments
restored into unbuilt slots, and slots cannot be created inside a MirroredStrategy replica) and is
a checkpoint item: ``model`` / ``optimizer`` are the generator (the inference model validation,
``best/`` and ``inference.model_io`` use) and its Adam, each critic ``<name>`` has
``<name>_optimizer``. The loop restores them strictly. Each optimizer's learning rate is logged.

Random draws inside the step (e.g. WGAN-GP's per-sample epsilon) use stateless seeds made from
``seed``, the generator's update counter and the critic update index (:meth:`step_seed`), drawn for
the *global* batch and sliced to this replica's samples (:meth:`global_uniform`): a resumed run
draws what an uninterrupted one would, and R replicas draw what one device draws.

Subclasses implement :meth:`build_networks`, :meth:`generate`, :meth:`critic_loss` and
:meth:`generator_loss`, and may override :meth:`build_loss_networks` (frozen feature extractors,
built in the strategy scope, not checkpointed).
"""

from __future__ import annotations

import tensorflow as tf

from training import optimizers
from training.step import TrainStep, loss_scale_terms, minimize


class AdversarialTrainStep(TrainStep):
    """n critic updates, then one generator update, on the same batch (see the module docstring).

    Args:
        model_name: registry name of the generator (the inference model).
        model_kwargs: ``models.build_model`` overrides of the generator (JSON-serialisable).
        critic_kwargs: name -> constructor overrides of each critic (JSON-serialisable); the keys
            name the critics and their checkpoint items (``"critic"``, ``"critic_optimizer"``).
        critic_steps: critic updates per generator update (n).
        learning_rate, critic_learning_rate: Adam rates of the generator and of every critic
            (``critic_learning_rate=None``: the generator's).
        beta_1, beta_2, epsilon, adam_formula: Adam's settings, the same for every optimizer;
            ``adam_formula`` as :func:`training.optimizers.make_adam`.
        seed: base of the stateless seeds of the step's random draws.
    """

    progress_terms = ("loss", "critic_loss")

    def __init__(
        self,
        model_name,
        *,
        model_kwargs=None,
        critic_kwargs=None,
        critic_steps=5,
        learning_rate=1e-4,
        critic_learning_rate=None,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        adam_formula="pytorch",
        seed=0,
    ):
        if adam_formula not in optimizers.FORMULAS:
            raise ValueError(
                f"adam_formula must be one of {optimizers.FORMULAS}, got {adam_formula!r}."
            )
        if critic_steps < 1:
            raise ValueError(f"critic_steps must be >= 1, got {critic_steps}.")
        self.model_name, self.model_kwargs = model_name, dict(model_kwargs or {})
        self.critic_kwargs = {k: dict(v) for k, v in (critic_kwargs or {"critic": {}}).items()}
        self.critic_steps = int(critic_steps)
        self.learning_rate = learning_rate
        self.critic_learning_rate = (
            learning_rate if critic_learning_rate is None else (critic_learning_rate)
        )
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.adam_formula, self.seed = adam_formula, int(seed)
        self.model = self.optimizer = None
        self.critics, self.critic_optimizers = {}, {}

    # ---- subclass hooks --------------------------------------------------------------------------

    def build_networks(self):
        """Returns ``(generator, {name: critic})``, unbuilt Keras models (called in the scope)."""
        raise NotImplementedError

    def build_loss_networks(self):
        """Builds frozen loss networks (e.g. VGG19) in the strategy scope; default none."""

    def generate(self, *batch):
        """``(inputs, fake)``: whatever the losses need from the batch (``(blur, sharp)`` for the
        deblurring GANs, RP-GAN's ``(I*, O, I_s)``), and G's output on the generator's tape
        (training mode). ``inputs`` is passed on to the two loss hooks."""
        raise NotImplementedError

    def critic_loss(self, name, inputs, fake, update):
        """Dict of scalars with ``"loss"`` for critic ``name``'s ``update``-th (0-based) update;
        ``fake`` is constant here. Runs under that critic's tape."""
        raise NotImplementedError

    def generator_loss(self, inputs, fake):
        """Dict of scalars with ``"loss"`` (the generator's objective), under G's tape."""
        raise NotImplementedError

    # ---- building --------------------------------------------------------------------------------

    def _adam(self, learning_rate):
        return optimizers.make_adam(
            self.adam_formula,
            learning_rate=learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
        )

    def build(self, strategy):
        with strategy.scope():
            self.model, self.critics = self.build_networks()
            # A conditional generator (RP-GAN's G reads concat(I*, O)) declares its input width.
            self.model.build((None, None, None, getattr(self.model, "in_channels", 3)))
            self.optimizer = self._adam(self.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
            for name, critic in self.critics.items():
                critic.build((None, None, None, critic.in_channels))
                optimizer = self._adam(self.critic_learning_rate)
                optimizer.build(critic.trainable_variables)
                self.critic_optimizers[name] = optimizer
            self.build_loss_networks()

    def checkpoint_items(self):
        items = {"model": self.model, "optimizer": optimizers.checkpointed(self.optimizer)}
        for name, critic in self.critics.items():
            items[name] = critic
            items[f"{name}_optimizer"] = optimizers.checkpointed(self.critic_optimizers[name])
        return items

    # ---- the step --------------------------------------------------------------------------------

    def train_step(self, *batch):
        return self._step(batch, update_critics=True)

    def update_generator(self, *batch):
        """The generator half of :meth:`train_step` alone (G(b), L_G, one update of G; the
        critics unchanged): what ``benchmarks/train_step.py`` times beside the critic updates."""
        return self._step(batch, update_critics=False)

    # True when :meth:`minimize_generator` takes more than one gradient of the generator's tape.
    persistent_generator_tape = False

    def _step(self, batch, update_critics):
        with tf.GradientTape(persistent=self.persistent_generator_tape) as tape:
            inputs, fake = self.generate(*batch)
            critic_terms = {}
            if update_critics:
                with tape.stop_recording():
                    critic_terms = self.update_critics(inputs, fake)
            terms = self.generator_loss(inputs, fake)
        diagnostics = self.minimize_generator(tape, terms, fake)
        return {**terms, **diagnostics, **critic_terms}

    def minimize_generator(self, tape, terms, fake):
        """One update of G from ``tape`` (which recorded :meth:`generate`, whose output is
        ``fake``, and :meth:`generator_loss`) and the loss ``terms``; returns further scalars to
        log (float16: the loss-scale bookkeeping, :func:`training.step.loss_scale_terms`). A
        subclass that reads several gradients of the tape sets
        :attr:`persistent_generator_tape`."""
        grads = minimize(tape, terms["loss"], self.model.trainable_variables, self.optimizer)
        return self.generator_scale_terms(grads)

    def generator_scale_terms(self, grads):
        """:func:`training.step.loss_scale_terms` of G's update (empty unless float16)."""
        return loss_scale_terms({"optimizer": grads}, {"optimizer": self.optimizer})

    def critic_loss_scale(self, name):
        """The loss scale of critic ``name``'s optimizer (float16), else ``None``: a gradient
        penalty seeds its nested input gradient with it (:mod:`training.adversarial`)."""
        return optimizers.loss_scale(self.critic_optimizers[name])

    def update_critics(self, inputs, fake):
        """``critic_steps`` updates of every critic; returns the terms of the last update of each,
        prefixed with the critic's name (``critic_loss``, ``critic_wasserstein``, ``critic_real``
        for a critic named ``critic``)."""
        fake = tf.stop_gradient(fake)
        logged, skipped = {}, []
        for update in range(self.critic_steps):
            for name, critic in self.critics.items():
                with tf.GradientTape() as tape:
                    terms = self.critic_loss(name, inputs, fake, update)
                optimizer = self.critic_optimizers[name]
                grads = minimize(tape, terms["loss"], critic.trainable_variables, optimizer)
                logged.update({_prefixed(name, key): value for key, value in terms.items()})
                scale_terms = loss_scale_terms({name: grads}, {name: optimizer})
                if scale_terms:
                    skipped.append(scale_terms["skipped_updates"])
        if skipped:  # float16: G's terms add its own skip; the loop logs the sum
            logged["critic_skipped_updates"] = tf.add_n(skipped)
        return logged

    # ---- seeded randomness -----------------------------------------------------------------------

    def step_seed(self, update=0):
        """Stateless seed (2,) int64 for the ``update``-th critic update of the current generator
        step (the generator's update counter)."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), step * self.critic_steps + update])

    @staticmethod
    def global_uniform(local_batch, seed):
        """This replica's slice of U(0, 1) values (B_global, 1, 1, 1) drawn for the global batch:
        shape (``local_batch``, 1, 1, 1), equal to one device's draw for the same samples."""
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        replica = context.replica_id_in_sync_group if context is not None else 0
        values = tf.random.stateless_uniform(
            tf.stack([local_batch * replicas, 1, 1, 1]), seed=seed, dtype=tf.float32
        )
        start = tf.cast(replica, tf.int32) * local_batch
        return values[start : start + local_batch]

    # ---- records ---------------------------------------------------------------------------------

    def run_config(self):
        """Base entries plus every critic's configuration, the optimizers' formula and the number
        of critic updates: a resume that changes any of them is refused."""
        formula = optimizers.FORMULA_NAMES[self.adam_formula]
        config = {**super().run_config(), "optimizer": formula}
        # Known before build (the loop compares it with the run folder's record first).
        config["critics"] = {
            name: {"kwargs": kwargs, "optimizer": formula}
            for name, kwargs in self.critic_kwargs.items()
        }
        config["critic_steps"] = self.critic_steps
        return config

    def describe(self):
        def count(model):
            return int(sum(int(tf.size(v)) for v in model.trainable_variables))

        described = {
            "optimizer_settings": f"Adam, lr={self.learning_rate:g} (generator), "
            f"{self.critic_learning_rate:g} (critics), betas=({self.beta_1:g}, {self.beta_2:g}), "
            f"epsilon={self.epsilon:g}, constant",
            "critic_updates_per_generator_update": self.critic_steps,
            "parameters": count(self.model),
        }
        for name, critic in self.critics.items():
            described[f"parameters_{name}"] = count(critic)
        return described


def _prefixed(name, key):
    """``<name>_<key>`` unless ``key`` already starts with it (``critic_real`` stays)."""
    return key if key.startswith(f"{name}_") else f"{name}_{key}"
