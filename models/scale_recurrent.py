"""SRN's scale-recurrent scheme (Tao et al., CVPR 2018), shared by IDC and Two-Way.

Both papers (IDC, Mathematics 2022, Sec. 3.2; Two-Way, Sec. 3.1, eq. 1) run one network at three
scales, coarse to fine, with one parameter set. :class:`ScaleRecurrent` is that driver, written
once:

* the blurred input B (N, H, W, 3), float32 in [0, 1], gives a bilinear pyramid
  ``[B_1/4, B_1/2, B_1]`` (:func:`models.blocks.image_pyramid`, ``"sequential"`` halving by
  default, ``"direct"`` by switch);
* at the coarsest scale the "previous estimate" P is the blurred image itself (SRN); at finer
  scales P_i = stop_gradient(bilinear_up(F_prev)) (half-pixel centres, no antialias);
* X_i = concat(B_i, P_i) (6 channels, blurred first as in the SRN code) goes through the one step
  network shared by all scales: the variable count does not depend on ``n_scales``;
* the output is the list [F_1/4, F_1/2, F_1], coarse to fine, unclipped.

The SRN building blocks that both step networks use also live here: :class:`EBlock` (conv +
ResBlocks), :class:`SRNEncoder` (three EBlocks at strides 1, 2, 2) and :class:`SRNDecoder` (SRN's
decoder with optional additive skips, ending in a linear conv to 3 channels). ResBlocks are
:class:`models.blocks.ResBlock` with the kernel size as a parameter (5 for IDC, 3 for Two-Way).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models.blocks import (
    DeblurModel,
    ResGroup,
    conv,
    deconv,
    float32_outputs,
    image_pyramid,
    resize_bilinear,
    spatial_size,
)

PYRAMID_MODES = ("sequential", "direct")


def channels_shape(channels):
    """Build shape of a conv input: only the channel count matters to its weights.

    Explicit ``build`` methods avoid Keras' fallback of tracing ``call`` to build a layer, which
    nests one symbolic trace per level of sub-layers and takes seconds per model.
    """
    return (None, None, None, channels)


@keras.saving.register_keras_serializable(package="deblur")
class EBlock(layers.Layer):
    """SRN encoder block: conv(filters, k, strides) + ReLU, then ``num_res`` ResBlocks(k).

    Args:
        in_channels: input width (only the fan-in of the conv depends on it).
        filters: output width.
        strides: 1 or 2 (2 halves H and W with TF "same" padding).
        num_res: ResBlocks after the conv.
        kernel_size: kernel of the conv and of the ResBlocks.
    """

    def __init__(self, in_channels, filters, strides=1, num_res=2, kernel_size=5, **kw):
        super().__init__(**kw)
        self.in_channels, self.filters, self.strides = in_channels, filters, strides
        self.num_res, self.kernel_size = num_res, kernel_size
        self.conv = conv(
            filters, kernel_size, in_channels, strides=strides, activation="relu", name="conv"
        )
        self.res = ResGroup(filters, num_res, kernel_size, name="res")

    def build(self, input_shape):
        self.conv.build(channels_shape(self.in_channels))
        self.res.build(channels_shape(self.filters))

    def call(self, x):
        return self.res(self.conv(x))

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "filters": self.filters,
            "strides": self.strides,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="deblur")
class SRNEncoder(layers.Layer):
    """SRN encoder: E1 (c, stride 1), E2 (2c, stride 2), E3 (4c, stride 2) on the 6-channel X_i.

    ``call`` returns ``[e1, e2, e3]`` at full, 1/2 and 1/4 of the step's input size.
    """

    def __init__(self, in_channels=6, channels=32, num_res=2, kernel_size=5, **kw):
        super().__init__(**kw)
        self.in_channels, self.channels = in_channels, channels
        self.num_res, self.kernel_size = num_res, kernel_size
        widths = (in_channels, channels, 2 * channels, 4 * channels)
        self.blocks = [
            EBlock(
                widths[i], widths[i + 1], 1 if i == 0 else 2, num_res, kernel_size, name=f"e{i + 1}"
            )
            for i in range(3)
        ]

    def build(self, input_shape):
        for block in self.blocks:
            block.build(channels_shape(block.in_channels))

    def call(self, x):
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "channels": self.channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="deblur")
class SRNDecoder(layers.Layer):
    """SRN decoder from the 1/4-scale bottleneck (width 4c) to a 3-channel image.

    ResBlocks(4c) -> deconv(2c, ×2) [+ e2] -> ResBlocks(2c) -> deconv(c, ×2) [+ e1] -> ResBlocks(c)
    -> linear conv(3, k). The deconvolutions have ReLU (SRN applies it to every layer but the
    ResBlocks' second conv and the output conv). ``call(z, skips=[e1, e2])`` adds the encoder
    features after each deconvolution (SRN's additive skips); ``skips=None`` runs without any.

    Args:
        channels: c (full-scale width).
        num_res: ResBlocks per stage.
        kernel_size: ResBlock and output-conv kernel.
        deconv_kernel: transposed-convolution kernel (SRN: 4).
        bottleneck: whether the first 4c ResBlocks belong to this decoder (False when a caller
            shares them between decoders).
    """

    def __init__(
        self, channels=32, num_res=3, kernel_size=3, deconv_kernel=4, bottleneck=True, **kw
    ):
        super().__init__(**kw)
        self.channels, self.num_res, self.kernel_size = channels, num_res, kernel_size
        self.deconv_kernel, self.bottleneck = deconv_kernel, bottleneck
        c = channels
        self.res3 = ResGroup(4 * c, num_res, kernel_size, name="res3") if bottleneck else None
        self.up2 = deconv(2 * c, deconv_kernel, strides=2, activation="relu", name="up2")
        self.res2 = ResGroup(2 * c, num_res, kernel_size, name="res2")
        self.up1 = deconv(c, deconv_kernel, strides=2, activation="relu", name="up1")
        self.res1 = ResGroup(c, num_res, kernel_size, name="res1")
        self.out = conv(3, kernel_size, c, name="out")

    def build(self, input_shape):
        c = self.channels
        if self.res3 is not None:
            self.res3.build(channels_shape(4 * c))
        self.up2.build(channels_shape(4 * c))
        self.res2.build(channels_shape(2 * c))
        self.up1.build(channels_shape(2 * c))
        self.res1.build(channels_shape(c))
        self.out.build(channels_shape(c))

    def call(self, z, skips=None):
        if self.res3 is not None:
            z = self.res3(z)
        x = self.up2(z)
        if skips is not None:
            x = x + skips[1]
        x = self.up1(self.res2(x))
        if skips is not None:
            x = x + skips[0]
        return self.out(self.res1(x))

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_res": self.num_res,
            "kernel_size": self.kernel_size,
            "deconv_kernel": self.deconv_kernel,
            "bottleneck": self.bottleneck,
        }


@keras.saving.register_keras_serializable(package="deblur")
class ScaleRecurrent(DeblurModel):
    """Coarse-to-fine driver of SRN's scheme; subclasses set ``self.step`` (one shared layer).

    ``step(X_i)`` maps the (N, h, w, 6) tensor concat(B_i, P_i) to the (N, h, w, 3) estimate F_i,
    or to a tuple whose first element is F_i (extra diagnostics, e.g. Two-Way's branches).

    Args:
        n_scales: number of scales (3 in both papers; 1 = IDC's single-scale ablation, Fig. 6).
        pyramid_mode: ``"sequential"`` (default: repeated bilinear halving, "two downsamplings of
            the original blurred image") or ``"direct"`` (SRN code: each level resized straight
            from B). The specs name these ``sequential_bilinear`` / ``direct_bilinear``.
        stop_gradient: stop the gradient through the up-sampled previous estimate (SRN; default
            True). False lets the finer scales' losses train the coarser passes too.
    """

    def __init__(self, n_scales=3, pyramid_mode="sequential", stop_gradient=True, **kw):
        super().__init__(**kw)
        if int(n_scales) != n_scales or n_scales < 1:
            raise ValueError(f"n_scales must be an integer >= 1, got {n_scales!r}.")
        if pyramid_mode not in PYRAMID_MODES:
            raise ValueError(f"pyramid_mode must be one of {PYRAMID_MODES}, got {pyramid_mode!r}.")
        self.n_scales, self.pyramid_mode = int(n_scales), pyramid_mode
        self.stop_gradient = bool(stop_gradient)
        self.step = None

    @property
    def size_multiple(self):
        # The coarsest level (H / 2**(n-1)) passes two stride-2 convs and two ×2 deconvs whose
        # outputs must match the skips: 16 for three scales, 4 for one.
        return 4 * 2 ** (self.n_scales - 1)

    def build(self, input_shape):
        # The step is built from channel counts alone, so DeblurModel's symbolic trace of the
        # whole 3-scale forward (seconds of graph construction) is skipped.
        self.step.build(channels_shape(2 * input_shape[-1]))
        keras.Model.build(self, input_shape)

    def coarse_to_fine(self, blurry, step=None):
        """Runs ``step`` (default ``self.step``) at every scale; returns its results, coarse first.

        Args:
            blurry: (N, H, W, 3) float32 blurred batch, H and W multiples of ``size_multiple``.
            step: a callable with the step's contract; lets subclasses ask for diagnostics.
        """
        self.check_input_size(blurry)
        step = self.step if step is None else step
        results, previous = [], None
        for level in image_pyramid(blurry, self.n_scales, self.pyramid_mode):
            estimate = level if previous is None else self._upsample(previous, level)
            result = step(ops.concatenate([level, estimate], axis=-1))
            previous = result[0] if isinstance(result, (tuple, list)) else result
            results.append(result)
        return results

    def _upsample(self, previous, level):
        up = resize_bilinear(previous, *spatial_size(level))
        return ops.stop_gradient(up) if self.stop_gradient else up

    def call(self, blurry, training=False):
        results = self.coarse_to_fine(blurry)
        return float32_outputs([r[0] if isinstance(r, (tuple, list)) else r for r in results])

    def get_config(self):
        return {
            **super().get_config(),
            "n_scales": self.n_scales,
            "pyramid_mode": self.pyramid_mode,
            "stop_gradient": self.stop_gradient,
        }
