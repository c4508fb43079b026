"""Shared layers and resampling (models/blocks.py)."""

import numpy as np
import pytest
import tensorflow as tf

from models import blocks


def test_dynamic_resize_matches_static_resize():
    x = np.random.default_rng(1).random((2, 13, 22, 3), dtype=np.float32)
    for size in ((6, 11), (4, 5), (13, 22), (26, 9)):
        static = blocks.resize_bilinear(x, *size)
        dynamic = blocks._dynamic_resize_bilinear(x, tf.constant(size[0]), tf.constant(size[1]))
        np.testing.assert_allclose(np.asarray(dynamic), np.asarray(static), atol=1e-6)


def test_pyramid_under_tf_function_with_unknown_sizes():
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    pyramid = tf.function(lambda t: blocks.image_pyramid(t, 3), input_signature=[spec])
    x = np.random.default_rng(2).random((1, 16, 24, 3), dtype=np.float32)
    for got, want in zip(pyramid(x), blocks.image_pyramid(x, 3), strict=True):
        np.testing.assert_allclose(got.numpy(), np.asarray(want), atol=1e-6)


def test_sequential_pyramid_is_box_mean_and_direct_is_central_mean():
    x = np.random.default_rng(3).random((1, 8, 12, 3), dtype=np.float32)
    quarter, half, full = (np.asarray(t) for t in blocks.image_pyramid(x, 3, "sequential"))
    assert full.shape == x.shape
    np.testing.assert_allclose(half, x.reshape(1, 4, 2, 6, 2, 3).mean(axis=(2, 4)), atol=1e-6)
    np.testing.assert_allclose(quarter, x.reshape(1, 2, 4, 3, 4, 3).mean(axis=(2, 4)), atol=1e-6)
    direct_quarter = np.asarray(blocks.image_pyramid(x, 3, "direct")[0])
    want = x.reshape(1, 2, 4, 3, 4, 3)[:, :, 1:3, :, 1:3].mean(axis=(2, 4))
    np.testing.assert_allclose(direct_quarter, want, atol=1e-6)
    with pytest.raises(ValueError, match="pyramid mode"):
        blocks.image_pyramid(x, 3, "bicubic")


def test_symmetric_strided_conv_pads_like_pytorch():
    layer = blocks.SymmetricStridedConv(1, 3, 2, init="glorot")
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = 1.0
    layer.build(x.shape)
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1.0
    layer.conv.kernel.assign(kernel)
    out = np.asarray(layer(x))[0, :, :, 0]
    assert out.shape == (2, 2) and out[0, 0] == 1.0
