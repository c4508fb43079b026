"""Readers of every layout and their errors (data_and_evaluation.md §1.1), on tiny tmp folders."""

import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from data import DataError, Pair, flow_label_path, image_io, list_pairs, readers


def write(path, image, ext=None):
    """Writes an RGB/gray uint8 or uint16 array with OpenCV (RGB -> BGR)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if image.ndim == 3 and image.shape[2] >= 3:
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    assert cv2.imwrite(str(path), image)
    return str(path)


def rgb(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_gopro(root, split="train", sequences=("GOPR0001_11_00", "GOPR0002_11_00"), frames=2):
    """GOPRO_Large layout with blur, blur_gamma and sharp; frame names repeat across sequences."""
    for s, seq in enumerate(sequences):
        for f in range(frames):
            name = f"{47 + f:06d}.png"
            for kind in ("blur", "blur_gamma", "sharp"):
                write(root / split / seq / kind / name, rgb(seed=100 * s + f))
    return root


def make_paired(root, split="test", names=("a.png", "b.png")):
    for i, name in enumerate(names):
        write(root / split / "blur" / name, rgb(seed=i))
        write(root / split / "sharp" / name, rgb(seed=i + 50))
    return root


# --- layouts -----------------------------------------------------------------------------------


def test_gopro_layout_names_keep_the_sequence_and_variant_is_selected(tmp_path):
    make_gopro(tmp_path)
    pairs = list_pairs(str(tmp_path), "train")
    assert [p.name for p in pairs] == [
        "GOPR0001_11_00_000047.png",
        "GOPR0001_11_00_000048.png",
        "GOPR0002_11_00_000047.png",
        "GOPR0002_11_00_000048.png",
    ]
    assert all(isinstance(p, Pair) and os.sep + "blur" + os.sep in p.blur for p in pairs)
    assert all(os.sep + "sharp" + os.sep in p.sharp for p in pairs)
    gamma = list_pairs(str(tmp_path), "train", blur_variant="blur_gamma")
    assert all(os.sep + "blur_gamma" + os.sep in p.blur for p in gamma)
    assert [p.sharp for p in gamma] == [p.sharp for p in pairs]


def test_flattened_mimo_layout_and_plain_paired_folder(tmp_path):
    make_paired(tmp_path, "train", ("GOPR0001_11_00_000047.png", "GOPR0002_11_00_000047.png"))
    pairs = list_pairs(str(tmp_path), "train")
    assert [p.name for p in pairs] == ["GOPR0001_11_00_000047.png", "GOPR0002_11_00_000047.png"]
    write(tmp_path / "jpg" / "blur" / "x.jpg", rgb())
    write(tmp_path / "jpg" / "sharp" / "x.jpg", rgb())
    assert [p.name for p in list_pairs(str(tmp_path), "jpg")] == ["x.jpg"]


def test_srn_datalist_sharp_first_relative_to_root(tmp_path):
    make_gopro(tmp_path, "training_set")
    lines = [
        "# SRN datalist_gopro.txt format",
        "GOPR0001_11_00/sharp/000047.png GOPR0001_11_00/blur/000047.png",
        "",
        "GOPR0002_11_00/sharp/000047.png GOPR0002_11_00/blur/000047.png  # trailing comment",
    ]
    datalist = tmp_path / "datalist_gopro.txt"
    datalist.write_text("\n".join(lines) + "\n")
    root = str(tmp_path / "training_set")
    pairs = list_pairs(root, "train", datalist=str(datalist))
    assert [p.name for p in pairs] == ["GOPR0001_11_00_000047.png", "GOPR0002_11_00_000047.png"]
    assert pairs[0].sharp.endswith(os.path.join("GOPR0001_11_00", "sharp", "000047.png"))
    gamma = list_pairs(root, "train", "blur_gamma", datalist=str(datalist))
    assert gamma[0].blur.endswith(os.path.join("GOPR0001_11_00", "blur_gamma", "000047.png"))


def test_realblur_style_list(tmp_path):
    for scene in ("scene001", "scene002"):
        write(tmp_path / "RealBlur-J" / scene / "blur" / "blur_1.png", rgb())
        write(tmp_path / "RealBlur-J" / scene / "gt" / "gt_1.png", rgb())
    lines = [
        f"RealBlur-J/{s}/gt/gt_1.png RealBlur-J/{s}/blur/blur_1.png"
        for s in ("scene001", "scene002")
    ]
    (tmp_path / "list.txt").write_text("\n".join(lines))
    pairs = list_pairs(str(tmp_path), "test", datalist=str(tmp_path / "list.txt"))
    assert [p.name for p in pairs] == ["scene001_blur_1.png", "scene002_blur_1.png"]


def test_stray_files_are_ignored_with_a_warning(tmp_path):
    make_paired(tmp_path)
    (tmp_path / "test" / "blur" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "test" / "notes.txt").write_text("hi")
    scan = readers.scan_split(str(tmp_path), "test")
    assert len(scan.pairs) == 2
    assert [p.kind for p in scan.problems] == ["ignored"] and not scan.problems[0].error


def test_flow_label_path(tmp_path):
    make_gopro(tmp_path, frames=1)
    pair = list_pairs(str(tmp_path), "train")[0]
    with pytest.raises(DataError, match="no flow label"):
        flow_label_path(pair)
    flow_dir = tmp_path / "train" / "GOPR0001_11_00" / "flow"
    flow_dir.mkdir()
    np.save(flow_dir / "000047.npy", np.zeros((16, 24, 2), np.float32))
    assert flow_label_path(pair) == str(flow_dir / "000047.npy")


# --- structural errors -------------------------------------------------------------------------


def test_missing_root_split_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        list_pairs(str(tmp_path / "nope"), "train")
    make_gopro(tmp_path / "GOPRO_Large")
    with pytest.raises(DataError, match="split folder not found.*Did you mean .*GOPRO_Large"):
        list_pairs(str(tmp_path), "train")
    (tmp_path / "odd" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="unrecognised layout"):
        list_pairs(str(tmp_path), "odd")
    with pytest.raises(DataError, match="blur_variant"):
        list_pairs(str(tmp_path / "GOPRO_Large"), "train", blur_variant="gamma")


def test_missing_counterparts_both_ways(tmp_path):
    make_paired(tmp_path)
    write(tmp_path / "test" / "blur" / "only_blur.png", rgb())
    write(tmp_path / "test" / "sharp" / "only_sharp.png", rgb())
    with pytest.raises(DataError) as err:
        list_pairs(str(tmp_path), "test")
    message = str(err.value)
    assert "2 problem(s)" in message
    assert "only_blur.png: no sharp counterpart" in message
    assert "only_sharp.png: no blurred counterpart" in message


def test_missing_variant_folder_and_no_pairs(tmp_path):
    make_paired(tmp_path)
    with pytest.raises(DataError, match=r"blur_gamma: folder not found"):
        list_pairs(str(tmp_path), "test", blur_variant="blur_gamma")
    (tmp_path / "empty" / "blur").mkdir(parents=True)
    (tmp_path / "empty" / "sharp").mkdir(parents=True)
    with pytest.raises(DataError, match="no image pairs found"):
        list_pairs(str(tmp_path), "empty")


def test_sequence_without_sharp_folder(tmp_path):
    make_gopro(tmp_path)
    seq = tmp_path / "train" / "GOPR0009_11_00" / "blur"
    write(seq / "000001.png", rgb())
    with pytest.raises(DataError, match=r"GOPR0009_11_00.sharp: folder not found"):
        list_pairs(str(tmp_path), "train")


def test_datalist_errors(tmp_path):
    make_paired(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("test/sharp/a.png\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'sharp_path blur_path'"):
        list_pairs(str(tmp_path), "test", datalist=str(bad))
    missing = tmp_path / "missing.txt"
    missing.write_text("test/sharp/zz.png test/blur/zz.png\n")
    with pytest.raises(DataError, match=r"zz.png: listed in .*missing.txt but not found"):
        list_pairs(str(tmp_path), "test", datalist=str(missing))
    dup = tmp_path / "dup.txt"
    dup.write_text("test/sharp/a.png test/blur/a.png\ntest/sharp/a.png test/blur/a.png\n")
    with pytest.raises(DataError, match="also used by"):
        list_pairs(str(tmp_path), "test", datalist=str(dup))
    with pytest.raises(DataError, match="cannot read datalist"):
        list_pairs(str(tmp_path), "test", datalist=str(tmp_path / "absent.txt"))


# --- file errors ---------------------------------------------------------------------------------


def _png_bytes(image):
    return cv2.imencode(".png", image)[1].tobytes()


def png_chunk(kind, payload):
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def palette_png(path, h=16, w=24):
    """A minimal 8-bit palette PNG (colour type 3), which decodes to RGB."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    palette = bytes(range(256)) * 3
    raw = b"".join(b"\x00" + bytes((i + j) % 256 for j in range(w)) for i in range(h))
    data = image_io._PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"PLTE", palette[:768])
    data += png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"not an image at all"), "not a PNG or JPEG"),
        (lambda p: p.write_bytes(_png_bytes(rgb())[:-40]), "truncated PNG"),
        (lambda p: p.write_bytes(_png_bytes(rgb())[:20]), "truncated or corrupt PNG header"),
        (lambda p: write(p, rgb()[..., 0]), r"grayscale \(need 8-bit RGB\)"),
        (lambda p: write(p, np.dstack([rgb(), rgb()[..., :1]])), r"RGBA"),
        (lambda p: write(p, rgb().astype(np.uint16) * 257), r"16-bit per channel"),
    ],
    ids=["empty", "not_image", "truncated", "header", "gray", "rgba", "16bit"],
)
def test_bad_png_files_are_named(tmp_path, make_bad, message):
    make_paired(tmp_path)
    bad = tmp_path / "test" / "sharp" / "b.png"
    make_bad(bad)
    with pytest.raises(DataError, match=message) as err:
        list_pairs(str(tmp_path), "test")
    assert str(bad) in str(err.value)


def test_bad_jpeg_files_are_named(tmp_path):
    write(tmp_path / "s" / "blur" / "a.jpg", rgb())
    write(tmp_path / "s" / "sharp" / "a.jpg", rgb()[..., 0])
    with pytest.raises(DataError, match=r"sharp.a\.jpg: grayscale"):
        list_pairs(str(tmp_path), "s")
    ok, jpeg = cv2.imencode(".jpg", rgb())
    (tmp_path / "s" / "sharp" / "a.jpg").write_bytes(jpeg.tobytes()[:-100])
    with pytest.raises(DataError, match=r"a\.jpg: truncated JPEG"):
        list_pairs(str(tmp_path), "s")


def test_size_mismatch(tmp_path):
    make_paired(tmp_path)
    write(tmp_path / "test" / "sharp" / "a.png", rgb(h=20))
    with pytest.raises(DataError, match=r"a\.png: size 24x16 differs from its sharp counterpart"):
        list_pairs(str(tmp_path), "test")


def test_palette_png_is_accepted_and_decodes_to_rgb(tmp_path):
    palette_png(tmp_path / "p.png")
    info = image_io.check_rgb8(str(tmp_path / "p.png"))
    assert (info.width, info.height, info.channels, info.bit_depth) == (24, 16, 3, 8)
    assert image_io.decode_rgb(str(tmp_path / "p.png"), (16, 24)).shape == (16, 24, 3)


def test_header_sizes_and_decoding(tmp_path):
    image = rgb(h=12, w=20)
    info = image_io.check_rgb8(write(tmp_path / "x.png", image))
    assert (info.format, info.width, info.height) == ("png", 20, 12)
    np.testing.assert_array_equal(image_io.decode_rgb(str(tmp_path / "x.png")), image)
    info = image_io.check_rgb8(write(tmp_path / "x.jpg", image))
    assert (info.format, info.width, info.height, info.channels) == ("jpeg", 20, 12, 3)
    with pytest.raises(DataError, match="file not found"):
        image_io.decode_rgb(str(tmp_path / "absent.png"))


# --- the real data set, when present ------------------------------------------------------------

GOPRO_COUNTS = {
    "train": {
        "GOPR0372_07_00": 100, "GOPR0372_07_01": 75, "GOPR0374_11_00": 150, "GOPR0374_11_01": 80,
        "GOPR0374_11_02": 100, "GOPR0374_11_03": 48, "GOPR0378_13_00": 110, "GOPR0379_11_00": 100,
        "GOPR0380_11_00": 60, "GOPR0384_11_01": 100, "GOPR0384_11_02": 100, "GOPR0384_11_03": 100,
        "GOPR0384_11_04": 100, "GOPR0385_11_00": 100, "GOPR0386_11_00": 100, "GOPR0477_11_00": 80,
        "GOPR0857_11_00": 100, "GOPR0868_11_01": 100, "GOPR0868_11_02": 100, "GOPR0871_11_01": 100,
        "GOPR0881_11_00": 100, "GOPR0884_11_00": 100,
    },
    "test": {
        "GOPR0384_11_00": 100, "GOPR0384_11_05": 100, "GOPR0385_11_01": 100, "GOPR0396_11_00": 100,
        "GOPR0410_11_00": 134, "GOPR0854_11_00": 100, "GOPR0862_11_00": 77, "GOPR0868_11_00": 100,
        "GOPR0869_11_00": 100, "GOPR0871_11_00": 100, "GOPR0881_11_01": 100,
    },
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GOPRO_DIR"), reason="set GOPRO_DIR to a GOPRO_Large copy")
@pytest.mark.parametrize("split, total", [("train", 2103), ("test", 1111)])
def test_real_gopro_counts_per_sequence(split, total):
    pairs = list_pairs(os.environ["GOPRO_DIR"], split, check_images=False)
    counts = {}
    for p in pairs:
        seq = os.path.basename(os.path.dirname(os.path.dirname(p.blur)))
        counts[seq] = counts.get(seq, 0) + 1
    assert counts == GOPRO_COUNTS[split] and len(pairs) == total
    assert len({p.name for p in pairs}) == total


def test_damaged_png_is_a_data_error_before_any_decoder(tmp_path, capfd):
    from tests.train_checks import damage_png

    path = tmp_path / "x.png"
    assert cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    damage_png(path)
    image_io.read_info(str(path))  # header and end are intact
    with pytest.raises(DataError, match=r"x\.png: damaged PNG data \(checksum mismatch in the"):
        image_io.decode_rgb(str(path))
    with pytest.raises(DataError, match="checksum mismatch"):
        image_io.decode_strict(str(path))
    assert "libpng" not in capfd.readouterr().err


def test_png_with_valid_checksums_but_bad_data_is_still_refused(tmp_path):
    """Damage written with a recomputed CRC (a buggy writer) reaches OpenCV, which refuses it."""
    path = tmp_path / "x.png"
    assert cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    raw = bytearray(path.read_bytes())
    length = struct.unpack(">I", raw[33:37])[0]
    assert raw[37:41] == b"IDAT"
    raw[41 + length // 2 : 41 + length // 2 + 200] = b"\xff" * 200
    raw[41 + length : 45 + length] = struct.pack(">I", zlib.crc32(bytes(raw[37 : 41 + length])))
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"x\.png: cannot decode image"):
        image_io.decode_rgb(str(path))
