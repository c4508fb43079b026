"""training/vgg_config.py: the ``vgg_weights`` value -> (file, identity) and JSON kwargs checked
against a constructor, as config values (no flags), with the messages of the flag-reading versions
in cli/train_flags.py; the module imports neither absl nor TensorFlow."""

import subprocess
import sys

import pytest
from absl import app

import train_gradientnet  # noqa: F401  (defines --critic_kwargs and --vgg_weights)
from cli import train_flags
from config import ConfigError
from tests.conftest import REPO_ROOT
from tests.train_checks import parsed_flags
from training import vgg_config
from training.vgg_weights import file_md5


def test_the_class_table_and_arguments_are_the_commands():
    assert vgg_config.MODEL_CLASSES == train_flags.MODEL_CLASSES
    for key in vgg_config.MODEL_CLASSES:
        assert vgg_config.constructor_arguments(key) == train_flags.model_arguments(key), key


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, {}),
        ("", {}),
        ('{"base_channels": 16, "in_channels": 6}', {"base_channels": 16, "in_channels": 6}),
    ],
)
def test_good_kwargs_become_a_dict(text, expected):
    assert vgg_config.check_json_kwargs(text, "critic_kwargs", "gradientnet_critic") == expected


@pytest.mark.parametrize(
    "flag, text, class_key",
    [
        ("critic_kwargs", '{"width": 3}', "gradientnet_critic"),
        ("critic_kwargs", "[16]", "gradientnet_critic"),
        ("critic_kwargs", "{base: 1}", "gradientnet_critic"),
        ("model_kwargs", '{"nope": 1}', "rpgan_generator"),
    ],
)
def test_bad_kwargs_have_the_commands_message(flag, text, class_key):
    with pytest.raises(ConfigError) as error:
        vgg_config.check_json_kwargs(text, flag, class_key)
    with (
        parsed_flags("train_gradientnet.py", f"--{flag}={text}"),
        pytest.raises(app.UsageError) as flag_error,
    ):
        train_flags.checked_kwargs(flag, class_key)
    assert str(error.value) == str(flag_error.value) and "\n" not in str(error.value)


def test_random_vgg_needs_no_file():
    assert vgg_config.vgg_weights("random", "vgg19") == (None, vgg_config.RANDOM_VGG_ID)
    with parsed_flags("train_gradientnet.py", "--vgg_weights=random"):
        assert train_flags.vgg_weights_flag("vgg16") == vgg_config.vgg_weights("random", "vgg16")


@pytest.mark.parametrize("architecture", ["vgg19", "vgg16"])
def test_missing_imagenet_file_is_the_commands_message(monkeypatch, tmp_path, architecture):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(ConfigError) as error:
        vgg_config.vgg_weights("imagenet", architecture)
    with (
        parsed_flags("train_gradientnet.py", "--vgg_weights=imagenet"),
        pytest.raises(app.UsageError) as flag_error,
    ):
        train_flags.vgg_weights_flag(architecture)
    message = str(error.value)
    assert message == str(flag_error.value) and str(tmp_path / "keras") in message
    assert message.startswith(f"{architecture.upper()} ImageNet weights not found")


def test_a_given_file_is_named_by_its_md5(tmp_path):
    path = tmp_path / "vgg.h5"
    path.write_bytes(b"weights")
    assert vgg_config.vgg_weights(str(path), "vgg19") == (
        str(path),
        f"VGG19 notop, md5 {file_md5(str(path))}",
    )
    with pytest.raises(ConfigError, match="vgg_weights"):
        vgg_config.vgg_weights(str(tmp_path / "missing.h5"), "vgg19")


def test_the_module_imports_no_absl_and_no_tensorflow():
    code = (
        "import sys, training.vgg_config as m; "
        "m.check_json_kwargs('{}', 'critic_kwargs', 'gradientnet_critic'); "
        "print(sorted(n for n in ('absl', 'tensorflow', 'keras') if n in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
