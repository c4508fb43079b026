"""The analytic MAC counter (models/flops.py) and the models' ``multiply_adds`` (spec tables).

GMAC = 1e9 multiply-accumulates of conv / transposed-conv weights for one forward; transposed
convolutions counted by input pixels unless ``transposed_by="output"`` (thop's convention).
"""

import keras
import numpy as np
import pytest
from keras import layers

import models
from models import flops, gradientnet, idc, two_way

GOPRO = (720, 1280)


def gmac(macs):
    return round(macs / 1e9, 2)


# ---- the counter on hand-computable layers --------------------------------------------------


def toy_model():
    """Strided conv, grouped conv, transposed conv, and one conv applied twice (shared)."""
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="strided")(inputs)
    x = layers.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    shared = layers.Conv2D(8, 1, name="shared")
    x = shared(shared(x))
    outputs = layers.Conv2DTranspose(4, 4, strides=2, padding="same", name="up")(x)
    return keras.Model(inputs, outputs)


def test_counter_matches_hand_counts_and_leaves_the_model_untouched():
    model = toy_model()
    x = np.random.default_rng(0).random((1, 12, 20, 3), dtype=np.float32)
    before = np.asarray(model(x))
    costs = flops.conv_costs(model, 12, 20)
    pixels = 6 * 10  # every layer but the transposed conv's output runs at half size
    by_layer = [(c.path.split("/")[-1], c.macs) for c in costs]
    assert by_layer == [
        ("strided", pixels * 9 * 3 * 8),
        ("grouped", pixels * 9 * (8 // 2) * 8),
        ("shared", pixels * 8 * 8),
        ("shared", pixels * 8 * 8),
        ("up", pixels * 16 * 8 * 4),  # by input pixels
    ]
    thop = flops.count_macs(model, 12, 20, transposed_by="output")
    assert thop - flops.count_macs(model, 12, 20) == 3 * pixels * 16 * 8 * 4
    assert all("call" not in vars(layer) for layer in model.layers)
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    with pytest.raises(ValueError, match="transposed_by"):
        flops.count_macs(model, 12, 20, transposed_by="kernel")


def test_sizes_are_padded_to_the_model_multiple_like_restore():
    model = toy_model()
    model.size_multiple = 4
    assert flops.count_macs(model, 10, 17) == flops.count_macs(model, 12, 20)


def test_mimo_unet_layers_match_a_hand_computation():
    model = models.build_model("mimo_unet", base_channels=8, num_res=1)
    costs = {c.path.split("/", 1)[1]: c for c in flops.conv_costs(model, *GOPRO)}
    # feat_extract0: 3x3 conv, 3 -> 8 channels, at full resolution.
    assert costs["feat_extract0"].macs == 720 * 1280 * 9 * 3 * 8
    # feat_extract1: stride-2 3x3 conv 8 -> 16 (symmetric padding, then a "valid" conv).
    assert costs["feat_extract1/conv"].macs == 360 * 640 * 9 * 8 * 16
    # feat_extract3: 4x4 stride-2 transposed conv 32 -> 16, counted on its 1/4-size input.
    assert costs["feat_extract3"].macs == 180 * 320 * 16 * 32 * 16


# ---- IDC (idc.md section 4.4) ------------------------------------------------------------------


def thop_style(cost):
    """The cost with a transposed conv counted by output pixels (thop), from its recorded shapes."""
    if not cost.transposed:
        return cost.macs
    return cost.macs * np.prod(cost.output_shape[1:3]) // np.prod(cost.input_shape[1:3])


def test_idc_multiply_adds_and_breakdown_match_the_spec():
    costs = flops.conv_costs(idc.idc(), *GOPRO)
    total = idc.multiply_adds(*GOPRO)
    assert gmac(total) == 2884.03
    assert sum(c.macs for c in costs) == total
    per_scale = np.array_split(np.array([c.macs for c in costs]), 3)  # one pass per scale
    assert [gmac(int(s.sum())) for s in per_scale] == [137.33, 549.34, 2197.36]

    def part(names, scale_costs):
        return gmac(sum(c.macs for c in scale_costs if any(f"/{n}" in c.path for n in names)))

    full = costs[2 * len(costs) // 3 :]
    blocks = ["e1", "e2", "e3", "d1", "d2", "d3", "texture", "fusion"]
    assert [part([b], full) for b in blocks] == [
        98.80, 106.17, 106.17, 392.59, 422.79, 139.67, 858.19, 72.99,
    ]  # fmt: skip
    sub_deblur = ["encoder", "decoder"]
    assert [part(p, costs) for p in (sub_deblur, ["texture"], ["fusion"])] == [
        1661.85, 1126.38, 95.80,
    ]  # fmt: skip
    assert gmac(sum(thop_style(c) for c in costs)) == 3121.85


# ---- Two-Way (two_way.md section 5) ------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "expected"), [({}, 656.94), ({"two_way": False}, 435.42)])
def test_two_way_multiply_adds_match_the_spec(overrides, expected):
    assert gmac(two_way.multiply_adds(*GOPRO, **overrides)) == expected


# ---- GradientNet GAN (gradientnet.md sections 2.2, 2.3 and 3) ----------------------------------

GRADIENTNET_A_MACS = 451_215_452_672  # configuration A at 1280x720


@pytest.mark.parametrize(
    ("overrides", "true", "thop", "crop"),
    [
        ({}, 451.22, 553.14, 32.09),  # configuration A: the paper's "446.98 G FLOPs" are MACs
        ({"rgcl_mode": "plain"}, 196.41, 298.33, 13.97),
        ({"mbrb_branches": 1}, 234.16, 336.08, 16.65),
        ({"use_gradientnet": False}, 85.29, 187.21, 6.06),
    ],
)
def test_gradientnet_multiply_adds_match_the_spec(overrides, true, thop, crop):
    model = gradientnet.gradientnet(**overrides)
    costs = flops.conv_costs(model, *GOPRO)
    assert gmac(sum(c.macs for c in costs)) == true
    assert gmac(sum(thop_style(c) for c in costs)) == thop
    assert gmac(flops.count_macs(model, 256, 256)) == crop


def test_gradientnet_breakdown_matches_the_spec():
    costs = flops.conv_costs(gradientnet.gradientnet(), *GOPRO)
    assert sum(c.macs for c in costs) == GRADIENTNET_A_MACS

    def part(name):
        return gmac(sum(c.macs for c in costs if name in f"{c.path}/"))

    parts = ["/e0/", "/e1/", "/e2/", "/prftm", "/mbrb", "/mbrb0/", "/mbrb0/rgcl0/", "/mbrb0/fuse/",
             "/mbrb0/conv/", "/gradientnet/proj/", "/d1/", "/d0/", "/out/"]  # fmt: skip
    assert [part(p) for p in parts] == [
        8.67, 16.99, 16.99, 10.62, 346.82, 34.68, 10.62, 0.71, 2.12, 8.49, 16.99, 16.99, 8.67,
    ]  # fmt: skip
    # One RGCL application (the shared step is recorded once per call: three calls per RGCL).
    rgcl = [c for c in costs if "/mbrb0/rgcl0/" in c.path and "/ca/" not in c.path]
    assert len(rgcl) == 3 * 3 and gmac(sum(c.macs for c in rgcl) // 3) == 3.54
    assert gmac(flops.count_macs(gradientnet.critic(), 256, 256)) == 3.61


def test_gradientnet_register_alternatives_cost_what_the_spec_says():
    """Cost differences measured on one-MBRB models (a full trace takes seconds)."""

    def one_mbrb(**overrides):
        return gradientnet.multiply_adds(*GOPRO, num_mbrb=1, **overrides)

    base = one_mbrb()
    assert gmac(base) == 139.08  # A without nine MBRBs of 34.68 GMAC each
    assert gmac(one_mbrb(skip="concat") - base) == 25.66  # register 2: "+25.7 GMAC"
    fuse3 = GRADIENTNET_A_MACS + 10 * (one_mbrb(fuse_kernel=3) - base)
    assert gmac(fuse3) == 507.84  # register 9
