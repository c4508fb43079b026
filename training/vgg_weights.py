"""Where the VGG ImageNet weights are: the ``--vgg_weights`` value -> a local file, offline.

``"imagenet"`` means Keras' cached notop file of the architecture in Keras' cache folder, checked
by name and md5: VGG19 (GradientNet) :data:`models.vgg.VGG19_NOTOP_FILE`, md5
:data:`models.vgg.VGG19_NOTOP_MD5`; VGG16 (RP-GAN) :data:`models.vgg.VGG16_NOTOP_FILE`, md5
:data:`models.vgg.VGG16_NOTOP_MD5`. A missing or different file raises
:class:`models.vgg.VGGWeightsError` with one line naming the file, its md5 and where to put it.
Nothing here downloads (there may be no network: a download would hang or fail late). Pure
Python, kept out of ``models/`` because it reads files.
"""

from __future__ import annotations

import hashlib
import os

from models.vgg import VGG_NOTOP, VGGWeightsError, architecture_name


def keras_models_dir() -> str:
    """The folder Keras' ``get_file`` caches application weights in, read at call time.

    ``$KERAS_HOME/models`` when ``KERAS_HOME`` is set, else ``~/.keras/models``; Keras falls back to
    ``/tmp/.keras`` when the base folder is not writable, and so does this.
    """
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    base = os.path.expanduser(base)
    if os.path.isdir(base) and not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, "models")


def file_md5(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks (the notop file is 80 MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _imagenet_help(architecture: str) -> str:
    display, filename, md5 = VGG_NOTOP[architecture]
    return (
        f"place Keras' {display} notop file {filename} (md5 {md5}) in "
        f"{keras_models_dir()} (set KERAS_HOME to use another cache folder), or pass "
        "--vgg_weights PATH, or --vgg_weights random for a smoke run without ImageNet features"
    )


def resolve_vgg_weights(
    value: str, expected_md5: str | None = None, architecture: str = "vgg19"
) -> str | None:
    """Local weight file for a ``--vgg_weights`` value; ``None`` means random weights.

    * ``"imagenet"``: Keras' cached notop file of ``architecture`` in :func:`keras_models_dir`
      (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` for ``"vgg19"``,
      ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` for ``"vgg16"``); it must exist and
      have md5 ``expected_md5`` (default: the architecture's, :data:`models.vgg.VGG_NOTOP`).
    * ``"random"``: ``None`` (random initialisation; only when asked for explicitly).
    * anything else: a path to a weight file, either Keras' own legacy ``.h5`` / ``.hdf5`` format
      (the notop file itself, copied anywhere) or a Keras 3 ``.weights.h5`` of
      ``VGG19(include_top=False)`` / ``VGG16(include_top=False)``; it must exist (its contents are
      checked when loading).

    Raises:
        VGGWeightsError: one-line message naming the file, the md5 and where to put it.
        ValueError: unknown ``architecture``.
    """
    display = architecture_name(architecture)
    _, filename, default_md5 = VGG_NOTOP[architecture]
    expected_md5 = expected_md5 or default_md5
    if value == "random":
        return None
    if value == "imagenet":
        path = os.path.join(keras_models_dir(), filename)
        if not os.path.isfile(path):
            raise VGGWeightsError(
                f"{display} ImageNet weights not found at {path}: {_imagenet_help(architecture)}"
            )
        actual = file_md5(path)
        if actual != expected_md5:
            raise VGGWeightsError(
                f"{display} ImageNet weights {path} have md5 {actual}, expected {expected_md5} "
                f"(damaged or partial download?): {_imagenet_help(architecture)}"
            )
        return path
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise VGGWeightsError(
            f"--vgg_weights {value}: no such file (expected 'imagenet', 'random' or the path of a "
            f"{display} notop weight file such as {filename})"
        )
    if not path.endswith((".h5", ".hdf5")):
        raise VGGWeightsError(
            f"--vgg_weights {value}: expected an HDF5 weight file (.h5, .hdf5 or .weights.h5)"
        )
    return path
