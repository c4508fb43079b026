"""Helpers shared by the training-script and data tests: small GoPro-layout data sets, PNG files
damaged inside their image data (:mod:`tests.bad_files`), flags parsed in-process, the script run
as a subprocess, one step through the generic loop, and the run-directory round trip through
evaluate.py, export.py and deblur.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil

import cv2
import numpy as np
import tensorflow as tf
from absl import flags

from tests.bad_files import damage_png  # noqa: F401  (re-exported for the data tests)
from tests.process_checks import run_python
from training.loop import LoopConfig, Trainer

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_split(root, split, n, size=(48, 48), seed=0):
    """``n`` smooth random pairs (blur = horizontal box blur of sharp) in the GoPro layout."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        seq = root / split / f"SEQ{i % 2}"
        sharp = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (3, 3), 1)
        blur = cv2.blur(sharp, (5, 1))
        for kind, image in (("blur", blur), ("sharp", sharp)):
            (seq / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(seq / kind / f"{i:06d}.png"), image)
    return root


def env():
    return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def run_script(script, args, timeout=300):
    """Runs ``python <script> <args>`` from the repository; returns the CompletedProcess."""
    return run_python([os.path.join(REPO, script), *args], timeout=timeout)


@contextlib.contextmanager
def parsed_flags(program, *args):
    """Parses ``args`` as the command line of ``program``; on exit unparses them and restores
    every flag default a script's ``apply_defaults`` changed (other tests share the process)."""
    with _parsed(program, *args):
        yield FLAGS


@contextlib.contextmanager
def _parsed(program, *args):
    """:func:`parsed_flags` yielding what is not a flag (``[program, *positional]``)."""
    defaults = {name: FLAGS[name].default for name in FLAGS}
    FLAGS.unparse_flags()
    remaining = FLAGS([program, *args])
    try:
        yield remaining
    finally:
        FLAGS.unparse_flags()
        for name, default in defaults.items():
            if FLAGS[name].default != default:
                FLAGS.set_default(name, default)


def run_main(module, *args):
    """Calls ``module.main`` with flags parsed from ``args``; returns its exit code or message."""
    program = module.__name__ + ".py"
    with parsed_flags(program, *args):
        try:
            module.main([program])
        except SystemExit as stop:
            return stop.code
    return 0


def run_command(module, *args):
    """``module``'s command line run in this process, without the seconds a subprocess spends
    importing TensorFlow: 0, or the one line the command would print (a flag that does not parse
    included, worded as :func:`cli.parse_flags` words it). What is not a flag reaches ``main``
    as on the command line."""
    program = module.__name__ + ".py"
    try:
        with _parsed(program, *args) as argv:
            module.main(argv)
    except flags.Error as error:
        return f"{program}: error: {error}"
    except SystemExit as stop:
        return stop.code
    return 0


def adam_settings(optimizer):
    return (
        float(optimizer.beta_1),
        float(optimizer.beta_2),
        float(optimizer.epsilon),
    )


def assert_glorot_init(model):
    """Every convolution kernel is Glorot-uniform ("Xavier"), every bias zero-initialised."""
    import keras

    convs = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
    ]
    assert convs
    for layer in convs:
        assert isinstance(layer.kernel_initializer, keras.initializers.GlorotUniform), layer.name
        assert isinstance(layer.bias_initializer, keras.initializers.Zeros), layer.name


def one_loop_step(step, tmp_path, size=48, batch=2):
    """Two updates of ``step`` through the generic loop on in-memory data; returns
    (weights before, trainer)."""
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0.0, 1.0, (2 * batch, size, size, 3)).astype(np.float32)
    blur = (0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2)).astype(np.float32)

    def make(epoch):
        return tf.data.Dataset.from_tensor_slices((blur, sharp)).batch(batch, drop_remainder=True)

    config = LoopConfig(
        str(tmp_path / "run"), steps_per_epoch=2, max_steps=2, log_every=1, global_batch_size=batch
    )
    trainer = Trainer(step, make, config, out=io.StringIO())
    trainer.setup()
    before = [np.array(w) for w in step.model.weights]
    trainer.run()
    return before, trainer


def assert_weights_changed_and_finite(before, model):
    after = [np.array(w) for w in model.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(np.isfinite(a).all() for a in after)


def round_trip(run_dir, data_dir, tmp_path, model_name, model_kwargs):
    """evaluate.py from ``--checkpoint RUN_DIR``, export.py round trip and deblur.py, on images
    whose sides are not multiples of 16 (padded and cropped back without special cases)."""
    import deblur
    import evaluate
    import export
    from inference import model_io

    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["model"] == model_name and config["model_kwargs"] == model_kwargs

    out = tmp_path / "eval"
    args = ["--checkpoint", str(run_dir), "--data_dir", str(data_dir), "--out_dir", str(out)]
    assert run_main(evaluate, *args, "--warmup", "0") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_source"]["model"] == model_name and summary["num_images"] == 2
    assert np.isfinite(summary["psnr_mean"])

    saved = tmp_path / "saved"
    assert run_main(export, "--checkpoint", str(run_dir), "--out", str(saved)) == 0
    image = np.random.default_rng(3).random((1, 37, 53, 3), dtype=np.float32)
    keras_out = model_io.load_restorer(checkpoint=str(run_dir))(image).numpy()
    served = model_io.load_restorer(saved_model=str(saved))(image).numpy()
    assert served.shape == (1, 37, 53, 3)
    np.testing.assert_allclose(served, keras_out, atol=1e-4)

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.rint(image[0, ..., ::-1] * 255).astype(np.uint8))
    assert run_main(deblur, "--input", str(photo), "--saved_model", str(saved)) == 0
    assert cv2.imread(str(tmp_path / "photo_deblurred.png")).shape == (37, 53, 3)


def killed_run_copy(source, target, number):
    """A copy of run folder ``source`` as a run killed right after saving ``ckpt-<number>``."""
    (target / "checkpoints").mkdir(parents=True)
    shutil.copy(source / "run_config.json", target / "run_config.json")
    for path in (source / "checkpoints").glob(f"ckpt-{number}.*"):
        shutil.copy(path, target / "checkpoints" / path.name)
    (target / "checkpoints" / "checkpoint").write_text(
        f'model_checkpoint_path: "ckpt-{number}"\nall_model_checkpoint_paths: "ckpt-{number}"\n'
    )
