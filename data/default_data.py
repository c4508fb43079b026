"""The project's embedded default data sets, generated on first use: ``data_and_evaluation.md``
§2.3 (step 8) and ``sen_rpgan.md`` §5.

When a training or evaluation script gets no ``--data_dir``, :func:`default_data_dir` returns a
synthetic GoPro-style set (kind ``gopro``, 200 train + 50 test pairs of 256 x 256, seed 0: the
spec's defaults) in the ``GOPRO_Large`` layout, generating it on first use into
``$DEBLUR_DATA_CACHE`` or ``~/.cache/deblur_zoo/``. The folder name carries the generator version
and the configuration (``synthetic_gopro_v1_s256_n200-50_seed0``), so a change of either never
reuses stale files. Generation is atomic (a temporary folder renamed into place; if another
process wins the race its copy is used) and runs in two worker processes: about 27 CPU-seconds,
40 s wall on the project's shared 2-core machine under load (``benchmarks/data_pipeline.py``),
~76 MB on disk. The spec's default size is therefore kept.

:func:`default_flow_dir` is the small flow set of SEN's ``--preset quick`` and of the examples
(kind ``flow``, ``u_max`` 23 by default: a small flow-23): ``FLOW_QUICK_SOURCES`` = 60 train and
10 test sharp sources x 20 flows = 1,200 + 200 pairs of 256 x 256, seed 0, generated the same way
(atomic, cached, version- and configuration-tagged name
``synthetic_flow_v2_s256_n1200-200_seed0_u23``): 213 CPU-seconds with two workers (~0.15 s per
pair), i.e. about 2 min of wall time on two free cores (10 min measured on the project's shared
2-core machine under load 11), and 981 MB on disk (a float32 256 x 256 x 2 label is 512 KB of the
~0.7 MB per pair). ``u_max=46`` gives a small flow-46 (about twice the CPU time per pair).
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
FLOW_QUICK_SOURCES = (60, 10)  # train, test sharp sources of the quick flow set
FLOWS_PER_SOURCE = 20


def cache_root() -> str:
    """``$DEBLUR_DATA_CACHE`` if set, else ``~/.cache/deblur_zoo``."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "deblur_zoo"
    )


def folder_name(cfg: synthetic.SynthConfig) -> str:
    """Version- and configuration-tagged folder name of a cached synthetic set."""
    name = (
        f"synthetic_{cfg.kind}_v{synthetic.version(cfg.kind)}_s{cfg.size}"
        f"_n{cfg.train_pairs}-{cfg.test_pairs}_seed{cfg.seed}"
    )
    plain = synthetic.SynthConfig(cfg.kind, cfg.size, cfg.train_pairs, cfg.test_pairs, cfg.seed)
    if cfg.kind == "flow":  # u_max is part of the set's identity (flow-23 / flow-46)
        name += f"_u{cfg.u_max:g}"
        plain = dataclasses.replace(plain, u_max=cfg.u_max)
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
    logging.info("Generating the synthetic %s data set (first use) into %s", cfg.kind, path)
    try:
        synthetic.build_dataset(path, cfg, workers=workers, log=logging.info)
    except (FileExistsError, OSError):
        # Another process finished first: its (identical) copy is as good as ours.
        if not os.path.isfile(os.path.join(path, synthetic.MANIFEST)):
            raise
    return path


def flow_quick_config(u_max: float = 23.0) -> synthetic.SynthConfig:
    """The configuration of :func:`default_flow_dir` (module docstring)."""
    train, test = FLOW_QUICK_SOURCES
    return synthetic.SynthConfig(
        kind="flow",
        size=256,
        train_pairs=train * FLOWS_PER_SOURCE,
        test_pairs=test * FLOWS_PER_SOURCE,
        u_max=u_max,
        flows_per_image=FLOWS_PER_SOURCE,
    )


def default_flow_dir(u_max: float = 23.0, workers: int = 2) -> str:
    """Path of the small flow set (``sen_rpgan.md`` §5 kind, quick size; module docstring) in the
    ``GOPRO_Large`` layout with ``flow/<frame>.npy`` labels, generated on first use (atomically).
    """
    return default_data_dir(flow_quick_config(u_max), workers=workers)
