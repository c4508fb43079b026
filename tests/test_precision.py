"""Mixed precision (``--precision``, :mod:`precision`): every model computes in 16 bit and returns
float32, every paper's training step trains under bfloat16 and float16 (float16 with a dynamic loss
scale that drops after an overflow and skips that update), checkpoints do not depend on the
precision, and saved models load under any policy."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf

import precision
from models import build_flow_estimator, build_model, build_prior, model_names
from tests.train_checks import assert_weights_changed_and_finite
from training import optimizers
from training.loop import LoopConfig, Trainer
from training.steps.gradientnet_step import GradientNetTrainStep
from training.steps.idc_step import IdcTrainStep
from training.steps.mimo_unet_step import MimoUnetTrainStep
from training.steps.rpgan_step import RPGANTrainStep
from training.steps.sen_step import SENTrainStep
from training.steps.two_way_step import TwoWayTrainStep

TINY = {"base_channels": 8, "num_res": 1}
TINY_OF = {"gradientnet": {"base_channels": 8, "gradient_channels": 8, "num_mbrb": 1}}
# bfloat16 against float32, same weights, random 64 x 64 input (tiny widths, random weights):
# the largest measured were 0.26 % (mean, SEN) and 1.04 % (max, SEN) of the output's range.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.005, 0.025


def _networks():
    for name in model_names():
        yield name, build_model, TINY_OF.get(name, TINY), 3
    yield "sen", build_flow_estimator, {"width_divisor": 16}, 3
    yield "rpgan_generator", build_prior, {"width_divisor": 16}, 6


NETWORKS = {name: (builder, kwargs, channels) for name, builder, kwargs, channels in _networks()}


def _final(outputs):
    return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


def test_precision_names_and_policies():
    assert precision.PRECISIONS == ("float32", "bfloat16", "float16")
    assert precision.policy_name("bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        precision.check_precision("half")
    with precision.precision_scope("float16"):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert precision.current_precision() == "float16"
    assert precision.current_precision() == "float32"


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert precision.native_bfloat16(str(cpuinfo))
    cpuinfo.write_text("flags\t\t: fpu avx2 fma\n")
    assert not precision.native_bfloat16(str(cpuinfo))
    assert not precision.native_bfloat16(str(tmp_path / "absent"))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_bfloat16_network_returns_float32_close_to_float32(name):
    builder, kwargs, channels = NETWORKS[name]
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, channels)).astype("float32")
    reference = builder(name, **kwargs)
    expected = np.array(_final(reference(x)))
    with precision.precision_scope("bfloat16"):
        model = builder(name, **kwargs)
        model(x)
        model.set_weights(reference.get_weights())
        outputs = model(x)
    assert model.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert all(out.dtype == tf.float32 for out in outputs)
    error = np.abs(np.array(_final(outputs)) - expected)
    span = float(np.ptp(expected))
    assert error.mean() <= MEAN_TOLERANCE * span and error.max() <= MAX_TOLERANCE * span


def test_saved_model_loads_under_the_policy_in_force(tmp_path):
    """A ``.keras`` file saved under bfloat16 holds no dtype policy: it loads in float32."""
    x = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    with precision.precision_scope("bfloat16"):
        model = build_model("mimo_unet", **TINY)
        model(x)
        model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.compute_dtype == "float32"
    assert all(layer.compute_dtype == "float32" for layer in loaded._flatten_layers())
    assert _final(loaded(x)).dtype == tf.float32


# ---- training steps ---------------------------------------------------------------------------


def _image_pairs(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    sharp = rng.uniform(0.0, 1.0, (n, size, size, 3)).astype(np.float32)
    blur = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype(np.float32)
    return blur, sharp


def _flow_pairs(n=4, size=64):
    blur, _ = _image_pairs(n, size)
    flow = np.random.default_rng(1).uniform(-3, 3, (n, size, size, 2)).astype(np.float32)
    return blur, flow


def _triples(n=4, size=32):
    blur, sharp = _image_pairs(n, size)
    noise = np.random.default_rng(2).normal(0, 0.05, blur.shape).astype(np.float32)
    return np.clip(blur + noise, 0, 1).astype(np.float32), blur, sharp


PAPER_STEPS = {
    "mimo_unet": (lambda: MimoUnetTrainStep(model_kwargs=TINY, steps_per_epoch=2), _image_pairs),
    # IDC's SSIM term needs 11 px at quarter scale.
    "idc": (lambda: IdcTrainStep(total_steps=8, model_kwargs=TINY), lambda: _image_pairs(size=64)),
    "two_way": (lambda: TwoWayTrainStep(total_steps=8, model_kwargs=TINY), _image_pairs),
    "gradientnet": (
        lambda: GradientNetTrainStep(
            model_kwargs=TINY_OF["gradientnet"], critic_kwargs={"base_channels": 4}, critic_steps=2
        ),
        _image_pairs,
    ),
    "sen": (lambda: SENTrainStep(stage=1, model_kwargs={"width_divisor": 16}), _flow_pairs),
    "rpgan": (
        lambda: RPGANTrainStep(
            model_kwargs={"width_divisor": 16}, critic_kwargs={"width_divisor": 16}
        ),
        _triples,
    ),
}


def _loop_run(step, data, folder, steps=2):
    def make(epoch):
        return tf.data.Dataset.from_tensor_slices(data).batch(2, drop_remainder=True)

    config = LoopConfig(
        str(folder / "run"), steps_per_epoch=2, max_steps=steps, log_every=1, global_batch_size=2
    )
    trainer = Trainer(step, make, config, out=io.StringIO())
    trainer.setup()
    before = [np.array(w) for w in step.model.weights]
    trainer.run()
    return before, trainer


def scaled(name):
    return name == "float16"


@pytest.mark.eager
@pytest.mark.parametrize("paper", sorted(PAPER_STEPS))
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_every_paper_trains_under_16_bit(paper, name, tmp_path):
    make_step, make_data = PAPER_STEPS[paper]
    with precision.precision_scope(name):
        step = make_step()
        # float16 starts at a loss scale of 2^15, which the first steps may overflow (skipped,
        # halved each time: two skips for the tiny Two-Way).
        before, trainer = _loop_run(step, make_data(), tmp_path, steps=4 if scaled(name) else 2)
    assert step.model.compute_dtype == name
    assert_weights_changed_and_finite(before, step.model)
    values = trainer.last_values
    assert np.isfinite(values["loss"])
    assert isinstance(step.optimizer, keras.optimizers.LossScaleOptimizer) == scaled(name)
    for key, item in step.checkpoint_items().items():  # checkpoints: the inner Adam only
        assert not isinstance(item, keras.optimizers.LossScaleOptimizer), key
    if scaled(name):
        assert values["loss_scale"] > 0 and "skipped_updates" in values


@pytest.mark.eager
def test_float16_overflow_skips_the_update_and_halves_the_scale():
    """An injected overflow (a loss whose float16 gradients are infinite) is not applied: the
    weights stay, the scale halves, the step says it skipped; the next step applies again."""
    factor = tf.Variable(1e30)

    def loss_fn(predictions, sharp):
        loss = tf.reduce_mean(tf.abs(predictions[-1] - sharp)) * factor
        return {"loss": loss}

    blur, sharp = _image_pairs(2)
    with precision.precision_scope("float16"):
        step = MimoUnetTrainStep(model_kwargs=TINY, steps_per_epoch=2)
        step.loss_fn = loss_fn
        step.build(tf.distribute.get_strategy())
    scale = float(step.optimizer.dynamic_scale.numpy())
    before = [np.array(w) for w in step.model.weights]
    terms = step.train_step(blur, sharp)
    assert float(terms["skipped_updates"]) == 1.0
    assert float(terms["loss_scale"]) == scale / 2
    after = [np.array(w) for w in step.model.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(step.optimizer.iterations.numpy()) == 0
    factor.assign(1.0)
    terms = step.train_step(blur, sharp)
    assert float(terms["skipped_updates"]) == 0.0
    assert_weights_changed_and_finite(before, step.model)
    assert int(step.optimizer.iterations.numpy()) == 1


def test_float16_gradient_penalty_is_unscaled():
    """WGAN-GP's nested input gradient seeded with a loss scale gives the unscaled norms."""
    from training import adversarial

    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    critic = build_model("mimo_unet", **TINY)  # any network: the norm of d sum(D) / dx

    def score(images, training=False):
        return critic(images, training=training)[-1]

    plain = adversarial.critic_input_gradient_norms(score, x)
    scaled = adversarial.critic_input_gradient_norms(score, x, loss_scale=tf.constant(1024.0))
    np.testing.assert_allclose(np.array(scaled), np.array(plain), rtol=1e-5)


@pytest.mark.eager
def test_bfloat16_checkpoint_resumes_in_float32(tmp_path):
    blur, sharp = _image_pairs()
    with precision.precision_scope("bfloat16"):
        _loop_run(
            MimoUnetTrainStep(model_kwargs=TINY, steps_per_epoch=2),
            (blur, sharp),
            tmp_path,
            steps=2,
        )
    step = MimoUnetTrainStep(model_kwargs=TINY, steps_per_epoch=2)
    _, trainer = _loop_run(step, (blur, sharp), tmp_path, steps=3)
    assert step.model.compute_dtype == "float32"
    assert int(optimizers.checkpointed(step.optimizer).iterations.numpy()) == 3
    assert trainer.step == 3


# ---- commands ---------------------------------------------------------------------------------


def test_bfloat16_export_reloads_behind_float32_signatures(tmp_path, capsys):
    """export.py --precision bfloat16: the SavedModel computes in bfloat16 (equal to the bfloat16
    Keras model, close to float32), takes float32 / uint8 and returns float32 / uint8, records
    its precision; --precision with a SavedModel source is refused in one line."""
    import export
    from inference import model_io, source_config, sources
    from models import inference
    from tests.train_checks import run_main

    model = build_model("mimo_unet", **TINY)
    model.build((None, None, None, 3))
    weights = str(tmp_path / "tiny.weights.h5")
    model.save_weights(weights)
    out = tmp_path / "bf16"
    args = ["--weights", weights, "--model", "mimo_unet", "--precision", "bfloat16"]
    args += ['--model_kwargs={"num_res": 1, "base_channels": 8}']
    assert run_main(export, *args, "--out", str(out)) == 0
    restorer = model_io.load_restorer(saved_model=str(out))
    assert restorer.source["precision"] == "bfloat16"
    images = np.random.default_rng(1).random((1, 37, 53, 3), dtype=np.float32)
    got = np.array(restorer(images))
    with precision.precision_scope("bfloat16"):
        bf16 = build_model("mimo_unet", **TINY)
        bf16.build((None, None, None, 3))
        bf16.load_weights(weights)
    np.testing.assert_allclose(got, np.array(inference.restore(bf16, images)), atol=1e-5)
    reference = np.array(inference.restore(model, images))
    assert got.dtype == np.float32 and np.abs(got - reference).mean() < 0.01
    uint8 = restorer.fn.loaded.signatures["serving_uint8"]
    as_uint8 = np.rint(images * 255).astype(np.uint8)
    assert uint8(images=tf.constant(as_uint8))["restored"].dtype == tf.uint8

    source = source_config.ModelSource(saved_model=str(out), precision="bfloat16")
    with pytest.raises(sources.ModelSourceError, match="--precision bfloat16: a SavedModel"):
        model_io.restorer_from_source(source)
