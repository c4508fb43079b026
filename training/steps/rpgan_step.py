"""The RP-GAN step object (Wu et al., paper section 4.2; sen_rpgan.md sections 8-9).

Batches are ``(I*, O, I_s)``: the deconvolved image of the HQS data step, the observed blurred
image and the sharp image, each (B, h, w, 3) float32 in [0, 1] (from the deconvolution cache in
pre-training, from the replay buffer afterwards; :mod:`training.rpgan.deconv_cache`,
:mod:`training.rpgan.replay_buffer`). One call of :meth:`RPGANTrainStep.train_step` (section 9):

1. G(concat(I*, O)) once, on the generator's tape (BN in training mode);
2. one update of **D_cGAN** on real concat(I_s, O) and fake concat(G(I*, O), O), G's output
   detached, binary cross-entropy from logits (eq. 5, :func:`losses.cgan_discriminator_loss`);
3. one update of **D_p** on (I*, O) (eq. 6, :func:`training.adversarial.artifact_critic_loss`),
   then every trainable D_p variable clipped to [-0.01, 0.01] (``dp_lipschitz="clip"``, the cited
   WGAN's method, register 15) or a WGAN-GP penalty instead (``dp_lipschitz="gp"``, D_p without
   BN only: ``critic_kwargs={"d_style": "no_bn"}``);
4. one update of **G** with L_RP-GAN = L_c + gamma L_cGAN + lambda L_p
   (:func:`losses.rpgan_generator_loss`; gamma 0.01, lambda 0.1, VGG16 ``block2_conv2`` content
   loss), which sees both critics as updated in 2-3.

``use_dp=False`` (Appendix B): lambda = 0 and no D_p is built, updated or checkpointed.

Reading the Appendix B ablation: with D_p's weights clipped to +-0.01 its patch values are tiny,
so lambda L_p is ~1e-5 beside a content loss of ~16, and the loss values alone cannot tell whether
L_p moves G at all. With D_p (and lambda > 0) the step therefore logs

    ``lp_grad_ratio`` = ||grad_G lambda L_p|| / ||grad_G (L_c + gamma L_cGAN [+ pixel term])||

global L2 norms over G's trainable variables, the terms weighted as in L_RP-GAN, float32, 0 when
no sample's hinge is active: L_p's share of G's update against the rest of the objective. The
denominator is L_c's gradient plus gamma L_cGAN's (gamma = 0.01; measured at initialisation, full
widths, 128 x 128 crops: norms 205 and 0.085, the sum's norm within 1e-5 of L_c's): L_c's alone
would cost a third backward pass through G, this costs one extra (the update is unchanged:
:meth:`RPGANTrainStep.minimize_generator`; measured 1.45-1.6 times the CPU time of a step, G's
backward pass dominating). Under ``tf.distribute`` each replica computes it from its own share of
the batch and the loop logs the mean over replicas (not the ratio of the all-reduced gradients,
which would cost two more all-reduces of G's gradient). ``log_lp_grad_ratio=False`` skips it.

Adam with **PyTorch's formula**, betas (0.9, 0.99), epsilon 1e-8 for all three networks ("the same
solver as SEN"). The rate (a float or a ``LearningRateSchedule``) is passed in; every optimizer is
called with its own iteration counter, which equals the generator's at every update because each
network is updated exactly once per step, so the schedule is keyed on G's step as section 9 says.

The VGG16 extractor is built in the strategy scope, frozen, called in inference mode and never
checkpointed: random seeded weights (:data:`models.vgg.RANDOM_VGG_SEED`) unless a weight file is
given; ``run_config.json`` identifies them (``"random"`` or the file's md5).

Checkpoint items (:class:`training.gan_step.AdversarialTrainStep`): ``model`` = G (what inference
reads), ``optimizer``, ``d_cgan``, ``d_cgan_optimizer`` and, with D_p, ``d_p``, ``d_p_optimizer``.
Under ``tf.distribute`` each replica computes its share of the batch; gradients are divided by the
replica count before Keras' all-reduce (:func:`training.step.minimize`), the clipping runs in
cross-replica context (a ``merge_call``: Keras variables are created with aggregation "none",
which forbids assignments in a replica) and the WGAN-GP epsilon is drawn for the global batch and
sliced (:meth:`~training.gan_step.AdversarialTrainStep.global_uniform`).
"""

from __future__ import annotations

import tensorflow as tf

import losses
from training import adversarial, optimizers
from training import strategy as strategy_lib
from training.gan_step import AdversarialTrainStep

# Section 9: Adam(0.9, 0.99, 1e-8) for G, D_cGAN and D_p; lr 1e-4 (then the schedule).
RPGAN_BETA_1, RPGAN_BETA_2, RPGAN_EPSILON = 0.9, 0.99, 1e-8
RPGAN_LEARNING_RATE = 1e-4
D_CGAN, D_P = "d_cgan", "d_p"


def clip_in_any_context(variables, limit=adversarial.DP_CLIP_LIMIT):
    """:func:`training.adversarial.clip_weights` callable from a replica (``strategy.run``): the
    assignments run in cross-replica context through ``merge_call``, each mirrored copy set to the
    same clipped value."""
    context = tf.distribute.get_replica_context()
    if context is None:  # already cross-replica
        adversarial.clip_weights(variables, limit)
        return

    def merged(strategy):
        def clip(variable):
            return variable.assign(tf.clip_by_value(variable, -limit, limit))

        for variable in variables:
            strategy.extended.update(getattr(variable, "value", variable), clip)

    context.merge_call(merged)


class RPGANTrainStep(AdversarialTrainStep):
    """One RP-GAN update (D_cGAN, D_p + clipping, then G) on an (I*, O, I_s) batch.

    Args:
        model_kwargs: :func:`models.rpgan.rpgan_generator` overrides (``g_up_widths``,
            ``width_divisor``, ``init``).
        critic_kwargs: :func:`models.rpgan.rpgan_discriminator` overrides shared by both critics
            (``d_style``, ``width_divisor``, ``init``); ``conditional`` is set per critic.
        dp_kwargs: further overrides of D_p only (e.g. ``{"d_style": "no_bn"}`` for the penalty).
        use_dp: False for Appendix B (no D_p, lambda = 0).
        learning_rate: float or ``LearningRateSchedule`` for all three optimizers.
        beta_1, beta_2, epsilon, adam_formula: Adam (0.9, 0.99, 1e-8, ``"pytorch"``).
        cgan_weight, penalty_weight: gamma (0.01) and lambda (0.1).
        content_feature_scale: s of the content loss (1/57.5).
        pixel_weight: weight of an L1 pixel term (0: the paper; ``--preset quick`` only).
        g_adv_form: ``"saturating"`` (as written) or ``"non_saturating"``.
        dp_lipschitz: ``"clip"`` (weight clipping to +-``clip_limit``) or ``"gp"``.
        dp_gp_weight: WGAN-GP weight with ``"gp"`` (10).
        vgg_weights_path: local VGG16 notop weight file, or None for seeded random weights.
        vgg_weights_id: how ``run_config.json`` identifies them (md5 or ``"random"``).
        seed: base of the stateless seeds (the ``"gp"`` epsilon).
        replay_snapshot: build the replay buffer's frozen snapshot G̃ with the networks and
            checkpoint it (items ``snapshot`` and ``snapshot_cycle``, the buffer cycle it was
            taken for, -1 before the first): a resumed run rebuilds its buffer from the same G̃
            (:mod:`training.rpgan.rpgan_data`).
        sen: the frozen flow estimator of validation; with it, validation runs the whole
            framework (:meth:`predict`), without it there is nothing to validate with.
        sen_record: how ``run_config.json`` identifies the SEN (``"sen"``: model, kwargs, weight
            file, digest; the run-directory contract of an RP-GAN run); None: not recorded.
        framework_kwargs: :class:`deconvolution.framework.BlindDeblurFramework` settings of
            validation (``levels``, ``betas``, ``cg_tol``, ``cg_max_iter``), recorded as
            ``"framework"`` with a ``sen_record``.
        log_lp_grad_ratio: log ``lp_grad_ratio`` (module docstring) when D_p is used and
            lambda > 0; False saves its extra backward pass through G.
    """

    paper = "rpgan"

    def __init__(
        self,
        *,
        model_kwargs=None,
        critic_kwargs=None,
        dp_kwargs=None,
        use_dp=True,
        learning_rate=RPGAN_LEARNING_RATE,
        beta_1=RPGAN_BETA_1,
        beta_2=RPGAN_BETA_2,
        epsilon=RPGAN_EPSILON,
        adam_formula="pytorch",
        cgan_weight=losses.RPGAN_CGAN_WEIGHT,
        penalty_weight=losses.RPGAN_PENALTY_WEIGHT,
        content_feature_scale=losses.RPGAN_CONTENT_FEATURE_SCALE,
        g_adv_form="saturating",
        pixel_weight=0.0,
        dp_lipschitz="clip",
        dp_gp_weight=losses.RPGAN_DP_GP_WEIGHT,
        clip_limit=adversarial.DP_CLIP_LIMIT,
        vgg_weights_path=None,
        vgg_weights_id="random",
        seed=0,
        replay_snapshot=False,
        sen=None,
        sen_record=None,
        framework_kwargs=None,
        log_lp_grad_ratio=True,
    ):
        shared = dict(critic_kwargs or {})
        critics = {D_CGAN: {**shared, "conditional": True}}
        if use_dp:
            critics[D_P] = {**shared, **dict(dp_kwargs or {}), "conditional": False}
        super().__init__(
            "rpgan_generator",
            model_kwargs=model_kwargs,
            critic_kwargs=critics,
            critic_steps=1,
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            adam_formula=adam_formula,
            seed=seed,
        )
        if g_adv_form not in losses.G_ADV_FORMS:
            raise ValueError(f"g_adv_form must be one of {losses.G_ADV_FORMS}, got {g_adv_form!r}.")
        if dp_lipschitz not in adversarial.DP_LIPSCHITZ:
            raise ValueError(
                f"dp_lipschitz must be one of {adversarial.DP_LIPSCHITZ}, got {dp_lipschitz!r}."
            )
        self.use_dp = bool(use_dp)
        self.weights = {
            "cgan_weight": float(cgan_weight),
            "penalty_weight": float(penalty_weight) if self.use_dp else 0.0,
            "content_feature_scale": float(content_feature_scale),
            "g_adv_form": g_adv_form,
            "pixel_weight": float(pixel_weight),
        }
        self.lp_grad_ratio = bool(log_lp_grad_ratio) and self.weights["penalty_weight"] > 0
        # minimize_generator then takes four gradients of the generator's tape: persistent.
        self.persistent_generator_tape = self.lp_grad_ratio
        self.dp_lipschitz, self.dp_gp_weight = dp_lipschitz, float(dp_gp_weight)
        self.clip_limit = float(clip_limit)
        self.vgg_weights_path, self.vgg_weights_id = vgg_weights_path, vgg_weights_id
        self.vgg = None
        self.replay_snapshot, self.snapshot, self.snapshot_cycle = bool(replay_snapshot), None, None
        self.sen, self.sen_record = sen, sen_record
        self.framework_kwargs = dict(framework_kwargs or {})
        self.progress_terms = (
            ("loss", "content", "cgan_weighted", "d_cgan_loss")
            + (("penalty_weighted", "d_p_wasserstein") if self.use_dp else ())
            + (("pixel_weighted",) if pixel_weight else ())
        )

    # ---- networks --------------------------------------------------------------------------------

    def build_networks(self):
        from models.rpgan import rpgan_discriminator, rpgan_generator

        critics = {name: rpgan_discriminator(**kw) for name, kw in self.critic_kwargs.items()}
        if D_P in critics and self.dp_lipschitz == "gp" and critics[D_P].has_batch_norm:
            raise ValueError(
                'dp_lipschitz="gp" needs a D_p without batch normalisation '
                '(d_style "no_bn"; spec section 8, register 15).'
            )
        return rpgan_generator(**self.model_kwargs), critics

    def build_loss_networks(self):
        from models.vgg import VGGWeightsError, build_vgg16_features
        from training.loop import ConfigError

        try:
            self.vgg = build_vgg16_features(self.vgg_weights_path)
        except VGGWeightsError as error:  # the file exists but holds something else
            raise ConfigError(str(error)) from None

    def build(self, strategy):
        super().build(strategy)
        self.chief = strategy_lib.is_chief(strategy)  # who writes the run's files
        if self.replay_snapshot:
            from training.rpgan.replay_buffer import make_snapshot

            with strategy.scope():
                self.snapshot = make_snapshot(self.model, self.model.in_channels)
            # Outside the scope: a plain counter, assigned eagerly by the data pipeline.
            self.snapshot_cycle = tf.Variable(-1, dtype=tf.int64, trainable=False)

    def checkpoint_items(self):
        items = super().checkpoint_items()
        if self.replay_snapshot:
            items.update(snapshot=self.snapshot, snapshot_cycle=self.snapshot_cycle)
        return items

    # ---- validation: the whole framework ---------------------------------------------------------

    def framework(self):
        """The framework of validation: the frozen SEN, the live G (inference mode)."""
        from deconvolution.framework import BlindDeblurFramework

        if self.sen is None:
            raise RuntimeError("RPGANTrainStep: validation needs the frozen SEN (sen=...).")
        return BlindDeblurFramework(self.sen, self.model, **self.framework_kwargs)

    def predict(self, blur):
        """``{"restored": Z_N, "identity_prior_hqs": I*_N}`` for (1, H, W, 3) ``blur``: the
        framework's restored image (``sen_rpgan.md`` §10) and the identity-prior HQS baseline
        with the same SEN, K and β ladder, computed together (they share SEN, K and the level-1
        solve; later levels solve both as columns of one CG: about the cost of the framework
        alone). The loop traces it (K as a ``SparseTensor``: at 256², with CG's loop in the
        graph, several times faster than eagerly)."""
        restored, identity = self.framework().with_identity_prior(blur)
        return {"restored": restored, "identity_prior_hqs": identity}

    def validation_scores(self, output, target) -> dict:
        """PSNR/SSIM (uint8 convention) of the framework and of the identity-prior HQS."""
        import metrics

        scores = {}
        for prefix, key in (("", "restored"), ("identity_prior_hqs_", "identity_prior_hqs")):
            psnr, ssim = metrics.batch_psnr_ssim(output[key], target)
            scores.update({f"{prefix}psnr": psnr, f"{prefix}ssim": ssim})
        return scores

    def validation_text(self, result) -> str:
        return (
            f"{super().validation_text(result)} (identity-prior HQS: "
            f"{result['identity_prior_hqs_psnr']:.3f} dB, {result['identity_prior_hqs_ssim']:.4f})"
        )

    def validation_images(self, inputs, output, target):
        return super().validation_images(inputs, output["restored"], target)

    # ---- the step --------------------------------------------------------------------------------

    def generate(self, deconvolved, blurred, sharp):
        """``(inputs, G(concat(I*, O)))`` for this replica's (I*, O, I_s), each (B/R, h, w, 3)
        float32 in [0, 1]; ``inputs`` is the float32 batch by name. ``train_step(I*, O, I_s)`` and
        ``update_generator(I*, O, I_s)`` are the base class's."""
        inputs = {
            "deconvolved": tf.cast(deconvolved, tf.float32),
            "blurred": tf.cast(blurred, tf.float32),
            "sharp": tf.cast(sharp, tf.float32),
        }
        conditioned = tf.concat([inputs["deconvolved"], inputs["blurred"]], axis=-1)
        return inputs, tf.cast(self.model(conditioned, training=True), tf.float32)

    def update_critics(self, inputs, fake):
        """D_cGAN's update, then D_p's followed by the clipping (``"clip"``); returns their terms
        prefixed ``d_cgan_`` / ``d_p_``."""
        logged = super().update_critics(inputs, fake)
        if D_P in self.critics and self.dp_lipschitz == "clip":
            clip_in_any_context(self.critics[D_P].trainable_variables, self.clip_limit)
        return logged

    def critic_loss(self, name, inputs, fake, update):
        critic = self.critics[name]
        if name == D_CGAN:
            blurred = inputs["blurred"]
            real = critic(tf.concat([inputs["sharp"], blurred], axis=-1), training=True)
            fake_logits = critic(tf.concat([fake, blurred], axis=-1), training=True)
            return losses.cgan_discriminator_loss(real, fake_logits)
        epsilon = None
        if self.dp_lipschitz == "gp":
            local = tf.shape(inputs["deconvolved"])[0]
            epsilon = self.global_uniform(local, self.step_seed(update))
        return adversarial.artifact_critic_loss(
            critic,
            inputs["deconvolved"],
            inputs["blurred"],
            lipschitz=self.dp_lipschitz,
            gp_weight=self.dp_gp_weight,
            epsilon=epsilon,
            loss_scale=self.critic_loss_scale(name),
        )

    def generator_loss(self, inputs, fake):
        logits = self.critics[D_CGAN](tf.concat([fake, inputs["blurred"]], axis=-1), training=True)
        critic_restored = critic_sharp = None
        if D_P in self.critics:
            critic_restored = self.critics[D_P](fake, training=True)
            critic_sharp = self.critics[D_P](inputs["sharp"], training=True)
        return losses.rpgan_generator_loss(
            fake,
            inputs["sharp"],
            logits,
            critic_restored=critic_restored,
            critic_sharp=critic_sharp,
            vgg=self.vgg,
            **self.weights,
        )

    def minimize_generator(self, tape, terms, fake):
        """G's update and, with ``lp_grad_ratio``, the ratio (module docstring).

        Every term of L_RP-GAN depends on G's variables only through G's output ``fake``, so the
        gradient of a term is Jᵀ v, v its gradient with respect to ``fake`` (J = d fake / d vars).
        The cotangents of lambda L_p and of the rest are taken separately (each loss network is
        back-propagated once, as in one pass); Jᵀ of their sum is the update, Jᵀ of L_p's alone
        is the one extra backward pass through G.
        """
        if not self.lp_grad_ratio:
            return super().minimize_generator(tape, terms, fake)
        variables = self.model.trainable_variables
        penalty_term = terms["penalty_weighted"]
        others = [
            terms[k] for k in losses.RPGAN_LOSS_PARTS if k in terms and k != "penalty_weighted"
        ]
        # float16: every backward pass seeded with the loss scale (training.step.minimize); the
        # optimizer unscales the update, and the ratio does not depend on the scale.
        scale = optimizers.loss_scale(self.optimizer)
        seed = None if scale is None else tf.cast(scale, tf.float32)
        penalty_out, others_out = (
            _or_zeros(tape.gradient(target, fake, output_gradients=seed), fake)
            for target in (penalty_term, others)
        )
        grads = tape.gradient(fake, variables, output_gradients=penalty_out + others_out)
        penalty = tape.gradient(fake, variables, output_gradients=penalty_out)
        scale_terms = self.generator_scale_terms(grads)
        rest = [None if g is None else g - p for g, p in zip(grads, penalty, strict=True)]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:  # as training.step.minimize: Keras' all-reduce then sums the replicas
            grads = [None if g is None else g / replicas for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        ratio = tf.math.divide_no_nan(
            tf.linalg.global_norm(_present(penalty)), tf.linalg.global_norm(_present(rest))
        )
        # A float16 step whose scaled gradients overflowed is skipped: no ratio (0), not NaN.
        ratio = tf.where(tf.math.is_finite(ratio), ratio, tf.zeros_like(ratio))
        return {"lp_grad_ratio": tf.cast(ratio, tf.float32), **scale_terms}

    # ---- records ---------------------------------------------------------------------------------

    def loss_config(self) -> dict:
        """The loss settings a resume must not change (``run_config.json`` ``"loss"``)."""
        return {
            **self.weights,
            "use_dp": self.use_dp,
            "dp_lipschitz": self.dp_lipschitz if self.use_dp else None,
            "dp_clip_limit": self.clip_limit if self.use_dp else None,
            "dp_gp_weight": self.dp_gp_weight if self.use_dp else None,
            "content_network": "vgg16 block2_conv2, caffe preprocessing",
            "vgg_weights": self.vgg_weights_id,
        }

    def run_config(self):
        config = {**super().run_config(), "loss": self.loss_config()}
        if self.sen_record is not None:
            config.update(sen=dict(self.sen_record), framework=dict(self.framework_kwargs))
        return config

    def describe(self):
        def count(model):
            return int(sum(int(tf.size(v)) for v in model.trainable_variables))

        rate = self.learning_rate
        initial = float(rate(0)) if callable(rate) else float(rate)
        w = self.weights
        described = {
            "optimizer_settings": f"Adam (all three networks), lr={initial:g} at step 0"
            f"{' (schedule on the generator step)' if callable(rate) else ', constant'}, "
            f"betas=({self.beta_1:g}, {self.beta_2:g}), epsilon={self.epsilon:g}",
            "objective": "content (VGG16 block2_conv2, MSE, scale "
            f"{w['content_feature_scale']:.6g}) + {w['cgan_weight']:g} cGAN ({w['g_adv_form']}) "
            f"+ {w['penalty_weight']:g} L_p"
            + (f" + {w['pixel_weight']:g} L1 pixel (not the paper's)" if w["pixel_weight"] else "")
            + "; "
            + (
                f"D_p Lipschitz by {self.dp_lipschitz}"
                if self.use_dp
                else "no D_p (Appendix B, use_dp=False)"
            ),
            "parameters": count(self.model),
            "vgg_trainable_variables": 0 if self.vgg is None else len(self.vgg.trainable_variables),
        }
        for name, critic in self.critics.items():
            described[f"parameters_{name}"] = count(critic)
        return described


def _present(gradients):
    """The gradients that exist (``tape.gradient`` gives None for an unconnected variable)."""
    return [g for g in gradients if g is not None] or [tf.zeros((), tf.float32)]


def _or_zeros(gradient, like):
    """``gradient``, or zeros shaped as ``like`` where the target does not depend on it."""
    return tf.zeros_like(like) if gradient is None else gradient
