"""Data layer: readers of paired blur/sharp data sets, the embedded synthetic default, the
``tf.data`` training/evaluation pipelines (:mod:`data.pipeline`), blur synthesis and checks.

Specs: ``data_and_evaluation.md`` §1–2 and ``sen_rpgan.md`` §2, §3, §5. Importing this package
does not import TensorFlow (only :mod:`data.pipeline`, :mod:`data.tfds_gopro` and
``PairedSource.images()`` do), so the synthesis modules and CLIs start quickly.

Public API::

    Pair(blur, sharp, name)                 # NamedTuple of str; name unique within a split
    DataError                               # ValueError subclass naming the file and the problem
    MissingSplitError                       # DataError: the split (or data) folder does not exist
    list_pairs(root, split, blur_variant="blur", datalist=None) -> list[Pair]
    open_split(data_dir, split, blur_variant="blur") -> PairedSource
    default_data_dir() -> str               # the embedded synthetic set, generated on first use
"""

from data.default_data import default_data_dir
from data.errors import DataError, MissingSplitError
from data.readers import Pair, flow_label_path, list_pairs
from data.sources import FolderSource, PairedSource, TfdsSource, open_split

__all__ = [
    "DataError",
    "FolderSource",
    "MissingSplitError",
    "Pair",
    "PairedSource",
    "TfdsSource",
    "default_data_dir",
    "flow_label_path",
    "list_pairs",
    "open_split",
]
