"""The TFDS GoPro builder (manual download) on a miniature GOPRO_Large folder and zip."""

import os
import shutil

import cv2
import numpy as np
import pytest

import data
from data import pipeline

tfds_gopro = pytest.importorskip("data.tfds_gopro")

SEQUENCES = {"train": ("GOPR0001_11_00", "GOPR0002_11_00"), "test": ("GOPR0003_11_00",)}


def write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    """manual_dir/GOPRO_Large/{train,test}/<seq>/{blur,blur_gamma,sharp}/00004{7,8}.png."""
    manual_dir = tmp_path_factory.mktemp("manual")
    rng = np.random.default_rng(0)
    for split, sequences in SEQUENCES.items():
        for seq in sequences:
            for frame in ("000047.png", "000048.png"):
                for kind in ("blur", "blur_gamma", "sharp"):
                    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                    write(manual_dir / "GOPRO_Large" / split / seq / kind / frame, image)
    return manual_dir


def read(path):
    return cv2.imread(str(path))[..., ::-1]


def test_builder_prepares_from_a_folder(manual, tmp_path):
    builder = tfds_gopro.gopro_builder("blur", data_dir=str(tmp_path))
    tfds_gopro.prepare(builder, str(manual))
    assert builder.info.splits["train"].num_examples == 4
    assert builder.info.splits["test"].num_examples == 2
    examples = list(builder.as_dataset(split="train").as_numpy_iterator())
    names = sorted(e["name"].decode() for e in examples)
    assert names == [f"GOPR000{s}_11_00_00004{f}.png" for s in (1, 2) for f in (7, 8)]
    for e in examples:
        seq, frame = e["name"].decode().rsplit("_", 1)
        folder = manual / "GOPRO_Large" / "train" / seq
        np.testing.assert_array_equal(e["blur"], read(folder / "blur" / frame))
        np.testing.assert_array_equal(e["sharp"], read(folder / "sharp" / frame))
    assert "manual_dir" in tfds_gopro.Gopro.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_builder_prepares_blur_gamma_from_the_zip(manual, tmp_path):
    zipped = tmp_path / "manual"
    zipped.mkdir()
    shutil.make_archive(str(zipped / "GOPRO_Large"), "zip", str(manual), "GOPRO_Large")
    builder = tfds_gopro.gopro_builder("blur_gamma", data_dir=str(tmp_path / "tfds"))
    tfds_gopro.prepare(builder, str(zipped))
    (example,) = (
        builder.as_dataset(split="test")
        .filter(lambda e: e["name"] == "GOPR0003_11_00_000048.png")
        .as_numpy_iterator()
    )
    folder = manual / "GOPRO_Large" / "test" / "GOPR0003_11_00"
    np.testing.assert_array_equal(example["blur"], read(folder / "blur_gamma" / "000048.png"))


def test_open_split_tfds_and_the_pipelines(manual, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(data.DataError, match="not prepared"):
        data.open_split("tfds:gopro", "train")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    source = data.open_split(f"tfds:gopro:{manual}", "train")
    assert isinstance(source, data.TfdsSource) and len(source) == 4 and source.pairs is None
    assert len(data.open_split("tfds:gopro", "test")) == 2  # prepared now: no manual_dir needed
    batches = list(pipeline.train_dataset(source, batch_size=2, crop_size=16, seed=0))
    assert len(batches) == 2 and batches[0][0].shape == (2, 16, 16, 3)
    evaluation = list(pipeline.eval_dataset(source))
    assert len(evaluation) == 4 and evaluation[0]["blur"].shape == (1, 24, 32, 3)
    with pytest.raises(data.DataError, match="unknown TFDS data set"):
        data.open_split("tfds:realblur", "train")


def test_manual_dir_errors(tmp_path):
    with pytest.raises(data.DataError, match="manual_dir not found"):
        tfds_gopro.find_gopro_root(str(tmp_path / "absent"))
    with pytest.raises(data.DataError, match="no GOPRO_Large folder"):
        tfds_gopro.find_gopro_root(str(tmp_path))
