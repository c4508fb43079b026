"""The project's embedded default data set: ``data_and_evaluation.md`` §2.3 (step 8).

When a training or evaluation script gets no ``--data_dir``, :func:`default_data_dir` returns a
synthetic GoPro-style set (kind ``gopro``, 200 train + 50 test pairs of 256 x 256, seed 0: the
spec's defaults) in the ``GOPRO_Large`` layout, generating it on first use into
``$DEBLUR_DATA_CACHE`` or ``~/.cache/deblur_zoo/``. The folder name carries the generator version
and the configuration (``synthetic_gopro_v1_s256_n200-50_seed0``), so a change of either never
reuses stale files. Generation is atomic (a temporary folder renamed into place; if another
process wins the race its copy is used) and runs in two worker processes: about 27 CPU-seconds,
40 s wall on the project's shared 2-core machine under load (``benchmarks/data_pipeline.py``),
~76 MB on disk. The spec's default size is therefore kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import logging

from data import synthetic

DEFAULT_CONFIG = synthetic.SynthConfig(kind="gopro", size=256, train_pairs=200, test_pairs=50)
CACHE_ENV = "DEBLUR_DATA_CACHE"


def cache_root() -> str:
    """``$DEBLUR_DATA_CACHE`` if set, else ``~/.cache/deblur_zoo``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "deblur_zoo"
    )


def folder_name(cfg: synthetic.SynthConfig) -> str:
    """Version- and configuration-tagged folder name of a cached synthetic set."""
    name = (
        f"synthetic_{cfg.kind}_v{synthetic.VERSION}_s{cfg.size}"
        f"_n{cfg.train_pairs}-{cfg.test_pairs}_seed{cfg.seed}"
    )
    plain = synthetic.SynthConfig(cfg.kind, cfg.size, cfg.train_pairs, cfg.test_pairs, cfg.seed)
    if cfg != plain:  # other options changed: tag them with a stable digest
        text = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
        name += "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return name


def default_data_dir(cfg: synthetic.SynthConfig | None = None, workers: int = 2) -> str:
    """Path of the embedded synthetic data set (``DEFAULT_CONFIG`` unless ``cfg``), generated on
    first use (atomically)."""
    cfg = cfg or DEFAULT_CONFIG
    path = os.path.join(cache_root(), folder_name(cfg))
    if os.path.isfile(os.path.join(path, synthetic.MANIFEST)):
        return path
    logging.info("Generating the embedded synthetic data set (first use) into %s", path)
    try:
        synthetic.build_dataset(path, cfg, workers=workers, log=logging.info)
    except (FileExistsError, OSError):
        # Another process finished first: its (identical) copy is as good as ours.
        if not os.path.isfile(os.path.join(path, synthetic.MANIFEST)):
            raise
    return path
