"""training/steps/rpgan_step.py: one RP-GAN step (D_cGAN, D_p + clipping, G) through the one loop on
(I*, O, I_s) batches, the clip bound, Appendix B without D_p, the frozen VGG16, the checkpoint
contents and a save / rebuild / restore round trip (sen_rpgan.md sections 8, 9 and 13)."""

import io
import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import eager_functions
from tests.process_checks import result_json, run_python
from training import optimizers
from training.loop import LoopConfig, Trainer
from training.steps.rpgan_step import RPGANTrainStep
from training.tracking import track_layer_lists, untrack_model_variables

TINY = {"width_divisor": 16}
TINY_CRITIC = {"width_divisor": 16}
SIZE, BATCH = 32, 2


def tiny_step(**overrides):
    return RPGANTrainStep(**{"model_kwargs": TINY, "critic_kwargs": TINY_CRITIC, **overrides})


def triples(n=2 * BATCH, seed=0):
    """(I*, O, I_s) float32 in [0, 1]: O a horizontal blur of I_s, I* O with ringing noise."""
    rng = np.random.default_rng(seed)
    sharp = rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    blurred = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype(np.float32)
    noise = 0.1 * rng.standard_normal(sharp.shape).astype(np.float32)
    deconvolved = np.clip(blurred + noise, 0, 1).astype(np.float32)
    return deconvolved, blurred, sharp


def loop_run(step, folder, max_steps=1):
    data = triples()

    def make(epoch):
        return tf.data.Dataset.from_tensor_slices(data).batch(BATCH, drop_remainder=True)

    config = LoopConfig(
        str(folder / "run"),
        steps_per_epoch=2,
        max_steps=max_steps,
        log_every=1,
        global_batch_size=BATCH,
    )
    trainer = Trainer(step, make, config, out=io.StringIO())
    trainer.setup()
    before = {
        name: [np.array(w) for w in net.trainable_weights]
        for name, net in {"model": step.model, **step.critics}.items()
    }
    trainer.run()
    return before, trainer


def max_change(before, model):
    return max(
        float(np.abs(a - np.array(b)).max())
        for a, b in zip(before, model.trainable_weights, strict=True)
    )


@pytest.fixture(scope="module")
def rpgan_run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("rpgan")
    step = tiny_step()
    with eager_functions():  # traced steps: tests/test_train_rpgan.py and the two-replica test
        before, trainer = loop_run(step, folder)
    return step, trainer, before, folder


def test_one_step_updates_generator_and_both_critics(rpgan_run):
    step, trainer, before, _ = rpgan_run
    assert int(step.optimizer.iterations.numpy()) == 1
    for name in ("d_cgan", "d_p"):  # one update each per step: the schedule's counters agree
        assert int(step.critic_optimizers[name].iterations.numpy()) == 1
    assert max_change(before["model"], step.model) > 0
    assert max_change(before["d_cgan"], step.critics["d_cgan"]) > 0
    assert max_change(before["d_p"], step.critics["d_p"]) > 0
    for net in (step.model, *step.critics.values()):
        assert all(np.isfinite(np.array(w)).all() for w in net.weights)
    values = trainer.last_values
    for key in step.progress_terms + ("d_cgan_bce_real", "d_p_critic_deconvolved", "cgan"):
        assert np.isfinite(values[key]), key
    assert values["loss"] == pytest.approx(
        values["content"] + values["cgan_weighted"] + values["penalty_weighted"], rel=1e-5
    )
    assert values["cgan_weighted"] == pytest.approx(0.01 * values["cgan"], rel=1e-5)
    assert values["penalty_weighted"] == pytest.approx(0.1 * values["artifact_penalty"], rel=1e-5)
    assert np.isfinite(values["lp_grad_ratio"]) and values["lp_grad_ratio"] >= 0.0


def _generator_update(step, batch):
    """(the gradients G's optimizer receives, the step's values) of one train_step."""
    captured = {}
    apply = step.optimizer.apply_gradients

    def capture(pairs):
        pairs = list(pairs)
        captured["grads"] = [None if g is None else np.array(g) for g, _ in pairs]
        return apply(pairs)

    step.optimizer.apply_gradients = capture
    values = {k: float(v) for k, v in step.train_step(*batch).items()}
    return captured["grads"], values


@pytest.mark.eager
def test_lp_grad_ratio_is_logged_and_the_update_is_unchanged():
    """lp_grad_ratio = ||grad_G 0.1 L_p|| / ||grad_G (L_c + 0.01 L_cGAN)||, positive when a hinge
    is active; G's update is the one-pass gradient (the same update as without the ratio)."""
    batch = tuple(tf.constant(t[:BATCH]) for t in triples(seed=3))
    runs = {}
    for log in (True, False):
        keras.utils.set_random_seed(4)
        step = tiny_step(log_lp_grad_ratio=log)
        step.build(tf.distribute.get_strategy())
        runs[log] = _generator_update(step, batch)
    grads, values = runs[True]
    assert values["penalty_active"] > 0  # the data make a hinge active, so L_p has a gradient
    assert np.isfinite(values["lp_grad_ratio"]) and values["lp_grad_ratio"] > 0
    assert "lp_grad_ratio" not in runs[False][1]
    reference = runs[False][0]
    scale = max(float(np.abs(g).max()) for g in reference if g is not None)
    for ours, theirs in zip(grads, reference, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * scale)
    # The ratio from separate gradients of the terms, with the networks the generator update saw
    # (a fresh step of the same seed, its critics updated once on the batch).
    keras.utils.set_random_seed(4)
    fresh = tiny_step()
    fresh.build(tf.distribute.get_strategy())
    fresh.update_critics(*fresh.generate(*batch))
    with tf.GradientTape(persistent=True) as tape:
        inputs, fake = fresh.generate(*batch)
        terms = fresh.generator_loss(inputs, fake)
    variables = fresh.model.trainable_variables

    def norm(targets):
        return float(
            tf.linalg.global_norm([g for g in tape.gradient(targets, variables) if g is not None])
        )

    lp, rest = norm(terms["penalty_weighted"]), norm([terms["content"], terms["cgan_weighted"]])
    assert values["lp_grad_ratio"] == pytest.approx(lp / rest, rel=1e-3)
    assert rest == pytest.approx(norm(terms["content"]), rel=1e-2)  # L_c dominates the rest


def test_lp_grad_ratio_only_with_dp_and_a_penalty_weight():
    assert tiny_step().persistent_generator_tape
    assert not tiny_step(use_dp=False).lp_grad_ratio
    assert not tiny_step(penalty_weight=0.0).lp_grad_ratio
    assert not tiny_step(log_lp_grad_ratio=False).persistent_generator_tape


def test_validation_scores_the_framework_and_the_identity_prior_baseline(rpgan_run):
    """predict gives the framework's output and the identity-prior HQS (same SEN, K, ladder)."""
    from deconvolution.framework import BlindDeblurFramework

    step = rpgan_run[0]

    def sen(images, training=None):  # a constant 3-px flow: CG has work to do
        return tf.fill(tf.concat([tf.shape(images)[:3], [2]], 0), 3.0)

    step.sen, step.framework_kwargs = sen, {"levels": 2}
    blur, sharp = (tf.constant(a[:1, :, :27]) for a in triples()[1:])
    output = tf.function(step.predict)(blur)
    np.testing.assert_allclose(output["restored"], step.framework()(blur), atol=1e-5)
    identity = BlindDeblurFramework(sen, None, levels=2)(blur)
    np.testing.assert_allclose(output["identity_prior_hqs"], identity, atol=1e-5)
    scores = step.validation_scores(output, sharp)
    assert set(scores) == {"psnr", "ssim", "identity_prior_hqs_psnr", "identity_prior_hqs_ssim"}
    text = step.validation_text({k: float(v[0]) for k, v in scores.items()})
    assert "identity-prior HQS" in text
    assert step.validation_images(blur, output, sharp)[1]["output"].shape == blur.shape


def test_dp_weights_are_clipped_after_the_step(rpgan_run):
    step = rpgan_run[0]
    variables = step.critics["d_p"].trainable_variables
    assert any("gamma" in v.path for v in variables)  # BN scale and offset are clipped too
    for variable in variables:
        assert np.abs(np.array(variable)).max() <= 0.01 + 1e-7, variable.path
    # D_cGAN is not clipped: its torch-initialised first kernel exceeds the bound.
    assert max(np.abs(np.array(v)).max() for v in step.critics["d_cgan"].trainable_variables) > 0.01


def test_vgg16_is_frozen_random_and_unchanged(rpgan_run):
    step = rpgan_run[0]
    assert step.vgg.trainable_variables == [] and step.vgg.trainable is False
    assert step.vgg.output.shape[-1] == 128  # block2_conv2
    fresh = tiny_step()
    fresh.build(tf.distribute.get_strategy())  # seeded random VGG16: identical, never updated
    for a, b in zip(step.vgg.get_weights(), fresh.vgg.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_and_run_config(rpgan_run):
    step, trainer, _, folder = rpgan_run
    names = [name for name, _ in tf.train.list_variables(trainer.manager.latest_checkpoint)]
    for root in ("model/", "optimizer/", "d_cgan/", "d_cgan_optimizer/", "d_p/", "d_p_optimizer/"):
        assert any(n.startswith(root) for n in names), root
    assert not any("vgg" in n for n in names)
    config = json.loads((folder / "run" / "run_config.json").read_text())
    assert config["model"] == "rpgan_generator" and config["model_kwargs"] == TINY
    assert config["critics"]["d_cgan"]["kwargs"] == {**TINY_CRITIC, "conditional": True}
    assert config["critics"]["d_p"]["kwargs"] == {**TINY_CRITIC, "conditional": False}
    assert config["optimizer"] == optimizers.FORMULA_NAMES["pytorch"]
    loss = config["loss"]
    assert (loss["cgan_weight"], loss["penalty_weight"]) == (0.01, 0.1)
    assert loss["g_adv_form"] == "saturating" and loss["dp_lipschitz"] == "clip"
    assert loss["vgg_weights"] == "random"
    for optimizer in (step.optimizer, *step.critic_optimizers.values()):
        settings = (float(optimizer.beta_1), float(optimizer.beta_2), float(optimizer.epsilon))
        assert settings == (0.9, 0.99, 1e-8)


def test_save_rebuild_restore_gives_equal_weights(rpgan_run, tmp_path):
    # The loop's latest checkpoint, read into a rebuilt step the way the loop restores.
    step, trainer = rpgan_run[:2]
    keras.utils.set_random_seed(5)
    rebuilt = tiny_step()
    rebuilt.build(tf.distribute.get_strategy())
    items = rebuilt.checkpoint_items()
    for item in items.values():
        if isinstance(item, keras.layers.Layer):
            track_layer_lists(item)
        else:
            untrack_model_variables(item)
    status = tf.train.Checkpoint(**items).read(trainer.manager.latest_checkpoint)
    status.assert_existing_objects_matched()
    for name in ("model", "d_cgan", "d_p"):
        ours, theirs = step.checkpoint_items()[name], rebuilt.checkpoint_items()[name]
        for a, b in zip(ours.weights, theirs.weights, strict=True):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    for a, b in zip(step.optimizer.variables, rebuilt.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.eager
def test_without_dp_builds_no_critic_and_still_trains(tmp_path):
    # Appendix B: use_dp=False, lambda = 0, no D_p anywhere.
    keras.utils.set_random_seed(1)
    step = tiny_step(use_dp=False)
    before, trainer = loop_run(step, tmp_path)
    assert set(step.critics) == {"d_cgan"}
    assert not any(name.startswith("d_p") for name in step.checkpoint_items())
    assert max_change(before["model"], step.model) > 0
    values = trainer.last_values
    assert values["penalty_weighted"] == 0.0 and np.isfinite(values["loss"])
    assert step.run_config()["loss"]["penalty_weight"] == 0.0


def test_schedule_and_bad_settings():
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-4, 10, 1e-6)
    step = tiny_step(learning_rate=schedule, use_dp=False)
    step.build(tf.distribute.get_strategy())
    assert step.learning_rates()["learning_rate"] == pytest.approx(1e-4)
    assert "schedule" in step.describe()["optimizer_settings"]
    with pytest.raises(ValueError, match="g_adv_form"):
        tiny_step(g_adv_form="hinge")
    with pytest.raises(ValueError, match="dp_lipschitz"):
        tiny_step(dp_lipschitz="spectral")
    with pytest.raises(ValueError, match="without batch normalisation"):
        tiny_step(dp_lipschitz="gp").build(tf.distribute.get_strategy())


@pytest.mark.eager
def test_gradient_penalty_variant_runs_without_clipping():
    keras.utils.set_random_seed(2)
    step = tiny_step(dp_lipschitz="gp", dp_kwargs={"d_style": "no_bn"})
    step.build(tf.distribute.get_strategy())
    values = tf.function(step.train_step, autograph=False)(*(t[:BATCH] for t in triples()))
    assert np.isfinite(float(values["d_p_gradient_penalty"]))
    assert all(np.isfinite(float(v)) for v in values.values())


MIRRORED_RPGAN = textwrap.dedent(
    """
import json
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from training.steps.rpgan_step import RPGANTrainStep
from training.strategy import make_strategy

kwargs = dict(model_kwargs={"width_divisor": 16}, critic_kwargs={"width_divisor": 16})
rng = np.random.default_rng(0)
sharp = rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
blurred = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype("float32")
deconvolved = np.clip(blurred + 0.1 * rng.standard_normal(sharp.shape), 0, 1).astype("float32")

keras.utils.set_random_seed(0)
mirrored = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
step = RPGANTrainStep(**kwargs)
step.build(mirrored)
dp = step.critics["d_p"]
before = [v.numpy() for v in dp.trainable_variables]
ds = tf.data.Dataset.from_tensors((deconvolved, blurred, sharp))
batch = next(iter(mirrored.experimental_distribute_dataset(ds)))
fn = tf.function(lambda b: mirrored.run(step.train_step, args=b), autograph=False)
out = fn(batch)
print("RESULT " + json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "dp_max": max(float(np.abs(v.numpy()).max()) for v in dp.trainable_variables),
    "copies_equal": all(
        all(np.array_equal(c.numpy(), v.value.values[0].numpy()) for c in v.value.values)
        for v in dp.trainable_variables),
    "moved": max(float(np.abs(b - v.numpy()).max())
                 for b, v in zip(before, dp.trainable_variables)),
    "values": {k: float(mirrored.reduce("MEAN", v, axis=None)) for k, v in out.items()}}))
    """
)


@pytest.mark.slow
def test_two_replica_step_clips_every_copy_of_dp():
    # Under MirroredStrategy the clipping runs through merge_call (Keras variables refuse
    # assignments in a replica): every copy of every D_p variable holds the same clipped value.
    # (No comparison with one device: BN statistics are per replica, without SyncBN, so 2 x 2
    # images differ from one device's 4; the one loop's mirrored step is compared in
    # tests/test_training.py and GradientNet's GAN step in tests/test_train_gradientnet.py.)
    result = result_json(run_python(["-c", MIRRORED_RPGAN], timeout=600), which=0)
    assert result["replicas"] == 2 and result["copies_equal"] and result["moved"] > 1e-3
    assert result["dp_max"] <= 0.01 + 1e-7
    assert all(np.isfinite(v) for v in result["values"].values())
    assert result["values"]["lp_grad_ratio"] >= 0.0  # per replica, averaged
