"""Two-Way network: "Multi-scale Two-Way Deblurring Network for Non-uniform Single Image
Deblurring" (Cheng et al., DOI 10.1007/978-3-030-89814-4_43), Sec. 3.1 and eq. (1).

No public code exists; the network is SRN-DeblurNet at 3×3 kernels with a second decoder branch
(spec ``two_way.md``). Layout NHWC float32, input in [0, 1]; output the list [F_1/4, F_1/2, F_1]
of unclipped images (see :class:`TwoWay`).
"""

from __future__ import annotations

import keras
from keras import layers

from models import flops
from models.blocks import ResGroup, float32_outputs
from models.scale_recurrent import ScaleRecurrent, SRNDecoder, SRNEncoder, channels_shape


@keras.saving.register_keras_serializable(package="deblur")
class TwoWayScaleNet(layers.Layer):
    """One Two-Way pass (one scale): shared encoder, "up" and "down" decoders, images summed.

    ``call(x)`` maps the (N, h, w, 6) tensor concat(B_i, P_i) to F_i = Up_i + Down_i (N, h, w, 3);
    ``call(x, return_branches=True)`` returns ``(F_i, Up_i, Down_i)``. Without the two-way branch
    (``two_way=False``) F_i = Up_i and there are no branches to return. Arguments as in
    :class:`TwoWay`.
    """

    def __init__(
        self,
        channels=32,
        num_res=3,
        kernel_size=3,
        deconv_kernel=4,
        two_way=True,
        share_bottleneck_blocks=False,
        **kw,
    ):
        super().__init__(**kw)
        self.channels, self.num_res, self.kernel_size = channels, num_res, kernel_size
        self.deconv_kernel, self.two_way = deconv_kernel, bool(two_way)
        self.share_bottleneck_blocks = bool(share_bottleneck_blocks)
        c, k, shared = channels, kernel_size, self.share_bottleneck_blocks
        self.encoder = SRNEncoder(6, c, num_res, k, name="encoder")
        self.bottleneck = ResGroup(4 * c, num_res, k, name="bottleneck") if shared else None
        self.up = SRNDecoder(c, num_res, k, deconv_kernel, bottleneck=not shared, name="up")
        self.down = None
        if self.two_way:
            self.down = SRNDecoder(c, num_res, k, deconv_kernel, bottleneck=not shared, name="down")

    def build(self, input_shape):
        self.encoder.build(input_shape)
        for part in (self.bottleneck, self.up, self.down):
            if part is not None:
                part.build(channels_shape(4 * self.channels))

    def down_branch(self, z):
        """Down_i from the bottleneck z alone: no encoder skip enters this branch (A-TW-2)."""
        return self.down(z if self.bottleneck is None else self.bottleneck(z))

    def call(self, x, return_branches=False):
        e1, e2, z = self.encoder(x)
        h = z if self.bottleneck is None else self.bottleneck(z)
        up = self.up(h, skips=[e1, e2])
        if self.down is None:
            if return_branches:
                raise ValueError("return_branches needs the two-way branch (two_way=True).")
            return up
        down = self.down(h)
        image = up + down
        return (image, up, down) if return_branches else image

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
            "deconv_kernel": self.deconv_kernel,
            "two_way": self.two_way,
            "share_bottleneck_blocks": self.share_bottleneck_blocks,
        }


@keras.saving.register_keras_serializable(package="deblur")
class TwoWay(ScaleRecurrent):
    """Multi-scale Two-Way deblurring network (paper Sec. 3.1, Fig. 1, eq. 1).

    Layout: input (N, H, W, 3) float32 RGB in [0, 1], H and W multiples of ``size_multiple`` (16
    for three scales; :func:`models.inference.restore` pads other sizes by edge replication and
    crops back). Output: ``[F_1/4, F_1/2, F_1]`` (N, H/4, W/4, 3), (N, H/2, W/2, 3), (N, H, W, 3),
    coarse to fine, unclipped. ``model(x, return_branches=True)`` returns ``(outputs, ups, downs)``,
    three such lists, with F_i = Up_i + Down_i exactly (paper Fig. 3 diagnostics).

    Default (3,911,398 parameters, 656.94 GMAC for a 3-scale forward at 1280×720): one
    :class:`TwoWayScaleNet` shared by the three scales (eq. 1: one theta), with c = 32, 3×3 kernels:

    * shared encoder: E1 conv(c,3,1), E2 conv(2c,3,2), E3 conv(4c,3,2), each + 3 ResBlocks;
    * up branch (SRN decoder): 3 ResBlocks(4c) -> deconv(2c,4,2) + e2 -> 3 ResBlocks(2c) ->
      deconv(c,4,2) + e1 -> 3 ResBlocks(c) -> linear conv(3,3) = Up_i;
    * down branch: the same layers with separate weights and no skips, from z = e3 = Down_i;
    * F_i = Up_i + Down_i.

    Every conv and deconv has ReLU except the ResBlocks' second conv and the output convs;
    Glorot-uniform kernels and zero biases (the paper's "Xavier method"); no normalisation.

    Choices where the paper is silent or ambiguous (spec ``two_way.md`` Sec. 7; fidelity
    table, docs/fidelity.md), default first, then the switch:

    * A-TW-1: "decoder = deconv + 3 ResBlocks" per level with only two down-samplings: SRN
      grouping (3 ResBlocks at 4c without deconv, then two deconv + 3 ResBlocks stages).
    * A-TW-2: "restores from a blank image" = a second decoder fed the bottleneck z only, with no
      encoder skips (not a network fed a zero image).
    * A-TW-3: one shared encoder, two decoders with independent weights, each with its own
      bottleneck ResBlocks; ``share_bottleneck_blocks=True`` shares those (-885,504 parameters).
    * A-TW-4: the branches are summed as images (each ends in its own conv to 3 channels).
    * A-TW-5: 3×3 convs and ResBlocks as stated, SRN's 4×4 stride-2 deconvolutions kept;
      ``deconv_kernel=3`` (3,768,038 parameters).
    * A-TW-6: one step instance at all scales; stop-gradient on the up-sampled previous estimate
      (``stop_gradient=False``); at the coarsest scale the previous estimate is B_1/4.
    * A-TW-7: no ConvLSTM between scales.
    * A-TW-9: additive skips (SRN).
    * Pyramid (as IDC, A-IDC-11): sequential bilinear halving; ``pyramid_mode="direct"``.
    * A-TW-8 (loss weights 1, 1, 5 on the summed outputs F_i only) is
      :func:`losses.two_way_loss`; A-TW-10 (batch, length, data) belongs to the training code.
    * Sizes: a direct call needs multiples of ``size_multiple`` and raises a ``ValueError``
      otherwise; :func:`models.inference.restore` pads (bottom/right edge replication) and crops.

    Ablation of the paper: ``two_way=False`` is the "w/o TWNNet" row (SRN at 3×3 without LSTM,
    up branch only): 2,584,035 parameters, 435.42 GMAC.

    Args:
        base_channels: c, the E1 width (32; small values only for tests).
        num_res: ResBlocks per stage (3).
        kernel_size: conv and ResBlock kernel (3).
        deconv_kernel: transposed-convolution kernel, 4 (default) or 3.
        two_way: build the down branch (True).
        share_bottleneck_blocks: share the 4c ResBlocks between the branches (False).
        n_scales, pyramid_mode, stop_gradient: see :class:`ScaleRecurrent`.
    """

    def __init__(
        self,
        base_channels=32,
        num_res=3,
        kernel_size=3,
        deconv_kernel=4,
        two_way=True,
        share_bottleneck_blocks=False,
        n_scales=3,
        pyramid_mode="sequential",
        stop_gradient=True,
        **kw,
    ):
        super().__init__(n_scales, pyramid_mode, stop_gradient, **kw)
        self.base_channels, self.num_res, self.kernel_size = base_channels, num_res, kernel_size
        self.deconv_kernel, self.two_way = deconv_kernel, bool(two_way)
        self.share_bottleneck_blocks = bool(share_bottleneck_blocks)
        self.step = TwoWayScaleNet(
            base_channels,
            num_res,
            kernel_size,
            deconv_kernel,
            two_way,
            share_bottleneck_blocks,
            name="step",
        )

    def call(self, blurry, training=False, return_branches=False):
        if not return_branches:
            return super().call(blurry, training=training)
        results = self.coarse_to_fine(blurry, step=lambda x: self.step(x, return_branches=True))
        return float32_outputs(tuple([r[k] for r in results] for k in range(3)))

    def get_config(self):
        return {
            **super().get_config(),
            "base_channels": self.base_channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
            "deconv_kernel": self.deconv_kernel,
            "two_way": self.two_way,
            "share_bottleneck_blocks": self.share_bottleneck_blocks,
        }


def two_way(**overrides):
    """Two-Way network as specified (3×3 kernels, 4×4 deconvs, two branches): 3,911,398 params."""
    return TwoWay(**{"name": "two_way", **overrides})


def multiply_adds(height, width, **config) -> int:
    """Conv/transposed-conv weight MACs of one 3-scale forward of ``two_way(**config)`` on a
    ``height`` x ``width`` image (padded as :func:`models.inference.restore` does); transposed
    convolutions counted by input pixels. 656.94 GMAC at 720×1280 (435.42 with two_way=False)."""
    return flops.count_macs(two_way(**config), height, width)
