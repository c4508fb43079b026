"""Frozen VGG19 / VGG16 feature extractors for perceptual (content) losses.

* GradientNet GAN (gradientnet.md section 4, 5.1): the content loss compares VGG19 ImageNet
  features at "ReLU4-3", which in Keras is the output of layer ``block4_conv3`` (Keras' VGG
  convolutions include their ReLU; VGG19's block 4 has four convolutions, so this is not the
  block's last).
* RP-GAN (sen_rpgan.md section 8, paper section 4.2.3): VGG16 "relu2_2" = Keras layer
  ``block2_conv2`` (post-ReLU, H/2 x W/2 x 128), images in [0, 1]: :func:`build_vgg16_features`.

* :func:`training.vgg_weights.resolve_vgg_weights` (outside ``models/``: it reads files) turns
  the ``--vgg_weights`` value into a local file (or ``None`` for random weights), never downloading.
* :func:`build_vgg_features` builds ``keras.applications.VGG19`` or ``VGG16``
  (``architecture``, ``include_top=False``) from that file, cuts it at ``layer``, prepends the
  caffe preprocessing and freezes it. The model takes NHWC float32 images in [-1, 1] or [0, 1]
  (``input_range``) and returns float32 features: (N, H/8, W/8, 512) for VGG19 ``block4_conv3``
  (:func:`build_vgg19_features`, input [-1, 1] by default), (N, H/2, W/2, 128) for VGG16
  ``block2_conv2`` (:func:`build_vgg16_features`, input [0, 1] by default). Callers run it with
  ``training=False``; it has no trainable variables.

keras.layers / keras.ops only (runs under every Keras backend); the weights are always passed to
Keras as a local path, never as ``weights="imagenet"`` (which would try to download).
"""

from __future__ import annotations

import keras
from keras import ops

# Keras' ImageNet VGG19 / VGG16 without the classifier (keras.applications.vgg19 / vgg16,
# WEIGHTS_PATH_NO_TOP): legacy Keras HDF5 weights files (``.h5``, layer_names / weight_names
# attributes).
VGG19_NOTOP_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG19_NOTOP_MD5 = "253f8cb515780f3b799900260a226db6"
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"
# architecture -> (display name, notop file, its md5).
VGG_NOTOP = {
    "vgg19": ("VGG19", VGG19_NOTOP_FILE, VGG19_NOTOP_MD5),
    "vgg16": ("VGG16", VGG16_NOTOP_FILE, VGG16_NOTOP_MD5),
}
ARCHITECTURES = tuple(VGG_NOTOP)
# "ReLU4-3" of the GradientNet paper (section 3.2.1).
CONTENT_LAYER = "block4_conv3"
# "relu2_2" of VGG16 in the RP-GAN paper (section 4.2.3).
RPGAN_CONTENT_LAYER = "block2_conv2"
# Caffe preprocessing of keras.applications.vgg19 / vgg16 .preprocess_input (the same): RGB -> BGR,
# minus these means.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
INPUT_RANGES = ("[-1,1]", "[0,1]")
# Seed of the random VGG19 weights (smoke runs, the quick presets, tests).
RANDOM_VGG_SEED = 1234


class VGGWeightsError(ValueError):
    """The ``--vgg_weights`` value does not name a usable local VGG19 / VGG16 weight file."""


# --------------------------------------------------------------------------------------------------
# Keras model
# --------------------------------------------------------------------------------------------------


class CaffePreprocess(keras.layers.Layer):
    """``keras.applications.vgg19.preprocess_input`` ("caffe" mode) for images in [-1, 1] or [0, 1].

    Maps the input to [0, 255] (``(x + 1) * 127.5`` or ``x * 255``), reverses the channels
    (RGB -> BGR) and subtracts the ImageNet BGR means (103.939, 116.779, 123.68); no scaling.
    NHWC float32 in and out.
    """

    def __init__(self, input_range="[-1,1]", **kwargs):
        super().__init__(**kwargs)
        if input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {INPUT_RANGES}, got {input_range!r}")
        self.input_range = input_range

    def call(self, x):
        x = ops.cast(x, "float32")
        x = (x + 1.0) * 127.5 if self.input_range == "[-1,1]" else x * 255.0
        x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype="float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "input_range": self.input_range}


def architecture_name(architecture):
    """Display name ("VGG19" / "VGG16") of ``architecture``; ValueError for an unknown one."""
    if architecture not in VGG_NOTOP:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return VGG_NOTOP[architecture][0]


def build_vgg_features(
    weights_path=None,
    architecture="vgg19",
    layer=CONTENT_LAYER,
    input_range="[-1,1]",
    random_seed=RANDOM_VGG_SEED,
):
    """Frozen VGG feature extractor: caffe preprocessing -> VGG19 / VGG16 up to ``layer``.

    Args:
        weights_path: local weight file of ``VGG19(include_top=False)`` /
            ``VGG16(include_top=False)`` (from :func:`training.vgg_weights.resolve_vgg_weights`)
            or ``None`` for random weights (tests, smoke runs).
        architecture: ``"vgg19"`` or ``"vgg16"``.
        layer: the layer whose (post-ReLU) output is returned: ``block4_conv3`` = VGG19 "ReLU4-3"
            (GradientNet), ``block2_conv2`` = VGG16 "relu2_2" (RP-GAN).
        input_range: ``"[-1,1]"`` or ``"[0,1]"``: the range of the images passed in.
        random_seed: without a weight file, every convolution gets He-uniform kernels drawn with
            this seed (plus the layer's index) and zero biases, so "random" VGG features are the
            same in every process (a resumed run keeps its loss function) and keep an ImageNet-like
            magnitude through the ReLUs (Keras' Glorot default shrinks the ``block4_conv3``
            features about 50-fold, making the content term vanish). ``None``: Keras' unseeded
            Glorot initialisation.

    Returns:
        A ``keras.Model`` mapping (N, H, W, 3) float32 images to float32 features, e.g.
        (N, H/8, W/8, 512) for VGG19 ``block4_conv3``, (N, H/2, W/2, 128) for VGG16
        ``block2_conv2``; ``trainable=False``, so it has no trainable variables and an optimizer
        never sees it. Call it with ``training=False``. Its inner model is named
        ``f"{architecture}_{layer}"``.

    Raises:
        VGGWeightsError: the file does not hold the architecture's notop weights (wrong model,
            damaged file).
        ValueError: unknown ``architecture``, ``layer`` or ``input_range``.
    """
    display = architecture_name(architecture)
    application = keras.applications.VGG19 if architecture == "vgg19" else keras.applications.VGG16
    try:
        # input_shape (None, None, 3): any image size (>= 32 px per Keras' check).
        backbone = application(include_top=False, weights=weights_path, input_shape=(None, None, 3))
    except Exception as error:  # h5py / Keras raise many types (missing layer, shape, format)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise VGGWeightsError(
            f"--vgg_weights {weights_path}: not a {display} notop weight file ({first_line})"
        ) from error
    if weights_path is None and random_seed is not None:
        _seeded_random_weights(backbone, random_seed)
    name = f"{architecture}_{layer}"
    features = keras.Model(backbone.input, backbone.get_layer(layer).output, name=name)
    inputs = keras.Input((None, None, 3), name="image")
    # Preprocessing and the features in float32 whatever the policy: the content loss reads them.
    outputs = features(
        CaffePreprocess(input_range, name="caffe_preprocess", dtype="float32")(inputs)
    )
    outputs = keras.layers.Activation("linear", dtype="float32", name="float32_features")(outputs)
    model = keras.Model(inputs, outputs, name=f"{name}_features")
    model.trainable = False
    return model


def build_vgg19_features(
    weights_path=None, layer=CONTENT_LAYER, input_range="[-1,1]", random_seed=RANDOM_VGG_SEED
):
    """GradientNet's extractor: :func:`build_vgg_features` with VGG19, ``block4_conv3``, [-1, 1]."""
    return build_vgg_features(
        weights_path, "vgg19", layer=layer, input_range=input_range, random_seed=random_seed
    )


def build_vgg16_features(
    weights_path=None, layer=RPGAN_CONTENT_LAYER, input_range="[0,1]", random_seed=RANDOM_VGG_SEED
):
    """RP-GAN's extractor (sen_rpgan.md 8): VGG16 ``block2_conv2`` ("relu2_2"), images in [0, 1].

    :func:`build_vgg_features` with ``architecture="vgg16"``: caffe preprocessing of 255 x, then
    VGG16 up to ``block2_conv2``; returns (N, H/2, W/2, 128) float32 features.
    """
    return build_vgg_features(
        weights_path, "vgg16", layer=layer, input_range=input_range, random_seed=random_seed
    )


def _seeded_random_weights(backbone, seed):
    """Seeded He-uniform kernels (variance-preserving through ReLUs), zero biases."""
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    for index, conv in enumerate(convs):
        init = keras.initializers.HeUniform(seed=seed + index)
        conv.kernel.assign(init(tuple(conv.kernel.shape), dtype=conv.kernel.dtype))
        conv.bias.assign(ops.zeros(tuple(conv.bias.shape), dtype=conv.bias.dtype))
