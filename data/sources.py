"""Opened splits of paired data: :func:`open_split` and :class:`PairedSource`.

``open_split(data_dir, split, blur_variant="blur")`` accepts:

* ``None``: the embedded synthetic default (:func:`data.default_data.default_data_dir`);
* a folder path: read with :mod:`data.readers` (GoPro, paired-folder or, with ``datalist=``,
  SRN/RealBlur list layouts); every file's header is validated at opening time, so a bad file
  raises :class:`~data.errors.DataError` before TensorFlow sees it;
* ``"tfds:gopro"``: the prepared TFDS GoPro data set (:mod:`data.tfds_gopro`; config =
  ``blur_variant``; TFDS's data folder, i.e. ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``);
  ``"tfds:gopro:/manual/dir"`` prepares it first, if needed, from a ``GOPRO_Large`` folder or zip
  in ``/manual/dir``.

``PairedSource.images()`` yields dicts ``{"blur": uint8 (H, W, 3), "sharp": uint8 (H, W, 3),
"name": tf.string}`` in a deterministic order (sorted names for folders, TFDS's stored order for
TFDS). Folder images are decoded with OpenCV inside ``tf.py_function``, so a file that is corrupt
*inside* (its header and end were valid) stops the input pipeline with a
:class:`~data.errors.DataError` naming the file (iterate with :func:`data.errors.iterate` to get it
as such); TensorFlow is imported only when a dataset is built. A split folder that does not exist
raises :class:`~data.errors.MissingSplitError`.
"""

from __future__ import annotations

import os

import numpy as np

from data import image_io, readers
from data.errors import DataError, MissingSplitError
from data.readers import Pair

TFDS_PREFIX = "tfds:"


class PairedSource:
    """One split of blur/sharp pairs (abstract)."""

    name: str = ""
    pairs: list[Pair] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def images(self):
        """``tf.data.Dataset`` of full-size uint8 pairs (see the module docstring)."""
        raise NotImplementedError

    def cached_images(self):
        """:meth:`images` behind one in-memory ``Dataset.cache()`` per source object, in the
        deterministic order: every dataset built on it (one per training epoch) shares the decoded
        images, which are read once, in the first epoch that runs."""
        if getattr(self, "_cached_images", None) is None:
            self._cached_images = self.images().cache()
        return self._cached_images

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} pairs)"


class FolderSource(PairedSource):
    """Pairs of image files; ``sizes[i]`` is the (height, width) of pair i from its header."""

    def __init__(self, pairs: list[Pair], name: str, sizes: list[tuple[int, int]] | None = None):
        self.pairs = list(pairs)
        self.name = name
        self.sizes = sizes if sizes is not None else [None] * len(self.pairs)
        self.decoded = {}  # index -> (blur, sharp): the in-memory cache of cached pipelines

    def __len__(self) -> int:
        return len(self.pairs)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decodes pair ``index`` to two uint8 RGB (H, W, 3) arrays; DataError on failure."""
        pair, size = self.pairs[index], self.sizes[index]
        blur = image_io.decode_rgb(pair.blur, size)
        sharp = image_io.decode_rgb(pair.sharp, size or blur.shape[:2])
        return blur, sharp

    def images(self):
        import tensorflow as tf

        names = tf.constant([p.name for p in self.pairs] or [""], tf.string)
        load = tf_pair_loader(self)

        def to_dict(index):
            blur, sharp = load(index)
            return {"blur": blur, "sharp": sharp, "name": tf.gather(names, index)}

        indices = tf.data.Dataset.range(len(self))
        return indices.map(to_dict, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load_cached(source: FolderSource, index: int, cache: dict | None):
    """``source.load_pair(index)``, kept in ``cache`` (a dict) after the first use if given."""
    if cache is None:
        return source.load_pair(index)
    if index not in cache:
        cache[index] = source.load_pair(index)
    return cache[index]


def tf_pair_loader(source: FolderSource, cache: dict | None = None):
    """A graph function index -> (blur, sharp) uint8 (H, W, 3) tensors decoded with OpenCV."""
    import tensorflow as tf

    def tf_load(index):
        load = lambda i: load_cached(source, int(i), cache)
        blur, sharp = tf.py_function(load, [index], [tf.uint8, tf.uint8])
        blur.set_shape([None, None, 3])
        sharp.set_shape([None, None, 3])
        return blur, sharp

    return tf_load


class TfdsSource(PairedSource):
    """A split of a prepared TFDS builder with ``blur``/``sharp``/``name`` features."""

    def __init__(self, builder, split: str):
        if split not in builder.info.splits:
            raise MissingSplitError(
                f"{builder.name}: no split {split!r} (has {list(builder.info.splits)})."
            )
        self._builder = builder
        self._split = split
        self.pairs = None
        self.name = f"tfds:{builder.name}/{builder.builder_config.name}:{split}"

    def __len__(self) -> int:
        return int(self._builder.info.splits[self._split].num_examples)

    def images(self, shuffle_files: bool = False, seed: int | None = None):
        """The split's examples; ``shuffle_files`` (training) shuffles the shard order."""
        import tensorflow_datasets as tfds

        ds = self._builder.as_dataset(
            split=self._split,
            shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        return ds.map(lambda ex: {"blur": ex["blur"], "sharp": ex["sharp"], "name": ex["name"]})


def open_split(
    data_dir: str | None,
    split: str,
    blur_variant: str = "blur",
    datalist: str | None = None,
) -> PairedSource:
    """Opens one split: embedded default (None), a folder, or ``tfds:gopro[:MANUAL_DIR]``."""
    if data_dir is None:
        from data.default_data import default_data_dir

        data_dir = default_data_dir()
    data_dir = os.fspath(data_dir)
    if data_dir.startswith(TFDS_PREFIX):
        return _open_tfds(data_dir, split, blur_variant)
    scan = readers.scan_split(data_dir, split, blur_variant, datalist, check_images=True)
    readers.raise_for_problems(scan.problems, f"{split!r} split of {data_dir}")
    sizes = [(scan.infos[p.blur].height, scan.infos[p.blur].width) for p in scan.pairs]
    where = datalist or os.path.join(data_dir, split)
    return FolderSource(scan.pairs, f"{where} ({scan.layout} layout, {blur_variant})", sizes)


def _open_tfds(spec: str, split: str, blur_variant: str) -> TfdsSource:
    name, _, manual_dir = spec[len(TFDS_PREFIX) :].partition(":")
    if name != "gopro":
        raise DataError(f"{spec}: unknown TFDS data set {name!r} (supported: 'tfds:gopro').")
    from data import tfds_gopro

    builder = tfds_gopro.gopro_builder(blur_variant)
    if not builder.is_prepared():
        if not manual_dir:
            raise DataError(
                f"{spec}: the TFDS GoPro data set ({blur_variant}) is not prepared in "
                f"{builder.data_dir}; use 'tfds:gopro:/folder/with/GOPRO_Large' to prepare it."
            )
        tfds_gopro.prepare(builder, manual_dir)
    return TfdsSource(builder, split)
