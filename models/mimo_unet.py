"""MIMO-UNet and MIMO-UNet+ (Cho et al., "Rethinking Coarse-to-Fine Approach in Single Image
Deblurring", ICCV 2021), a numerically exact Keras port of the official PyTorch code
(chosj95/MIMO-UNet, ``models/MIMOUNet.py``).

Layout: input (N, H, W, 3) float32, nominally in [0, 1], H and W multiples of 4. Output: the list
``[O_1/4, O_1/2, O_1]`` of (N, H/4, W/4, 3), (N, H/2, W/2, 3) and (N, H, W, 3) images, coarse to
fine, exactly as the official forward (paper Sec. 3, eqs. 1-6). Outputs are residual on the
nearest-subsampled input and are not clamped.

Deviations and choices (also in docs/fidelity.md):

* Initialisation: ``init="torch"`` (default) draws kernels and biases from PyTorch's default
  U(+-1/sqrt(fan_in)) so training from scratch starts from the official distribution; ``"glorot"``
  gives Keras's defaults.
* Sides that are not multiples of 4 crash the official code; here the model raises a clear error and
  :func:`models.inference.restore` pads (edge replication, bottom/right) and crops back.
* ``base_channels`` (32 in the paper) exists only so tests can build tiny models.
* MIMO-UNet++ is not a separate network: it is MIMO-UNet+ with the ``rot4`` self-ensemble of
  :mod:`models.inference` (authors' recipe, chosj95/MIMO-UNet issue #2).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models.blocks import (
    DeblurModel,
    ResGroup,
    SymmetricStridedConv,
    conv,
    deconv,
    float32_outputs,
    repeat2,
    subsample2,
)


@keras.saving.register_keras_serializable(package="deblur")
class SCM(layers.Layer):
    """Shallow convolutional module (paper Sec. 3.1): features of a downsampled blurry image.

    conv3(3->P/4)-relu, conv1(->P/2)-relu, conv3(->P/2)-relu, conv1(->P-3)-relu, then
    concat([image, features]) (image first, as the official code) and conv1(P->P).
    """

    def __init__(self, channels, init="torch", **kw):
        super().__init__(**kw)
        self.channels, self.init = channels, init
        p = channels
        self.main = [
            conv(p // 4, 3, 3, activation="relu", init=init, name="main0"),
            conv(p // 2, 1, p // 4, activation="relu", init=init, name="main1"),
            conv(p // 2, 3, p // 2, activation="relu", init=init, name="main2"),
            conv(p - 3, 1, p // 2, activation="relu", init=init, name="main3"),
        ]
        self.conv = conv(p, 1, p, init=init, name="conv")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.main:
            layer.build(shape)
            shape = shape[:-1] + (layer.filters,)
        self.conv.build(shape[:-1] + (self.channels,))

    def call(self, image):
        x = image
        for layer in self.main:
            x = layer(x)
        return self.conv(ops.concatenate([image, x], axis=-1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "init": self.init}


@keras.saving.register_keras_serializable(package="deblur")
class FAM(layers.Layer):
    """Feature attention module (paper Sec. 3.1, eq. 3): ``a + conv3(a * s)``, no activation."""

    def __init__(self, channels, init="torch", **kw):
        super().__init__(**kw)
        self.channels, self.init = channels, init
        self.merge = conv(channels, 3, channels, init=init, name="merge")

    def build(self, input_shape):
        self.merge.build(input_shape[0])

    def call(self, inputs):
        encoder_feature, scm_feature = inputs
        return encoder_feature + self.merge(encoder_feature * scm_feature)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "init": self.init}


@keras.saving.register_keras_serializable(package="deblur")
class AFF(layers.Layer):
    """Asymmetric feature fusion (paper Sec. 3.1, eq. 4): conv1-relu-conv3 on the concatenation of
    the three encoder outputs, always in the order [level 1, level 2, level 3]."""

    def __init__(self, in_channels, channels, init="torch", **kw):
        super().__init__(**kw)
        self.in_channels, self.channels, self.init = in_channels, channels, init
        self.conv1 = conv(channels, 1, in_channels, activation="relu", init=init, name="conv0")
        self.conv2 = conv(channels, 3, channels, init=init, name="conv1")

    def build(self, input_shape):
        spatial = tuple(input_shape[0][:-1])
        self.conv1.build(spatial + (self.in_channels,))
        self.conv2.build(spatial + (self.channels,))

    def call(self, features):
        return self.conv2(self.conv1(ops.concatenate(features, axis=-1)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "channels": self.channels,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class MIMOUNet(DeblurModel):
    """MIMO-UNet (``num_res=8``) and MIMO-UNet+ (``num_res=20``, ``dropout_rate=0.1``).

    Paper Sec. 3 (Fig. 3); layer-for-layer the official ``MIMOUNet`` / ``MIMOUNetPlus``. Levels: 1 =
    full resolution (``base_channels``), 2 = 1/2 (x2), 3 = 1/4 (x4). Attribute names follow the
    official module names (``feat_extract``, ``encoders`` = ``Encoder``, ``scm1`` = the 1/4-level
    SCM, ...) so that :mod:`models.mimo_unet_weights` can map a state dict one to one.

    Args:
        num_res: residual blocks per encoder/decoder block (8, or 20 for MIMO-UNet+).
        base_channels: level-1 width (32 in the paper; small values for tests).
        dropout_rate: channel (spatial) dropout on both AFF outputs in training; the official
            MIMO-UNet+ uses 0.1, MIMO-UNet none.
        init: ``"torch"`` (default, PyTorch's initialisation) or ``"glorot"``.
    """

    size_multiple = 4

    def __init__(self, num_res=8, base_channels=32, dropout_rate=0.0, init="torch", **kw):
        super().__init__(**kw)
        if base_channels % 2 or base_channels < 4:
            raise ValueError(f"base_channels must be even and >= 4, got {base_channels}.")
        self.num_res, self.base_channels = num_res, base_channels
        self.dropout_rate, self.init = dropout_rate, init
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        self.encoders = [
            ResGroup(c, num_res, 3, init=init, name=f"encoder{i}")
            for i, c in enumerate((c1, c2, c3))
        ]
        self.feat_extract = [
            conv(c1, 3, 3, activation="relu", init=init, name="feat_extract0"),
            SymmetricStridedConv(c2, 3, 2, activation="relu", init=init, name="feat_extract1"),
            SymmetricStridedConv(c3, 3, 2, activation="relu", init=init, name="feat_extract2"),
            deconv(c2, 4, strides=2, activation="relu", init=init, name="feat_extract3"),
            deconv(c1, 4, strides=2, activation="relu", init=init, name="feat_extract4"),
            conv(3, 3, c1, init=init, name="feat_extract5"),
        ]
        self.decoders = [
            ResGroup(c, num_res, 3, init=init, name=f"decoder{i}")
            for i, c in enumerate((c3, c2, c1))
        ]
        self.convs = [
            conv(c2, 1, 2 * c2, activation="relu", init=init, name="convs0"),
            conv(c1, 1, 2 * c1, activation="relu", init=init, name="convs1"),
        ]
        self.convs_out = [
            conv(3, 3, c3, init=init, name="convs_out0"),
            conv(3, 3, c2, init=init, name="convs_out1"),
        ]
        self.affs = [
            AFF(c1 + c2 + c3, c1, init=init, name="aff0"),
            AFF(c1 + c2 + c3, c2, init=init, name="aff1"),
        ]
        self.fam1, self.scm1 = FAM(c3, init=init, name="fam1"), SCM(c3, init=init, name="scm1")
        self.fam2, self.scm2 = FAM(c2, init=init, name="fam2"), SCM(c2, init=init, name="scm2")
        self.drop1 = layers.SpatialDropout2D(dropout_rate, name="drop1") if dropout_rate else None
        self.drop2 = layers.SpatialDropout2D(dropout_rate, name="drop2") if dropout_rate else None

    def call(self, blurry, training=False):
        self.check_input_size(blurry)
        blurry_2 = subsample2(blurry)
        blurry_4 = subsample2(blurry_2)
        e1, e2, e3 = self._encode(blurry, blurry_2, blurry_4)
        f1 = self.affs[0]([e1, repeat2(e2), repeat2(repeat2(e3))])
        f2 = self.affs[1]([subsample2(e1), e2, repeat2(e3)])
        if self.drop1 is not None:
            f1 = self.drop1(f1, training=training)
            f2 = self.drop2(f2, training=training)
        return float32_outputs(self._decode(e3, f1, f2, (blurry_4, blurry_2, blurry)))

    def _encode(self, blurry, blurry_2, blurry_4):
        e1 = self.encoders[0](self.feat_extract[0](blurry))
        z = self.fam2([self.feat_extract[1](e1), self.scm2(blurry_2)])
        e2 = self.encoders[1](z)
        z = self.fam1([self.feat_extract[2](e2), self.scm1(blurry_4)])
        return e1, e2, self.encoders[2](z)

    def _decode(self, e3, f1, f2, pyramid):
        d3 = self.decoders[0](e3)
        out_4 = self.convs_out[0](d3) + pyramid[0]
        z = self.convs[0](ops.concatenate([self.feat_extract[3](d3), f2], axis=-1))
        d2 = self.decoders[1](z)
        out_2 = self.convs_out[1](d2) + pyramid[1]
        z = self.convs[1](ops.concatenate([self.feat_extract[4](d2), f1], axis=-1))
        d1 = self.decoders[2](z)
        return [out_4, out_2, self.feat_extract[5](d1) + pyramid[2]]

    def get_config(self):
        return {
            **super().get_config(),
            "num_res": self.num_res,
            "base_channels": self.base_channels,
            "dropout_rate": self.dropout_rate,
            "init": self.init,
        }


def mimo_unet(**overrides):
    """MIMO-UNet: 8 residual blocks per EB/DB, 6,807,171 parameters (paper Table 1: 6.8M)."""
    return MIMOUNet(**{"num_res": 8, "dropout_rate": 0.0, "name": "mimo_unet", **overrides})


def mimo_unet_plus(**overrides):
    """MIMO-UNet+: 20 residual blocks, channel dropout 0.1 on the AFF outputs in training
    (official ``MIMOUNetPlus``), 16,107,651 parameters (paper: 16.1M)."""
    return MIMOUNet(**{"num_res": 20, "dropout_rate": 0.1, "name": "mimo_unet_plus", **overrides})
