"""The GradientNet GAN step object (Qi 2022, eq. 10-11; gradientnet.md sections 4-5).

Per (blur, sharp) batch, images mapped to [-1, 1]: G(b) once, **5 WGAN-GP critic updates** on that
batch and that G(b), then one generator update with

    L_G = 10 L_content + 1 L_gradient + 1 L_adv     (losses.gradientnet_generator_loss)
    L_D = D(G(b)) - D(s) + 10 GP                    (training.adversarial.critic_loss)

Adam for both networks with **PyTorch's formula** (the original code is PyTorch), lr 1e-4,
betas (0.5, 0.999), epsilon 1e-8, constant rate. The content term uses a frozen VGG19 cut at
``block4_conv3`` (built here in the strategy scope, inference mode, never trainable, not
checkpointed: its weights come from ``--vgg_weights`` and are identified in ``run_config.json``);
with ``content_weight=0`` no VGG is built. The penalty's per-sample epsilon is drawn statelessly
for the global batch from the step counter (:class:`training.gan_step.AdversarialTrainStep`).
"""

from __future__ import annotations

import tensorflow as tf

import losses
from training import adversarial
from training.gan_step import AdversarialTrainStep

# Adam of the paper (section 4.1): "beta1 = 0.5, beta2 = 0.999", lr 1e-4 for G and D.
GRADIENTNET_BETA_1 = 0.5
GRADIENTNET_BETA_2 = 0.999
GRADIENTNET_LEARNING_RATE = 1e-4
GRADIENTNET_CRITIC_STEPS = 5


class GradientNetTrainStep(AdversarialTrainStep):
    """One GradientNet GAN update (5 critic updates + 1 generator update) on a (blur, sharp) batch.

    Args:
        model_kwargs: ``models.build_model("gradientnet", ...)`` overrides (ablations, widths).
        critic_kwargs: :func:`models.gradientnet.critic` overrides (``in_channels=6`` makes the
            critic conditional on the blurred image, register item 16's alternative).
        critic_steps: critic updates per generator update (5).
        learning_rate, beta_1, beta_2, epsilon, adam_formula: Adam of both networks.
        critic_learning_rate: the critic's rate (None: ``learning_rate``, the paper's).
        content_weight, gradient_weight, adv_weight: loss weights (10, 1, 1; 0 = the ablation).
        gp_weight: lambda_GP (10). gp_endpoint: ``"generated"`` or ``"blurred"`` (register 18).
        content_feature_scale, content_distance: :func:`losses.gradientnet_content_loss`.
        pixel_weight: weight of an L1 pixel term (0: the paper; see
            :func:`losses.gradientnet_generator_loss`).
        vgg_weights_path: local VGG19 notop weight file, or None for seeded random weights.
        vgg_weights_id: how ``run_config.json`` identifies those weights (an md5, ``"random"``).
        seed: base of the stateless seeds of the penalty's epsilon.
    """

    paper = "gradientnet"
    progress_terms = (
        "loss",
        "content_weighted",
        "gradient",
        "adversarial",
        "critic_loss",
        "critic_gradient_penalty",
        "critic_wasserstein",
    )

    def __init__(
        self,
        *,
        model_kwargs=None,
        critic_kwargs=None,
        critic_steps=GRADIENTNET_CRITIC_STEPS,
        learning_rate=GRADIENTNET_LEARNING_RATE,
        critic_learning_rate=None,
        beta_1=GRADIENTNET_BETA_1,
        beta_2=GRADIENTNET_BETA_2,
        epsilon=1e-8,
        adam_formula="pytorch",
        content_weight=losses.GRADIENTNET_CONTENT_WEIGHT,
        gradient_weight=losses.GRADIENTNET_GRADIENT_WEIGHT,
        adv_weight=losses.GRADIENTNET_ADV_WEIGHT,
        gp_weight=losses.GRADIENTNET_GP_WEIGHT,
        gp_endpoint="generated",
        content_feature_scale=losses.GRADIENTNET_CONTENT_FEATURE_SCALE,
        content_distance="mse",
        pixel_weight=0.0,
        vgg_weights_path=None,
        vgg_weights_id="random",
        seed=0,
    ):
        super().__init__(
            "gradientnet",
            model_kwargs=model_kwargs,
            critic_kwargs={"critic": dict(critic_kwargs or {})},
            critic_steps=critic_steps,
            learning_rate=learning_rate,
            critic_learning_rate=critic_learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            adam_formula=adam_formula,
            seed=seed,
        )
        if gp_endpoint not in adversarial.GP_ENDPOINTS:
            raise ValueError(
                f"gp_endpoint must be one of {adversarial.GP_ENDPOINTS}, got {gp_endpoint!r}."
            )
        if content_distance not in losses.CONTENT_DISTANCES:
            raise ValueError(
                f"content_distance must be one of {losses.CONTENT_DISTANCES}, "
                f"got {content_distance!r}."
            )
        self.weights = {
            "content_weight": float(content_weight),
            "gradient_weight": float(gradient_weight),
            "adv_weight": float(adv_weight),
            "content_feature_scale": float(content_feature_scale),
            "content_distance": content_distance,
            "pixel_weight": float(pixel_weight),
        }
        self.gp_weight, self.gp_endpoint = float(gp_weight), gp_endpoint
        self.vgg_weights_path, self.vgg_weights_id = vgg_weights_path, vgg_weights_id
        self.vgg = None

    # ---- networks --------------------------------------------------------------------------------

    def build_networks(self):
        from models import build_model
        from models.gradientnet import critic

        return build_model("gradientnet", **self.model_kwargs), {
            "critic": critic(**self.critic_kwargs["critic"])
        }

    def build_loss_networks(self):
        if not self.weights["content_weight"]:
            return  # the "W/o content" ablation needs no VGG
        from models.vgg import VGGWeightsError, build_vgg19_features
        from training.loop import ConfigError

        try:
            self.vgg = build_vgg19_features(self.vgg_weights_path)
        except VGGWeightsError as error:  # the file exists but holds something else
            raise ConfigError(str(error)) from None

    def _critic_fn(self, inputs):
        """The critic as a function of the image; conditional critics also see the blurred image."""
        critic = self.critics["critic"]
        if critic.in_channels == 3:
            return critic

        def conditional(image, training=False):
            return critic(tf.concat([inputs["blur"], image], axis=-1), training=training)

        return conditional

    # ---- losses ----------------------------------------------------------------------------------

    def generate(self, blur, sharp):
        inputs = {"blur": 2.0 * blur - 1.0, "sharp": 2.0 * sharp - 1.0}
        return inputs, self.model.generate(inputs["blur"], training=True)

    def critic_loss(self, name, inputs, fake, update):
        sharp = inputs["sharp"]
        epsilon = self.global_uniform(tf.shape(sharp)[0], self.step_seed(update))
        return adversarial.critic_loss(
            self._critic_fn(inputs),
            sharp,
            fake,
            blurred=inputs["blur"],
            endpoint=self.gp_endpoint,
            gp_weight=self.gp_weight,
            epsilon=epsilon,
            loss_scale=self.critic_loss_scale(name),
        )

    def generator_loss(self, inputs, fake):
        critic_fake = self._critic_fn(inputs)(fake, training=True)
        return losses.gradientnet_generator_loss(
            fake, inputs["sharp"], critic_fake, vgg=self.vgg, **self.weights
        )

    # ---- records ---------------------------------------------------------------------------------

    def loss_config(self) -> dict:
        """The loss settings a resume must not change (``run_config.json`` ``"loss"``)."""
        content_net = "vgg19 block4_conv3, caffe preprocessing"
        return {
            **self.weights,
            "gp_weight": self.gp_weight,
            "gp_endpoint": self.gp_endpoint,
            "content_network": content_net if self.weights["content_weight"] else None,
            "vgg_weights": self.vgg_weights_id if self.weights["content_weight"] else None,
        }

    def run_config(self):
        return {**super().run_config(), "loss": self.loss_config()}

    def describe(self):
        w = self.weights
        return {
            **super().describe(),
            "objective": f"{w['content_weight']:g} content (VGG19 block4_conv3, "
            f"{w['content_distance']}, scale {w['content_feature_scale']:.6g}) + "
            f"{w['gradient_weight']:g} gradient (L1) + {w['adv_weight']:g} adversarial"
            + (f" + {w['pixel_weight']:g} pixel L1 (not the paper's)" if w["pixel_weight"] else "")
            + "; critic "
            f"WGAN-GP, lambda {self.gp_weight:g}, endpoint {self.gp_endpoint}",
            "vgg_trainable_variables": 0 if self.vgg is None else len(self.vgg.trainable_variables),
        }
