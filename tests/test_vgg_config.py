"""training/vgg_config.py (``vgg_weights`` value -> file and identity) and
training/model_arguments.py (JSON kwargs checked against a constructor): config values, no flags;
neither module imports absl or TensorFlow."""

import subprocess
import sys

import pytest

from config import ConfigError
from tests.conftest import REPO_ROOT
from training import model_arguments, vgg_config
from training.vgg_weights import file_md5


def test_every_class_has_its_constructor_arguments():
    for key in model_arguments.MODEL_CLASSES:
        assert model_arguments.constructor_arguments(key), key
    assert "base_channels" in model_arguments.constructor_arguments("gradientnet_critic")


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, {}),
        ("", {}),
        ('{"base_channels": 16, "in_channels": 6}', {"base_channels": 16, "in_channels": 6}),
    ],
)
def test_good_kwargs_become_a_dict(text, expected):
    check = model_arguments.check_json_kwargs
    assert check(text, "critic_kwargs", "gradientnet_critic") == expected


@pytest.mark.parametrize(
    "flag, text, class_key, message",
    [
        ("critic_kwargs", '{"width": 3}', "gradientnet_critic", "--critic_kwargs: gradientnet_c"),
        ("critic_kwargs", "[16]", "gradientnet_critic", "--critic_kwargs must be a JSON object"),
        ("critic_kwargs", "{base: 1}", "gradientnet_critic", "--critic_kwargs is not valid JSON"),
        ("model_kwargs", '{"nope": 1}', "rpgan_generator", "--model_kwargs: rpgan_generator has"),
    ],
)
def test_bad_kwargs_are_one_line(flag, text, class_key, message):
    with pytest.raises(ConfigError) as error:
        model_arguments.check_json_kwargs(text, flag, class_key)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_random_vgg_needs_no_file():
    assert vgg_config.vgg_weights("random", "vgg19") == (None, vgg_config.RANDOM_VGG_ID)


@pytest.mark.parametrize("architecture", ["vgg19", "vgg16"])
def test_missing_imagenet_file_is_one_line_naming_the_place(monkeypatch, tmp_path, architecture):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(ConfigError) as error:
        vgg_config.vgg_weights("imagenet", architecture)
    message = str(error.value)
    assert str(tmp_path / "keras") in message and "\n" not in message
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


def test_the_modules_import_no_absl_and_no_tensorflow():
    code = (
        "import sys, training.vgg_config, training.model_arguments as m; "
        "m.check_json_kwargs('{}', 'critic_kwargs', 'gradientnet_critic'); "
        "print(sorted(n for n in ('absl', 'tensorflow', 'keras') if n in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
