"""train_gradientnet.py, training/gan_step.py and training/steps/gradientnet_step.py: the paper
recipe as a config (gradientnet.md section 5) and the quick preset, the flags read once into it,
ablation flags, VGG weights offline, one full GAN step through the one loop (5 critic + 1 generator
update), a tiny command recording its config, checkpoint contents, resume refusals, and a resumed
GAN run equal to an uninterrupted one."""

import io
import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
import train_gradientnet
from tests import train_checks
from tests.conftest import eager_functions
from tests.process_checks import result_json, run_python
from tests.train_checks import (
    adam_settings,
    one_loop_step,
    parsed_flags,
    round_trip,
    run_command,
    run_main,
    write_split,
)
from training import optimizers, runner
from training.config import replace
from training.loop import ConfigError, LoopConfig, Trainer
from training.steps.gradientnet_step import GradientNetTrainStep

TINY = {"base_channels": 4, "gradient_channels": 16, "num_mbrb": 1}
TINY_CRITIC = {"base_channels": 4}


def tiny_step(**overrides):
    kwargs = {"model_kwargs": TINY, "critic_kwargs": TINY_CRITIC, **overrides}
    return GradientNetTrainStep(**kwargs)


def test_paper_defaults():
    """gradientnet.md section 5: batch 4, 256 crops without flips or noise, 150 epochs, Adam lr
    1e-4 (betas 0.5 / 0.999, epsilon 1e-8, PyTorch's formula) for G and D, 5 critic updates,
    L_G = 10 content + 1 gradient + 1 adversarial, lambda_GP 10, no pixel term, ImageNet VGG19."""
    config = train_gradientnet.paper_config()
    train_gradientnet.check_config(config)
    data, schedule, recipe = config.data, config.schedule, config.paper
    assert data.batch_size == 4 and data.crop_size == 256
    assert (data.hflip, data.vflip, data.rot90, data.noise) == (False, False, False, "off")
    assert schedule.epochs == 150 and schedule.max_steps == 0 and schedule.val_every_epochs == 10
    assert schedule.learning_rate == 1e-4 and schedule.adam_epsilon == 1e-8
    assert (recipe.adam_beta_1, recipe.adam_beta_2) == (0.5, 0.999)
    assert recipe.critic_steps == 5 and recipe.gp_weight == 10.0
    assert (recipe.content_weight, recipe.gradient_weight, recipe.adv_weight) == (10.0, 1.0, 1.0)
    assert recipe.content_feature_scale == pytest.approx(1 / 57.5)
    assert recipe.gp_endpoint == "generated" and recipe.content_distance == "mse"
    assert recipe.vgg_weights == "imagenet" and recipe.pixel_weight == 0.0
    assert recipe.critic_learning_rate is None and recipe.critic_kwargs is None
    assert config.model_kwargs is None and config.preset == "none"
    assert train_gradientnet.model_kwargs(config) == {
        "rgcl_mode": "cross",
        "mbrb_branches": 3,
        "use_gradientnet": True,
    }
    # GoPro: 2103 pairs // 4 = 525 generator steps per epoch, 78,750 in 150 epochs.
    assert runner.total_steps(config, 525) == 78_750
    config = replace(config, vgg_weights="random")  # the imagenet file is not on the test machines
    step = train_gradientnet.make_step(config, steps_per_epoch=525, total_steps=78_750)
    assert step.critic_steps == 5 and step.adam_formula == "pytorch"
    assert (step.learning_rate, step.critic_learning_rate) == (1e-4, 1e-4)
    assert step.weights["content_weight"] == losses.GRADIENTNET_CONTENT_WEIGHT == 10.0
    assert step.gp_weight == 10.0 and step.gp_endpoint == "generated"
    assert train_gradientnet.paper_config() == replace(config, vgg_weights="imagenet")


def test_quick_preset_uses_random_vgg_and_small_widths():
    config = train_gradientnet.quick(train_gradientnet.paper_config())
    train_gradientnet.check_config(config)
    recipe = config.paper
    assert config.preset == "quick" and recipe.vgg_weights == "random"
    assert recipe.critic_steps == 5 and recipe.adam_beta_1 == 0.5 and recipe.content_weight == 10.0
    assert config.schedule.learning_rate == 1e-4 and config.schedule.max_steps == 2000
    assert recipe.pixel_weight == 1000.0  # the preset's documented anchor (not the paper's)
    assert config.data.crop_size == 64 and config.data.val_images == 16
    assert train_gradientnet.critic_kwargs(config) == {"base_channels": 16}
    kwargs = train_gradientnet.model_kwargs(config)
    assert kwargs["base_channels"] == 16 and kwargs["global_residual"] is True
    assert kwargs["output_init"] == "zeros" and kwargs["num_mbrb"] == 2


def test_flags_become_the_config_once():
    """The command line over the preset over the recipe. Before configs, a ``--preset quick``
    parse followed by the paper defaults in one process kept the preset's model_kwargs and
    max_steps (flag defaults the preset had set); a plain parse now gives exactly the recipe."""
    args = ["--preset=quick", "--crop_size=32", '--model_kwargs={"num_mbrb": 1, "skip": "concat"}']
    with parsed_flags("train_gradientnet.py", *args) as flags:
        config = train_gradientnet.config_from_flags()
        assert config.preset == "quick" and config.data.crop_size == 32
        assert config.schedule.max_steps == 2000 and config.paper.vgg_weights == "random"
        assert config.paper.num_mbrb == 1  # --model_kwargs over the preset's 2
        assert train_gradientnet.model_kwargs(config)["skip"] == "concat"
        flags.unparse_flags()  # a second command in the same process, without the preset
        flags(["train_gradientnet.py"])
        assert train_gradientnet.config_from_flags() == train_gradientnet.paper_config()


@pytest.mark.parametrize(
    "args, fields, model, loss",
    [
        (["--content_weight=0"], {"content_weight": 0.0}, {}, {"vgg_weights": None}),
        (["--gradient_weight=0"], {"gradient_weight": 0.0}, {}, {}),
        (["--rgcl_mode=plain"], {"rgcl_mode": "plain"}, {"rgcl_mode": "plain"}, {}),
        (["--mbrb_branches=1"], {"mbrb_branches": 1}, {"mbrb_branches": 1}, {}),
        (["--nouse_gradientnet"], {"use_gradientnet": False}, {"use_gradientnet": False}, {}),
        (["--gp_endpoint=blurred"], {"gp_endpoint": "blurred"}, {}, {}),
    ],
)
def test_every_ablation_of_tables_4_and_5_is_a_flag(args, fields, model, loss):
    with parsed_flags("train_gradientnet.py", "--vgg_weights=random", *args):
        config = train_gradientnet.config_from_flags()
    paper = train_gradientnet.paper_config()
    assert config == replace(paper, vgg_weights="random", **fields)
    train_gradientnet.check_config(config)
    step = train_gradientnet.make_step(config, steps_per_epoch=1, total_steps=1)
    recorded = step.run_config()
    assert model.items() <= recorded["model_kwargs"].items()
    losses_given = {k: v for k, v in fields.items() if k not in model}
    assert {**losses_given, **loss}.items() <= recorded["loss"].items()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"crop_size": 30}, "--crop_size must be a multiple of 4 (GradientNet's two down-sa"),
        ({"crop_size": 28}, "--crop_size must be at least 32"),
        ({"critic_kwargs": '{"width": 3}'}, "--critic_kwargs: gradientnet_critic has no argu"),
        ({"critic_kwargs": "[16]"}, "--critic_kwargs must be a JSON object, got [16]"),
        ({"critic_kwargs": "{base: 1}"}, "--critic_kwargs is not valid JSON ("),
        ({"adam_beta_2": 1.0}, "--adam_beta_1 and --adam_beta_2 must be below 1."),
    ],
)
def test_bad_configs_are_one_line_config_errors(change, message):
    config = replace(train_gradientnet.paper_config(), **change)
    with pytest.raises(ConfigError) as error:
        train_gradientnet.check_config(config)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_bad_flags_are_one_line_errors(tmp_path):
    run = ["--run_dir", str(tmp_path / "run")]
    code = run_main(train_gradientnet, "--crop_size=30", *run)
    assert "--crop_size must be a multiple of 4" in str(code)
    code = run_main(train_gradientnet, '--critic_kwargs={"width": 3}', *run)
    assert "--critic_kwargs: gradientnet_critic has no argument 'width'" in str(code)
    code = run_main(train_gradientnet, '--model_kwargs={"skip": "concat", "nope": 1}', *run)
    assert "gradientnet has no argument 'nope'" in str(code)
    assert not (tmp_path / "run").exists()


def test_missing_imagenet_vgg_stops_before_the_first_step(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    data = tmp_path / "data"
    write_split(data, "train", 4, size=(32, 32))
    run = tmp_path / "run"
    code = run_main(
        train_gradientnet, "--data_dir", str(data), "--run_dir", str(run), "--crop_size=32"
    )
    message = str(code)
    assert message.startswith("train_gradientnet.py: error: VGG19 ImageNet weights not found")
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "253f8cb515780f3b799900260a226db6" in message and str(tmp_path / "keras") in message
    assert not run.exists()


@pytest.mark.eager
def test_a_tiny_command_trains_and_records_its_config(tmp_path):
    data = write_split(tmp_path / "data", "train", 4, size=(32, 32))
    write_split(data, "test", 1, size=(32, 32), seed=1)
    run = tmp_path / "run"
    tiny = ["--base_channels=4", "--gradient_channels=16", "--num_mbrb=1", "--critic_steps=1"]
    critic = '{"base_channels": 4}'
    code = run_command(
        train_gradientnet,
        f"--data_dir={data}",
        f"--run_dir={run}",
        "--crop_size=32",
        "--batch_size=2",
        "--max_steps=1",
        "--content_weight=0",
        f"--critic_kwargs={critic}",
        "--summary_images=0",
        *tiny,
    )
    assert code == 0, code
    recorded = json.loads((run / "run_config.json").read_text())
    assert "flags" not in recorded and recorded["config"]["paper"]["critic_kwargs"] == critic
    assert recorded["config"]["paper"]["num_mbrb"] == 1 and recorded["config"]["preset"] == "none"
    assert recorded["config"]["schedule"]["max_steps"] == 1
    assert recorded["critics"]["critic"]["kwargs"] == {"base_channels": 4}
    assert recorded["model_kwargs"] == {
        "rgcl_mode": "cross",
        "mbrb_branches": 3,
        "use_gradientnet": True,
        "base_channels": 4,
        "gradient_channels": 16,
        "num_mbrb": 1,
    }
    assert (run / "final.weights.h5").is_file()


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """Two full GAN steps (5 critic + 1 generator update each, VGG content loss) through the
    loop: (step object, trainer, generator weights before, run folder's parent)."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("gan")
    step = tiny_step()
    with eager_functions():  # traced: the resume test and the two-replica test
        before, trainer = one_loop_step(step, folder, size=32)
    return step, trainer, before, folder


def test_a_file_that_is_not_vgg19_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "vgg.h5"
    bad.write_bytes(b"not hdf5")
    config = LoopConfig(str(tmp_path / "run"), steps_per_epoch=1)
    trainer = Trainer(tiny_step(vgg_weights_path=str(bad)), None, config, out=io.StringIO())
    with pytest.raises(ConfigError, match=r"^--vgg_weights .*vgg\.h5: not a VGG19 notop weight"):
        trainer.setup()
    assert not (tmp_path / "run").exists()


def test_one_gan_step_updates_both_networks_and_never_the_vgg(gan_run):
    step, trainer, before, _ = gan_run
    critic = step.critics["critic"]
    assert int(step.optimizer.iterations.numpy()) == 2
    assert int(step.critic_optimizers["critic"].iterations.numpy()) == 2 * 5
    after = [np.array(w) for w in step.model.weights]
    assert max(np.abs(a - b).max() for a, b in zip(before, after, strict=True)) > 0
    assert all(np.isfinite(w).all() for w in after + critic.get_weights())
    assert step.vgg.trainable_variables == [] and step.vgg.trainable is False
    fresh = tiny_step()
    fresh.build(tf.distribute.get_strategy())  # seeded random VGG: identical, never updated
    for a, b in zip(step.vgg.get_weights(), fresh.vgg.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    critic_change = max(
        np.abs(a - b).max()
        for a, b in zip(critic.get_weights(), fresh.critics["critic"].get_weights(), strict=True)
    )
    assert critic_change > 0
    values = trainer.last_values
    for key in step.progress_terms + ("content", "critic_real", "critic_fake"):
        assert np.isfinite(values[key]), key
    assert values["content_weighted"] == pytest.approx(10 * values["content"], rel=1e-5)
    assert values["loss"] == pytest.approx(
        values["content_weighted"] + values["gradient"] + values["adversarial"], rel=1e-5
    )


def test_checkpoint_holds_every_network_and_optimizer(gan_run):
    step, trainer, _, folder = gan_run
    prefix = trainer.manager.latest_checkpoint
    names = [name for name, _ in tf.train.list_variables(prefix)]
    for root in ("model/", "optimizer/", "critic/", "critic_optimizer/"):
        assert any(n.startswith(root) for n in names), root
    assert not any("vgg" in n for n in names)
    config = json.loads((folder / "run" / "run_config.json").read_text())
    assert config["model"] == "gradientnet" and config["critics"]["critic"]["kwargs"] == TINY_CRITIC
    assert config["optimizer"] == optimizers.FORMULA_NAMES["pytorch"]
    assert config["loss"]["content_weight"] == 10.0 and config["critic_steps"] == 5
    assert adam_settings(step.critic_optimizers["critic"]) == (0.5, 0.999, 1e-8)
    assert set(step.learning_rates()) == {"learning_rate", "learning_rate/critic_optimizer"}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"content_weight": 0.0}, "loss.content_network"),  # first in sorted order
        ({"critic_kwargs": {"base_channels": 8}}, "critics.critic.kwargs.base_channels"),
        ({"critic_steps": 1}, "critic_steps"),
        ({"gp_endpoint": "blurred"}, "loss.gp_endpoint"),
        ({"model_kwargs": {**TINY, "rgcl_mode": "plain"}}, "model_kwargs.rgcl_mode"),
    ],
)
def test_resume_with_another_critic_or_loss_is_refused(gan_run, change, key):
    folder = gan_run[3]
    config = LoopConfig(str(folder / "run"), steps_per_epoch=2, max_steps=3)
    trainer = Trainer(tiny_step(**change), None, config, out=io.StringIO())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        trainer.setup()


# The resume test: no VGG (its seeded weights are equal in every process, tested above) and two
# critic updates per step (the seeds of the second must follow the first), to keep it short.
RESUME_STEP = {"content_weight": 0.0, "critic_steps": 2, "seed": 7}


def _gan_run(run_dir, max_steps, data):
    blur, sharp = data

    def make(epoch):
        return tf.data.Dataset.from_tensor_slices((blur, sharp)).batch(2, drop_remainder=True)

    step = tiny_step(**RESUME_STEP)
    config = LoopConfig(
        str(run_dir),
        steps_per_epoch=2,
        max_steps=max_steps,
        checkpoint_every=1,
        keep_checkpoints=5,
        log_every=1,
        global_batch_size=2,
    )
    trainer = Trainer(step, make, config, out=io.StringIO())
    trainer.run()
    state = [v.numpy() for v in step.model.weights + step.critics["critic"].weights]
    for optimizer in (step.optimizer, step.critic_optimizers["critic"]):
        state += [v.numpy() for v in optimizer.variables]
    return trainer.last_values, state


def test_resumed_gan_run_equals_an_uninterrupted_one(tmp_path):
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    blur = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype(np.float32)
    keras.utils.set_random_seed(1)
    straight_values, straight = _gan_run(tmp_path / "straight", 3, (blur, sharp))
    train_checks.killed_run_copy(tmp_path / "straight", tmp_path / "resumed", 2)
    keras.utils.set_random_seed(99)  # a new process initialises differently: all is restored
    resumed_values, resumed = _gan_run(tmp_path / "resumed", 3, (blur, sharp))
    assert len(straight) == len(resumed)
    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key, value in straight_values.items():
        assert resumed_values[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_gan_run_folder_evaluates_exports_and_deblurs(gan_run, tmp_path):
    # The generator is the checkpoint's "model": the inference commands ignore the critic.
    data = write_split(tmp_path / "data", "test", 2, size=(37, 45))
    round_trip(gan_run[3] / "run", data, tmp_path, "gradientnet", TINY)


MIRRORED_GAN = textwrap.dedent(
    """
    import json
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training.steps.gradientnet_step import GradientNetTrainStep
    from training.strategy import make_strategy

    kwargs = dict(model_kwargs={"base_channels": 4, "gradient_channels": 16, "num_mbrb": 1},
                  critic_kwargs={"base_channels": 4}, critic_steps=2, seed=3)
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    blur = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype("float32")

    def one_step(strategy, weights):
        step = GradientNetTrainStep(**kwargs)
        step.build(strategy)
        step.model.set_weights(weights[0])
        step.critics["critic"].set_weights(weights[1])
        ds = tf.data.Dataset.from_tensors((blur, sharp))
        batch = next(iter(strategy.experimental_distribute_dataset(ds)))
        fn = tf.function(lambda b: strategy.run(step.train_step, args=b), autograph=False)
        out = fn(batch)
        values = {k: float(strategy.reduce("MEAN", v, axis=None)) for k, v in out.items()}
        return step, values

    keras.utils.set_random_seed(0)
    ref = GradientNetTrainStep(**kwargs)
    ref.build(tf.distribute.get_strategy())
    init = (ref.model.get_weights(), ref.critics["critic"].get_weights())
    mirrored = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    single, one = one_step(tf.distribute.get_strategy(), init)
    multi, two = one_step(mirrored, init)

    def diff(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))

    # Biases of convolutions followed by instance norm have a zero gradient in exact arithmetic;
    # Adam's first step normalises their float32 noise to about +-lr, whatever the device count.
    before_in = ("e0/conv/bias", "e1/bias", "e2/bias", "d1/conv/bias", "d0/conv/bias")
    keep = [not v.path.endswith(before_in) for v in single.model.weights]
    pick = lambda m: [w for w, k in zip(m.get_weights(), keep) if k]
    drop = lambda m: [w for w, k in zip(m.get_weights(), keep) if not k]
    print("RESULT " + json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "generator": diff(pick(single.model), pick(multi.model)),
        "redundant_biases": diff(drop(single.model), drop(multi.model)),
        "excluded": len(keep) - sum(keep),
        "critic": diff(single.critics["critic"].get_weights(),
                       multi.critics["critic"].get_weights()),
        "moved": diff(init[1], multi.critics["critic"].get_weights()),
        "one": one, "two": two}))
    """
)


@pytest.mark.slow
def test_two_replica_gan_step_equals_one_device():
    # The penalty's nested tape runs in each replica; epsilon is drawn for the global batch and
    # sliced, so two replicas of 2 images compute what one device computes on 4.
    result = result_json(run_python(["-c", MIRRORED_GAN], timeout=600), which=0)
    assert result["replicas"] == 2 and result["moved"] > 1e-6
    assert result["generator"] < 1e-5 and result["critic"] < 1e-5
    assert result["excluded"] == 5 and result["redundant_biases"] <= 2.5e-4  # 2 Adam steps of 1e-4
    for key, value in result["one"].items():
        assert result["two"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_conditional_critic_sees_the_blurred_image():
    # Register item 16's alternative: the critic scores concat(blurred, image), 6 channels.
    step = tiny_step(critic_kwargs={"base_channels": 4, "in_channels": 6}, content_weight=0.0)
    step.critic_steps = 1
    step.build(tf.distribute.get_strategy())
    rng = np.random.default_rng(1)
    sharp = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    blur = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype(np.float32)
    before = step.critics["critic"].get_weights()
    values = tf.function(step.train_step, autograph=False)(blur, sharp)
    assert all(np.isfinite(float(v)) for v in values.values())
    after = step.critics["critic"].get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(before, after, strict=True)) > 0
    assert step.critics["critic"].convs[0].kernel.shape[2] == 6
