"""train_rpgan.py, training/rpgan/rpgan_run.py and training/rpgan/rpgan_data.py (sen_rpgan.md
section 9): the recipe's numbers through the script's config (built directly, and from flags once),
one step of each training phase (pre-training, replay buffer), the snapshot frozen during a cycle,
the run-directory contract of an RP-GAN run, an exact resume inside a buffer cycle, and one-line
errors for bad flags (--betas against --val_levels among them)."""

from __future__ import annotations

import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import train_rpgan
from config import ConfigError
from tests.train_checks import killed_run_copy, parsed_flags, run_main
from training.config import replace
from training.rpgan import deconv_cache, rpgan_data, rpgan_run
from training.steps.rpgan_step import RPGANTrainStep

TINY = {"width_divisor": 16}


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory):
    """A 64-px flow-23 set (8 train + 2 test pairs with flow labels)."""
    from data import synthetic

    root = tmp_path_factory.mktemp("rpgan_flow") / "flow-23"
    cfg = synthetic.SynthConfig(
        kind="flow", size=64, train_pairs=8, test_pairs=2, u_max=23, flows_per_image=4
    )
    synthetic.build_dataset(str(root), cfg, workers=1)
    return root


@pytest.fixture(scope="module")
def sen_run(tmp_path_factory):
    """A tiny one-stack SEN 'run' (run_config.json + final.weights.h5) with small flows."""
    import models

    path = tmp_path_factory.mktemp("sen_run")
    kwargs = {"num_stacks": 1, "width_divisor": 16}
    keras.utils.set_random_seed(3)
    sen = models.build_flow_estimator("sen", **kwargs)
    sen(np.zeros((1, 64, 64, 3), np.float32))
    for variable in sen.weights:  # small outputs: a few pixels of flow
        variable.assign(variable * 0.1)
    sen.save_weights(str(path / "final.weights.h5"))
    config = {"model": "sen", "model_kwargs": kwargs, "paper": "sen", "u_max": 23}
    (path / "run_config.json").write_text(json.dumps(config))
    return path


# ---- the recipe's numbers through the script's config --------------------------------------------


def test_paper_recipe_and_schedule_numbers_through_the_script(monkeypatch, tmp_path, sen_run):
    """3103 images (1000 synthetic + 2103 GoPro): 194 steps an epoch, 190 epochs with the first 40
    of level-1 pre-training, buffer cycles of 187 steps, lr 1e-4 for 110 epochs then linear to 1e-6
    over 80, batch 16 of 256x256, Adam (0.9, 0.99, 1e-8), gamma 0.01, lambda 0.1."""
    images = [deconv_cache.TrainingImage(f"i{i}", None) for i in range(3103)]
    monkeypatch.setattr(
        rpgan_run, "training_images", lambda config: (images, {"train_images": 3103})
    )
    monkeypatch.setattr(rpgan_run, "validation", lambda config: None)
    paper = train_rpgan.paper_config()
    assert paper.paper.networks.vgg_weights == "imagenet"  # no ImageNet file here: random given
    config = replace(
        paper, sen_checkpoint=str(sen_run), run_dir=str(tmp_path / "run"), vgg_weights="random"
    )
    train_rpgan.check_config(config)
    data, sources = config.data, config.paper.sources
    assert (data.batch_size, data.crop_size, sources.synthetic_images) == (16, 256, 1000)
    assert (data.hflip, data.vflip, data.rot90, data.noise) == (False, False, False, "off")
    assert rpgan_run.betas(config) == pytest.approx([0.02, 0.1, 0.5])
    trainer = train_rpgan.build_trainer(config, out=io.StringIO())
    assert trainer.config.steps_per_epoch == 194 and trainer.config.total_steps == 190 * 194
    segments = trainer.make_epoch_dataset
    assert segments.step_obj is trainer.step_obj  # the data is built with its step
    assert segments.pretrain_steps == 40 * 194 and segments.steps_per_cycle == 187
    # Segments end with their phase (pre-training, a cycle) or after 7 batches held in memory.
    pretrain = 40 * 194
    assert segments.chunk_steps == 7 and segments.segment_end(0) == 7
    assert segments.segment_end(pretrain - 1) == pretrain
    assert segments.segment_end(pretrain + 200) == pretrain + 187 + 14
    assert segments.segment_end(pretrain + 187 + 185) == pretrain + 2 * 187
    kwargs = segments.buffer_kwargs
    assert (kwargs["size"], kwargs["passes"], kwargs["margin"]) == (1000, 3, 32)
    assert kwargs["fractions"] == [0.5, 0.3, 0.2]
    step = trainer.step_obj
    assert (step.beta_1, step.beta_2, step.epsilon, step.adam_formula) == (
        0.9,
        0.99,
        1e-8,
        "pytorch",
    )
    assert step.weights["cgan_weight"] == 0.01 and step.weights["penalty_weight"] == 0.1
    assert step.weights["content_feature_scale"] == pytest.approx(1 / 57.5)
    assert step.use_dp and step.dp_lipschitz == "clip" and step.clip_limit == 0.01
    assert step.model_kwargs == {"g_up_widths": [256, 128], "width_divisor": 1}
    assert step.framework_kwargs == {
        "levels": 3,
        "betas": pytest.approx([0.02, 0.1, 0.5]),
        "cg_tol": 1e-5,
        "cg_max_iter": 100,
    }
    rate = step.learning_rate
    expected = {0: 1e-4, 110 * 194: 1e-4, 150 * 194: (1e-4 + 1e-6) / 2, 190 * 194: 1e-6}
    for i, value in expected.items():
        assert float(rate(i)) == pytest.approx(value, rel=1e-5), i
    assert float(rate(110 * 194 + 1)) < 1e-4


def test_quick_preset():
    config = train_rpgan.paper_config()
    quick = train_rpgan.quick(config)
    train_rpgan.check_config(replace(quick, sen_checkpoint=__file__))
    sources, networks = quick.paper.sources, quick.paper.networks
    assert sources.u_max == 23 and networks.width_divisor == 4 and networks.vgg_weights == "random"
    assert quick.data.val_images == 0 and quick.paper.pretrain_epochs < quick.schedule.epochs
    assert train_rpgan.model_kwargs(quick) == {
        "g_up_widths": [256, 128],
        "width_divisor": 4,
        "global_residual": True,
        "output_init": "zeros",
    }
    assert train_rpgan.paper_config() == config  # a preset returns a new config


def test_flags_become_the_config_once():
    """The command line over the preset over the recipe; the comma lists become tuples of
    numbers; a preset parsed before the paper defaults in one process leaves nothing behind."""
    args = (
        "--preset=quick",
        "--sen_checkpoint=x",
        "--betas=0.1,0.2,0.3,0.4",
        "--g_up_widths=128,64",
    )
    with parsed_flags("train_rpgan.py", *args, "--val_levels=4", "--width_divisor=2"):
        config = train_rpgan.config_from_flags()
    assert config.preset == "quick" and config.paper.sources.u_max == 23
    assert config.paper.sources.sen_checkpoint == "x" and config.paper.networks.width_divisor == 2
    assert config.paper.buffer.betas == (0.1, 0.2, 0.3, 0.4) and config.paper.buffer.val_levels == 4
    assert config.paper.networks.g_up_widths == (128, 64)
    assert config.paper.buffer.buffer_fractions == (0.5, 0.3, 0.2)
    with parsed_flags("train_rpgan.py"):
        assert train_rpgan.config_from_flags() == train_rpgan.paper_config()


def test_betas_must_cover_the_validation_levels():
    """--betas given with fewer values than --val_levels is refused at the start, naming both
    flags (without the check, the first validation failed hours into the run); the default
    ladder covers any number of levels."""
    config = replace(
        train_rpgan.paper_config(), buffer_fractions=(0.5, 0.5), betas=(0.02, 0.1), val_levels=3
    )
    with pytest.raises(ConfigError) as error:
        train_rpgan.check_betas_per_level(config)
    message = str(error.value)
    assert message == "--betas has 2 values; --val_levels 3 needs one per level."
    train_rpgan.check_betas_per_level(replace(config, val_levels=2))
    unset = replace(config, betas=None, val_levels=5)
    train_rpgan.check_betas_per_level(unset)
    assert len(rpgan_run.framework_kwargs(unset)["betas"]) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--sen_checkpoint is required"),
        (["--sen_checkpoint=/nonexistent/sen"], "no such file or folder"),
        (["--hflip"], "without augmentation"),
        (["--pretrain_epochs=200"], "exceeds --epochs"),
        (["--dp_lipschitz=gp"], "needs --d_style no_bn"),
        (["--betas=0.1"], "--betas has 1 values"),
        (
            ["--betas=0.02,0.1,0.5", "--val_levels=4"],
            "--betas has 3 values; --val_levels 4 needs one per level.",
        ),
        (["--betas=0.1,x,1"], "--betas must be numbers, got ['0.1', 'x', '1']."),
        (["--g_up_widths=512,256"], "--g_up_widths must be 256,128 or 128,64, got ['512', '256']."),
        (["--crop_size=66"], "multiple of 4"),
        (['--model_kwargs={"width_divisor": 2}'], "set width_divisor with --width_divisor"),
        (['--model_kwargs={"depth": 2}'], "rpgan_generator has no argument 'depth'"),
    ],
)
def test_bad_flags_are_one_line_errors(sen_run, args, message):
    given = list(args)
    if not any(a.startswith("--sen_checkpoint") for a in given) and "required" not in message:
        given.append(f"--sen_checkpoint={sen_run}")
    code = run_main(train_rpgan, *given)
    assert isinstance(code, str) and "\n" not in code and message in code, code
    assert code.startswith("train_rpgan.py: error: "), code


# ---- one step of each phase; the snapshot frozen during a cycle ---------------------------------


def _tiny_step():
    step = RPGANTrainStep(model_kwargs=TINY, critic_kwargs=TINY, replay_snapshot=True)
    step.build(tf.distribute.get_strategy())
    return step


def _cache(flow_root, tmp_path):
    from data import readers

    pairs = readers.list_pairs(str(flow_root), "train")
    images = deconv_cache.from_pairs(pairs, with_labels=True)
    return deconv_cache.DeconvCache(
        str(tmp_path / "cache"), images, flow_source="true", max_iter=20, log=lambda m: None
    )


def _weights(model):
    return [np.array(w) for w in model.weights]


def test_one_step_of_each_phase_and_the_frozen_snapshot(flow_root, tmp_path):
    step = _tiny_step()
    data = rpgan_data.RPGANData(
        _cache(flow_root, tmp_path),
        step,
        batch_size=2,
        crop_size=32,
        pretrain_steps=1,
        buffer_kwargs={"size": 10, "passes": 1, "margin": 8, "max_iter": 20},
        log=lambda m: None,
    )
    assert data.steps_per_cycle == 5 and data.segment_end(0) == 1 and data.segment_end(1) == 6
    for start in (0, 1):  # pre-training (level 1), then the first buffer cycle
        istar, blurred, sharp = next(iter(data.dataset(start, 0, start)))
        assert istar.shape == blurred.shape == sharp.shape == (2, 32, 32, 3)
        before = _weights(step.model)
        terms = step.train_step(istar, blurred, sharp)
        after = _weights(step.model)
        assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
        assert all(np.isfinite(a).all() for a in after)
        assert all(np.isfinite(float(v)) for v in terms.values())
    # The buffer of cycle 0 was made by the snapshot G~ = G at the cycle's start; G has trained
    # since, the snapshot has not; a later segment of the same cycle reuses the buffer as it is.
    assert int(step.snapshot_cycle.numpy()) == 0 and data.buffer.cycle == 0
    assert sorted(np.bincount(data.buffer.items.levels)[1:]) == [2, 3, 5]
    snapshot = _weights(step.snapshot)
    assert any(not np.array_equal(s, g) for s, g in zip(snapshot, after, strict=True))
    items = data.buffer.items
    next(iter(data.dataset(3, 0, 3)))
    assert data.buffer.items is items
    for s, now in zip(snapshot, _weights(step.snapshot), strict=True):
        np.testing.assert_array_equal(s, now)
    next(iter(data.dataset(6, 0, 6)))  # cycle 1: G~ <- G, rebuilt
    assert int(step.snapshot_cycle.numpy()) == 1
    for s, g in zip(_weights(step.snapshot), _weights(step.model), strict=True):
        np.testing.assert_array_equal(s, g)


# ---- a tiny run: the run-directory contract and an exact resume inside a buffer cycle -----------


def _run_args(flow_root, sen_run, cache, run, *extra):
    return (
        f"--sen_checkpoint={sen_run}",
        f"--flow_dir={flow_root}",
        f"--run_dir={run}",
        f"--cache_dir={cache}",
        "--train_flow_source=sen",
        "--width_divisor=16",
        "--vgg_weights=random",
        "--batch_size=2",
        "--crop_size=32",
        "--epochs=2",
        "--pretrain_epochs=1",
        "--buffer_size=4",
        "--buffer_passes=1",
        "--buffer_margin=8",
        "--cg_max_iter=10",
        "--val_levels=1",
        "--val_images=1",
        "--val_every_epochs=0",
        "--checkpoint_every=0",
        "--nocheckpoint_every_epoch",
        "--log_every=1",
        "--nolog_lp_grad_ratio",  # its extra backward pass is tested in tests/test_rpgan_step.py
        *extra,
    )


@pytest.mark.slow
def test_run_directory_contract_and_exact_resume(flow_root, sen_run, tmp_path):
    cache = tmp_path / "cache"
    # 8 images / batch 2: 4 steps an epoch; 4 of pre-training, then two 2-step buffer cycles.
    # The checkpoint of step 5 (inside cycle 0) is the one the resume below starts from.
    straight = tmp_path / "straight"
    args = _run_args(flow_root, sen_run, cache, straight, "--checkpoint_every=5")
    assert run_main(train_rpgan, *args) == 0
    assert tf.train.latest_checkpoint(str(straight / "checkpoints")).endswith("ckpt-8")
    config = json.loads((straight / "run_config.json").read_text())
    assert config["model"] == "rpgan_generator" and config["paper"] == "rpgan"
    assert config["sen"]["weights"] == "sen.weights.h5" and config["sen"]["u_max"] == 23
    assert config["framework"] == {"levels": 1, "betas": [0.02], "cg_tol": 1e-5, "cg_max_iter": 10}
    recorded = config["config"]
    assert recorded["paper"]["buffer"]["val_levels"] == 1 and recorded["data"]["crop_size"] == 32
    assert recorded["paper"]["networks"]["g_up_widths"] == [256, 128]
    for name in ("sen.weights.h5", "final.weights.h5"):
        assert os.path.isfile(straight / name), name
    # The run is a whole framework for evaluate.py / deblur.py / export.py.
    from inference import model_io

    restorer = model_io.load_restorer(checkpoint=str(straight), levels=2)
    restored = np.asarray(restorer(np.full((1, 37, 45, 3), 0.5, np.float32)))
    assert restored.shape == (1, 37, 45, 3) and np.isfinite(restored).all()

    # Stopped inside cycle 0 (killed right after the checkpoint of step 5), then resumed to step 8
    # in a new trainer: G, both critics, the optimizers and the snapshot come from the checkpoint,
    # the buffer of cycle 0 is rebuilt (validation changes no weight).
    resumed = tmp_path / "resumed"
    killed_run_copy(straight, resumed, 5)
    args = _run_args(flow_root, sen_run, cache, resumed, "--checkpoint_every=5", "--val_images=0")
    assert run_main(train_rpgan, *args) == 0
    assert json.loads((resumed / "run_config.json").read_text())["resumed_from_step"] == 5

    import models

    def final(run):
        model = models.build_prior("rpgan_generator", **TINY)
        model(np.zeros((1, 8, 8, 6), np.float32))
        model.load_weights(str(run / "final.weights.h5"))
        return _weights(model)

    for a, b in zip(final(straight), final(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
