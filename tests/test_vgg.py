"""models/vgg.py: offline VGG weight resolution and the frozen feature extractors.

VGG19 block4_conv3 (gradientnet.md sections 4, 5.1 and 8) and VGG16 block2_conv2 = relu2_2 with
[0, 1] images (sen_rpgan.md section 8). Nothing here downloads: weights are random
(``weights=None``) and saved to tmp_path in Keras' own legacy ``.h5`` format (the notop file's)
or as ``.weights.h5``; Keras' downloader is replaced by one that fails the test if called.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from models import vgg
from training import vgg_weights

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    """Any attempt to download fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", refuse)
    monkeypatch.setattr("keras.src.applications.vgg19.file_utils.get_file", refuse)
    monkeypatch.setattr("keras.src.applications.vgg16.file_utils.get_file", refuse)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A random-weights VGG19 notop saved as Keras' legacy .h5 (the notop file's format) and as
    .weights.h5, plus reference block4_conv3 features of a fixed image batch."""
    folder = tmp_path_factory.mktemp("vgg")
    keras.utils.set_random_seed(1)
    source = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    legacy = folder / "legacy_notop.h5"
    with h5py.File(legacy, "w") as f:
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    modern = folder / "notop.weights.h5"
    source.save_weights(modern)
    images = RNG.uniform(-1, 1, size=(2, 32, 48, 3)).astype("float32")
    caffe = keras.applications.vgg19.preprocess_input((images + 1.0) * 127.5)
    cut = keras.Model(source.input, source.get_layer("block4_conv3").output)
    return {"legacy": legacy, "modern": modern, "images": images, "features": cut(caffe).numpy()}


# --------------------------------------------------------------------------------------------------
# Weight resolution (no Keras model built)
# --------------------------------------------------------------------------------------------------


def test_random_means_no_file():
    assert vgg_weights.resolve_vgg_weights("random") is None


def test_cache_folder_honours_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert vgg_weights.keras_models_dir() == str(tmp_path / "kh" / "models")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert vgg_weights.keras_models_dir() == str(tmp_path / ".keras" / "models")


def test_missing_imagenet_file_names_file_md5_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(vgg.VGGWeightsError) as info:
        vgg_weights.resolve_vgg_weights("imagenet")
    message = str(info.value)
    assert "\n" not in message
    for part in (vgg.VGG19_NOTOP_FILE, vgg.VGG19_NOTOP_MD5, str(tmp_path / "models")):
        assert part in message
    assert "--vgg_weights random" in message and "KERAS_HOME" in message


def test_wrong_md5_names_both_hashes(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / vgg.VGG19_NOTOP_FILE
    path.write_bytes(b"partial download")
    with pytest.raises(vgg.VGGWeightsError) as info:
        vgg_weights.resolve_vgg_weights("imagenet")
    message = str(info.value)
    assert vgg_weights.file_md5(str(path)) in message and vgg.VGG19_NOTOP_MD5 in message
    assert str(path) in message


def test_bad_paths_are_refused(tmp_path):
    with pytest.raises(vgg.VGGWeightsError, match="no such file"):
        vgg_weights.resolve_vgg_weights(str(tmp_path / "absent.h5"))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(vgg.VGGWeightsError, match="HDF5"):
        vgg_weights.resolve_vgg_weights(str(other))
    good = tmp_path / "mine.h5"
    good.write_bytes(b"x")
    assert vgg_weights.resolve_vgg_weights(str(good)) == str(good)


def test_caffe_preprocessing_matches_keras():
    x = RNG.uniform(-1, 1, size=(2, 4, 5, 3)).astype("float32")
    got = vgg.CaffePreprocess("[-1,1]")(x)
    expected = keras.applications.vgg19.preprocess_input((x + 1.0) * 127.5)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)
    unit = (x + 1.0) / 2.0
    got = vgg.CaffePreprocess("[0,1]")(unit)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)
    # A mid-grey pixel (0 in [-1, 1]) becomes 127.5 minus the BGR means.
    grey = np.asarray(vgg.CaffePreprocess()(np.zeros((1, 1, 1, 3), "float32"))).reshape(-1)
    np.testing.assert_allclose(grey, 127.5 - np.array(vgg.CAFFE_MEAN_BGR), rtol=1e-6)
    with pytest.raises(ValueError, match="input_range"):
        vgg.CaffePreprocess("[0,255]")


# --------------------------------------------------------------------------------------------------
# The Keras extractor (full VGG19 builds: under a second each on CPU)
# --------------------------------------------------------------------------------------------------


def test_random_extractor_is_frozen_and_cut_at_block4_conv3():
    model = vgg.build_vgg19_features(None)
    assert model.trainable is False and model.trainable_variables == []
    # 11 convolutions up to block4_conv3 (2 + 2 + 4 + 3), kernel and bias each.
    assert len(model.non_trainable_variables) == 2 * 11
    inner = model.get_layer("vgg19_block4_conv3")
    assert inner.layers[-1].name == vgg.CONTENT_LAYER
    assert "block4_conv4" not in [layer.name for layer in inner.layers]
    features = model(np.zeros((2, 64, 96, 3), "float32"), training=False)
    assert tuple(features.shape) == (2, 8, 12, 512) and features.dtype == "float32"


@pytest.mark.parametrize("kind", ["legacy", "modern"])
def test_weight_file_formats_load(weight_files, kind):
    """Keras' own notop format (legacy .h5) and a Keras 3 .weights.h5 both load via PATH."""
    path = vgg_weights.resolve_vgg_weights(str(weight_files[kind]))
    model = vgg.build_vgg19_features(path)
    got = model(weight_files["images"], training=False)
    np.testing.assert_allclose(np.asarray(got), weight_files["features"], rtol=1e-4, atol=1e-3)


def test_imagenet_uses_the_cached_file_without_downloading(weight_files, monkeypatch, tmp_path):
    """With the notop file in $KERAS_HOME/models and a matching md5, 'imagenet' loads it offline."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    cached = tmp_path / "models" / vgg.VGG19_NOTOP_FILE
    cached.write_bytes(weight_files["legacy"].read_bytes())
    path = vgg_weights.resolve_vgg_weights(
        "imagenet", expected_md5=vgg_weights.file_md5(str(cached))
    )
    assert path == str(cached)
    got = vgg.build_vgg19_features(path)(weight_files["images"], training=False)
    np.testing.assert_allclose(np.asarray(got), weight_files["features"], rtol=1e-4, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_file_of_another_model_is_a_clear_error(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "dense.weights.h5"
    other.save_weights(path)
    with pytest.raises(vgg.VGGWeightsError, match="not a VGG19 notop weight file"):
        vgg.build_vgg19_features(str(path))


def test_content_loss_trains_the_image_not_the_vgg():
    """Spec 8: content loss on block4_conv3; VGG variables are not trainable and get no update."""
    model = vgg.build_vgg19_features(None)
    before = [v.numpy().copy() for v in model.variables]
    restored = tf.Variable(RNG.uniform(-1, 1, size=(1, 32, 32, 3)).astype("float32"))
    sharp = tf.constant(RNG.uniform(-1, 1, size=(1, 32, 32, 3)).astype("float32"))
    optimizer = keras.optimizers.Adam(1e-2)
    with tf.GradientTape() as tape:
        value = losses.gradientnet_content_loss(model, restored, sharp)
    trainable = [restored, *model.trainable_variables]
    assert trainable == [restored]
    optimizer.apply_gradients(zip(tape.gradient(value, trainable), trainable, strict=True))
    assert float(value) > 0
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.variables, strict=True))


# --------------------------------------------------------------------------------------------------
# VGG16 block2_conv2 (RP-GAN content loss, sen_rpgan.md section 8)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A random-weights VGG16 notop in Keras' legacy .h5 format plus reference block2_conv2
    features of a fixed [0, 1] image batch (caffe preprocessing of 255 x)."""
    folder = tmp_path_factory.mktemp("vgg16")
    keras.utils.set_random_seed(2)
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    legacy = folder / "legacy_vgg16_notop.h5"
    with h5py.File(legacy, "w") as f:
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    images = RNG.uniform(0, 1, size=(2, 32, 48, 3)).astype("float32")
    caffe = keras.applications.vgg16.preprocess_input(images * 255.0)
    cut = keras.Model(source.input, source.get_layer("block2_conv2").output)
    return {"legacy": legacy, "images": images, "features": cut(caffe).numpy()}


def test_vgg16_constants_are_the_specs():
    assert vgg.VGG16_NOTOP_FILE == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert vgg.VGG16_NOTOP_MD5 == "6d6bbae143d832006294945121d1f1fc"
    assert vgg.RPGAN_CONTENT_LAYER == "block2_conv2"
    with pytest.raises(ValueError, match="architecture"):
        vgg.build_vgg_features(None, "vgg11")
    with pytest.raises(ValueError, match="architecture"):
        vgg_weights.resolve_vgg_weights("imagenet", architecture="resnet")


def test_vgg16_extractor_is_frozen_and_cut_at_block2_conv2():
    """relu2_2 of [0, 1] images: (N, H/2, W/2, 128), 4 convolutions, no trainable variables."""
    model = vgg.build_vgg16_features(None)
    assert model.trainable is False and model.trainable_variables == []
    assert len(model.non_trainable_variables) == 2 * 4
    inner = model.get_layer("vgg16_block2_conv2")
    assert inner.layers[-1].name == "block2_conv2"
    features = model(np.full((2, 32, 48, 3), 0.5, "float32"), training=False)
    assert tuple(features.shape) == (2, 16, 24, 128) and features.dtype == "float32"
    # Seeded random weights: the same features in a second build.
    again = vgg.build_vgg16_features(None)(np.full((2, 32, 48, 3), 0.5, "float32"))
    np.testing.assert_array_equal(np.asarray(features), np.asarray(again))
    assert float(np.mean(np.asarray(features))) > 0


def test_vgg16_missing_and_damaged_imagenet_files(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(vgg.VGGWeightsError) as info:
        vgg_weights.resolve_vgg_weights("imagenet", architecture="vgg16")
    message = str(info.value)
    assert "\n" not in message and message.startswith("VGG16 ImageNet weights not found")
    for part in (vgg.VGG16_NOTOP_FILE, vgg.VGG16_NOTOP_MD5, str(tmp_path / "models")):
        assert part in message
    assert "--vgg_weights random" in message and vgg.VGG19_NOTOP_FILE not in message
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / vgg.VGG16_NOTOP_FILE
    path.write_bytes(b"partial download")
    with pytest.raises(vgg.VGGWeightsError) as info:
        vgg_weights.resolve_vgg_weights("imagenet", architecture="vgg16")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert vgg_weights.file_md5(str(path)) in message and vgg.VGG16_NOTOP_MD5 in message
    # A VGG19 file in the cache does not stand in for the VGG16 one (nor the reverse).
    with pytest.raises(vgg.VGGWeightsError, match=vgg.VGG19_NOTOP_FILE):
        vgg_weights.resolve_vgg_weights("imagenet")


def test_vgg16_cached_file_loads_offline(vgg16_file, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    cached = tmp_path / "models" / vgg.VGG16_NOTOP_FILE
    cached.write_bytes(vgg16_file["legacy"].read_bytes())
    path = vgg_weights.resolve_vgg_weights(
        "imagenet", expected_md5=vgg_weights.file_md5(str(cached)), architecture="vgg16"
    )
    assert path == str(cached)
    got = vgg.build_vgg16_features(path)(vgg16_file["images"], training=False)
    np.testing.assert_allclose(np.asarray(got), vgg16_file["features"], rtol=1e-4, atol=1e-3)


def test_vgg19_file_is_not_a_vgg16_file(weight_files):
    path = vgg_weights.resolve_vgg_weights(str(weight_files["legacy"]), architecture="vgg16")
    with pytest.raises(vgg.VGGWeightsError, match="not a VGG16 notop weight file"):
        vgg.build_vgg16_features(path)
