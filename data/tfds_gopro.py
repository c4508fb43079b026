"""TFDS builder for GoPro (GOPRO_Large, Nah et al. CVPR 2017) with manual download:
``data_and_evaluation.md`` §1.1.

GoPro cannot be downloaded automatically (it is served from a personal page and Google Drive), so
the builder reads a local copy from TFDS's ``manual_dir``: either the extracted ``GOPRO_Large``
folder (or a folder holding ``train/`` and ``test/`` directly) or the ``GOPRO_Large.zip`` archive.
Splits ``train`` (2103 pairs) and ``test`` (1111 pairs); configs ``blur`` (default, as SRN and
MIMO-UNet use) and ``blur_gamma``. Features: ``blur`` and ``sharp`` uint8 (720, 1280, 3) PNG
images (stored as read, not re-encoded) and ``name`` (``<SEQUENCE>_<frame>.png``, unique per split;
also the example key). Files are listed and validated by :mod:`data.readers`, so a broken copy
fails with a :class:`~data.errors.DataError` naming the file.

Python API (no apache-beam needed)::

    from data import tfds_gopro
    builder = tfds_gopro.gopro_builder("blur")            # data_dir: $TFDS_DATA_DIR or default
    tfds_gopro.prepare(builder, "/path/to/folder/with/GOPRO_Large")
    train = builder.as_dataset(split="train")

or ``open_split("tfds:gopro:/path/to/folder/with/GOPRO_Large", "train")``. The ``tfds build``
command line also works on this file but needs apache-beam installed.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from etils import epath

from data import readers
from data.errors import DataError

_ARCHIVE_NAMES = ("GOPRO_Large.zip",)
_CITATION = """@inproceedings{Nah_2017_CVPR,
  author = {Nah, Seungjun and Kim, Tae Hyun and Lee, Kyoung Mu},
  title = {Deep Multi-Scale Convolutional Neural Network for Dynamic Scene Deblurring},
  booktitle = {CVPR},
  year = {2017}
}"""


class Gopro(tfds.core.GeneratorBasedBuilder):
    """GoPro deblurring pairs (GOPRO_Large) from a manually downloaded copy."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "GOPRO_Large train/test pairs; blur and blur_gamma configs."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="blur", description="Averaged on stored values (default)."),
        tfds.core.BuilderConfig(name="blur_gamma", description="Averaged in linear light."),
    ]
    DEFAULT_CONFIG_NAME = "blur"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download GOPRO_Large.zip from https://seungjunnah.github.io/Datasets/gopro (the "GOPRO_Large"
archive, ~8.9 GB; "GOPRO_Large_all" is not needed) and place either the zip file itself or its
extracted GOPRO_Large/ folder (holding train/ and test/) in the manual_dir.
"""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default looks the module up through ``importlib_resources``, which
        # tensorflow-datasets 4.9.10 uses without declaring it; the answer is this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Image(shape=(None, None, 3), encoding_format="png")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"blur": image, "sharp": image, "name": tfds.features.Text()}
            ),
            supervised_keys=("blur", "sharp"),
            homepage="https://seungjunnah.github.io/Datasets/gopro",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        root = find_gopro_root(os.fspath(dl_manager.manual_dir), dl_manager.extract)
        return {split: self._generate_examples(root, split) for split in ("train", "test")}

    def _generate_examples(self, root: str, split: str):
        for pair in readers.list_pairs(root, split, self.builder_config.name):
            yield pair.name, {"blur": pair.blur, "sharp": pair.sharp, "name": pair.name}


def find_gopro_root(manual_dir: str, extract=None) -> str:
    """The folder holding ``train/`` and ``test/`` in ``manual_dir`` (extracts a zip if needed)."""
    if not os.path.isdir(manual_dir):
        raise DataError(f"{manual_dir}: manual_dir not found. {Gopro.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    found = _split_parent(manual_dir)
    if found:
        return found
    archives = [os.path.join(manual_dir, n) for n in _ARCHIVE_NAMES]
    archives = [a for a in archives if os.path.isfile(a)] or [
        os.path.join(manual_dir, n) for n in sorted(os.listdir(manual_dir)) if n.endswith(".zip")
    ]
    if archives and extract is not None:
        found = _split_parent(os.fspath(extract(archives[0])))
        if found:
            return found
    raise DataError(
        f"{manual_dir}: no GOPRO_Large folder (with train/ and test/) or GOPRO_Large.zip found. "
        + Gopro.MANUAL_DOWNLOAD_INSTRUCTIONS
    )


def _split_parent(folder: str, depth: int = 2) -> str | None:
    """``folder`` or a sub-folder (up to ``depth`` levels) containing train/ and test/."""
    if all(os.path.isdir(os.path.join(folder, s)) for s in ("train", "test")):
        return folder
    if depth == 0:
        return None
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub) and not name.startswith(("__MACOSX", ".")):
            found = _split_parent(sub, depth - 1)
            if found:
                return found
    return None


def gopro_builder(blur_variant: str = "blur", data_dir: str | None = None) -> Gopro:
    """The builder for one blur variant.

    ``data_dir`` defaults to ``$TFDS_DATA_DIR`` read at call time, else TFDS's default folder.
    """
    if blur_variant not in readers.BLUR_VARIANTS:
        raise DataError(f"blur_variant must be one of {readers.BLUR_VARIANTS}: {blur_variant!r}.")
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    return Gopro(config=blur_variant, data_dir=data_dir)


def prepare(builder: Gopro, manual_dir: str) -> Gopro:
    """Prepares the builder's splits from ``manual_dir`` (no network access)."""
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    return builder
