"""IDC: "Iterative Dual CNNs for Image Deblurring" (Mathematics 2022, 10, 3891), Sec. 3.1-3.2.

No public code exists; the layer-level description is the paper's Table 1 and the Sec. 3.1 bullet
list, and SRN-DeblurNet's official code is the template where the paper is silent (spec
``idc.md``). Layout NHWC float32, input in [0, 1]; output the list [F_1/4, F_1/2, F_1] of
unclipped images (see :class:`IDC`).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models import flops
from models.blocks import ResGroup, conv, deconv
from models.scale_recurrent import (
    EBlock,
    ScaleRecurrent,
    SRNDecoder,
    SRNEncoder,
    channels_shape,
)

DECODER_READINGS = ("literal", "srn")
TEXTURE_INPUTS = ("stacked", "blur")


@keras.saving.register_keras_serializable(package="deblur")
class DBlock(layers.Layer):
    """Table 1 Dblock read literally: deconv(filters, 4×4, strides) + ReLU, then ResBlocks(k)."""

    def __init__(self, filters, strides=2, num_res=2, kernel_size=5, **kw):
        super().__init__(**kw)
        self.filters, self.strides = filters, strides
        self.num_res, self.kernel_size = num_res, kernel_size
        self.deconv = deconv(filters, 4, strides=strides, activation="relu", name="deconv")
        self.res = ResGroup(filters, num_res, kernel_size, name="res")

    def build(self, input_shape):
        self.deconv.build(input_shape)
        self.res.build(channels_shape(self.filters))

    def call(self, x):
        return self.res(self.deconv(x))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="deblur")
class LiteralDecoder(layers.Layer):
    """Sub-Deblur decoder, Table 1 literally: U-Net with concatenation skips.

    D1 = DBlock(4c, ×2)(e3); D2 = DBlock(2c, ×2)(concat(d1, e2)); D3 = DBlock(c, stride 1)(
    concat(d2, e1)). ``call([e1, e2, e3])`` returns the c-channel full-size features d3.
    D3's stride-1 4×4 transposed conv keeps the size under TF "same" padding; with an even kernel
    its output is shifted by half a pixel, which is harmless when trained from scratch and kept
    as the table states.
    """

    def __init__(self, channels=32, num_res=2, kernel_size=5, **kw):
        super().__init__(**kw)
        self.channels, self.num_res, self.kernel_size = channels, num_res, kernel_size
        self.blocks = [
            DBlock(m * channels, s, num_res, kernel_size, name=f"d{i + 1}")
            for i, (m, s) in enumerate(((4, 2), (2, 2), (1, 1)))
        ]

    def build(self, input_shape):
        c = self.channels
        for block, width in zip(self.blocks, (4 * c, 6 * c, 3 * c), strict=True):
            block.build(channels_shape(width))

    def call(self, features):
        e1, e2, e3 = features
        d1 = self.blocks[0](e3)
        d2 = self.blocks[1](ops.concatenate([d1, e2], axis=-1))
        return self.blocks[2](ops.concatenate([d2, e1], axis=-1))

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="deblur")
class Fusion(layers.Layer):
    """Fusion module (Table 1): conv(c, k) + ReLU, then a linear conv(3, k) giving the image."""

    def __init__(self, in_channels, channels=32, kernel_size=5, **kw):
        super().__init__(**kw)
        self.in_channels, self.channels, self.kernel_size = in_channels, channels, kernel_size
        self.conv1 = conv(channels, kernel_size, in_channels, activation="relu", name="conv1")
        self.conv2 = conv(3, kernel_size, channels, name="conv2")

    def build(self, input_shape):
        self.conv1.build(channels_shape(self.in_channels))
        self.conv2.build(channels_shape(self.channels))

    def call(self, x):
        return self.conv2(self.conv1(x))

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "channels": self.channels,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="deblur")
class IDCScaleNet(layers.Layer):
    """One IDC pass (one scale): Sub-Deblur and Sub-Texture in parallel on X_i, then Fusion.

    ``call(x)`` maps the (N, h, w, 6) tensor concat(B_i, P_i) to the (N, h, w, 3) estimate.
    Arguments as in :class:`IDC`.
    """

    def __init__(
        self,
        channels=32,
        num_res=2,
        kernel_size=5,
        decoder_reading="literal",
        use_texture=True,
        texture_input="stacked",
        **kw,
    ):
        super().__init__(**kw)
        if decoder_reading not in DECODER_READINGS:
            raise ValueError(f"decoder_reading must be one of {DECODER_READINGS}.")
        if texture_input not in TEXTURE_INPUTS:
            raise ValueError(f"texture_input must be one of {TEXTURE_INPUTS}.")
        self.channels, self.num_res, self.kernel_size = channels, num_res, kernel_size
        self.decoder_reading, self.use_texture = decoder_reading, bool(use_texture)
        self.texture_input = texture_input
        c, k = channels, kernel_size
        self.encoder = SRNEncoder(6, c, num_res, k, name="encoder")
        if decoder_reading == "literal":
            self.decoder = LiteralDecoder(c, num_res, k, name="decoder")
            fusion_in = c
        else:
            self.decoder = SRNDecoder(c, num_res, k, deconv_kernel=4, name="decoder")
            fusion_in = 3
        self.texture = None
        if self.use_texture:
            texture_in = 6 if texture_input == "stacked" else 3
            self.texture = [
                EBlock(texture_in, 2 * c, 1, num_res, k, name="texture1"),
                EBlock(2 * c, 2 * c, 1, num_res, k, name="texture2"),
            ]
            fusion_in += 2 * c
        self.fusion = Fusion(fusion_in, c, k, name="fusion")

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.decoder.build(channels_shape(4 * self.channels))
        for block in self.texture or ():
            block.build(channels_shape(block.in_channels))
        self.fusion.build(channels_shape(self.fusion.in_channels))

    def call(self, x):
        features = self.encoder(x)
        if self.decoder_reading == "literal":
            deblurred = self.decoder(features)
        else:
            deblurred = self.decoder(features[2], skips=features[:2])
        if self.texture is None:
            return self.fusion(deblurred)
        t = x if self.texture_input == "stacked" else x[..., :3]
        for block in self.texture:
            t = block(t)
        return self.fusion(ops.concatenate([deblurred, t], axis=-1))

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
            "decoder_reading": self.decoder_reading,
            "use_texture": self.use_texture,
            "texture_input": self.texture_input,
        }


@keras.saving.register_keras_serializable(package="deblur")
class IDC(ScaleRecurrent):
    """Iterative Dual CNN (paper Sec. 3.1 network, Sec. 3.2 multi-scale iterative strategy).

    Layout: input (N, H, W, 3) float32 RGB in [0, 1], H and W multiples of ``size_multiple`` (16
    for three scales; :func:`models.inference.restore` pads other sizes by edge replication and
    crops back). Output: ``[F_1/4, F_1/2, F_1]`` (N, H/4, W/4, 3), (N, H/2, W/2, 3), (N, H, W, 3),
    coarse to fine, images predicted directly (no global residual), not clipped.

    Default (6,082,819 parameters, 2,884.03 GMAC for a 3-scale forward at 1280×720): one
    :class:`IDCScaleNet` shared by the three scales, with

    * Sub-Deblur, a U-Net: E1 conv(c,5,1), E2 conv(2c,5,2), E3 conv(4c,5,2), each + 2 ResBlocks
      (5×5); D1 deconv(4c,4,2), D2 deconv(2c,4,2) on concat(d1, e2), D3 deconv(c,4,1) on
      concat(d2, e1), each + 2 ResBlocks; c = 32;
    * Sub-Texture: two Eblocks conv(2c,5,1) + 2 ResBlocks at full resolution, on X_i;
    * Fusion: concat(d3, t) -> conv(c,5) + ReLU -> linear conv(3,5).

    Every conv and deconv has ReLU except the ResBlocks' second conv and the last Fusion conv;
    Glorot-uniform kernels and zero biases (the paper's "Xavier method"); no normalisation.

    Choices where the paper is silent or ambiguous (spec ``idc.md`` Sec. 10; fidelity
    table, docs/fidelity.md), default first, then the switch:

    * A-IDC-1: Table 1's first row "E2" is E1 (32 channels, stride 1).
    * A-IDC-2: Table 1 read literally (deconv first in each Dblock, concatenation skips, stride-1
      4×4 deconv in D3; Sub-Deblur yields c-channel features). ``decoder_reading="srn"``: SRN order
      (ResBlocks then deconv, additive skips, D3 ends in a linear conv to an image), 5,717,830
      parameters.
    * A-IDC-3: 2 ResBlocks per Eblock/Dblock (paper text), not SRN's 3 (``num_res``).
    * A-IDC-4: ResBlock = SRN's ``x + conv(relu(conv(x)))`` (:class:`models.blocks.ResBlock`).
    * A-IDC-7: Sub-Texture sees the same 6-channel X_i as Sub-Deblur (parallel dual CNN);
      ``texture_input="blur"`` feeds it B_i only.
    * A-IDC-8: Fusion input concat(Sub-Deblur output, Sub-Texture 2c features); under the SRN
      reading the Sub-Deblur output is a 3-channel image (67 channels in).
    * A-IDC-9: the Fusion output is the image itself (no residual on the input).
    * A-IDC-10: one step instance at all scales; stop-gradient on the up-sampled previous
      estimate (``stop_gradient=False``); at the coarsest scale the previous estimate is B_1/4.
    * A-IDC-11: pyramid by sequential bilinear halving (half-pixel centres, no antialias);
      ``pyramid_mode="direct"`` resizes B straight to each size (SRN code).
    * A-IDC-15: no ConvLSTM between scales (the paper mentions none).
    * A-IDC-5, 6, 12, 13, 14, 16 (gradient-loss norm, noise, L2 normalisation, training length,
      crops, GoPro variant) concern the loss, data and training code, not this network.
    * Sizes: a direct call needs multiples of ``size_multiple`` and raises a ``ValueError``
      otherwise; :func:`models.inference.restore` (and the export built on it) does the spec's
      bottom/right edge-replication padding and crops back.

    Ablations of the paper: ``use_texture=False`` ("IDC without Sub-Texture", Fig. 7: Fusion sees
    the Sub-Deblur output alone) and ``n_scales=1`` (single-scale input, Fig. 6). Loss, noise and
    optimisation are in :func:`losses.idc_loss` and the training code, not here.

    Args:
        base_channels: c, the E1 width (32 in Table 1; small values only for tests).
        num_res: ResBlocks per Eblock/Dblock (2).
        kernel_size: conv and ResBlock kernel (5); deconvolutions are always 4×4.
        decoder_reading: ``"literal"`` (default) or ``"srn"``.
        use_texture: build Sub-Texture (True).
        texture_input: ``"stacked"`` (default) or ``"blur"``.
        n_scales, pyramid_mode, stop_gradient: see :class:`ScaleRecurrent`.
    """

    def __init__(
        self,
        base_channels=32,
        num_res=2,
        kernel_size=5,
        decoder_reading="literal",
        use_texture=True,
        texture_input="stacked",
        n_scales=3,
        pyramid_mode="sequential",
        stop_gradient=True,
        **kw,
    ):
        super().__init__(n_scales, pyramid_mode, stop_gradient, **kw)
        self.base_channels, self.num_res, self.kernel_size = base_channels, num_res, kernel_size
        self.decoder_reading, self.use_texture = decoder_reading, bool(use_texture)
        self.texture_input = texture_input
        self.step = IDCScaleNet(
            base_channels,
            num_res,
            kernel_size,
            decoder_reading,
            use_texture,
            texture_input,
            name="step",
        )

    def get_config(self):
        return {
            **super().get_config(),
            "base_channels": self.base_channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
            "decoder_reading": self.decoder_reading,
            "use_texture": self.use_texture,
            "texture_input": self.texture_input,
        }


def idc(**overrides):
    """IDC as specified (Table 1 literal, 2 ResBlocks, Sub-Texture, 3 scales): 6,082,819 params."""
    return IDC(**{"name": "idc", **overrides})


def multiply_adds(height, width, **config) -> int:
    """Conv/transposed-conv weight MACs of one 3-scale forward of ``idc(**config)`` on a
    ``height`` x ``width`` image (padded as :func:`models.inference.restore` does); transposed
    convolutions counted by input pixels. 2,884.03 GMAC at 720×1280 for the default."""
    return flops.count_macs(idc(**config), height, width)
