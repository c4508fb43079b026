"""Builds an offline synthetic data set in the ``GOPRO_Large`` layout (:mod:`data.synthetic`).

Usage::

    python -m data.make_synthetic --out DIR --kind {gopro,trajectory,flow} [--pairs N] \\
        [--test_pairs M] [--size 256] [--seed 0] [--workers 2] [--overwrite]
        [--u_max 23] [--flows_per_image 20]          # flow kind (sen_rpgan.md §5)
        [--noise_sigma 0] [--object_prob 0.5] [--path poly|boracchi]   # gopro kind

The flow-23 / flow-46 sets of SEN (``sen_rpgan.md`` §5: 10,000 train + 2,000 test pairs of
256 x 256, 500 / 100 sharp sources x 20 flows, split by source)::

    python -m data.make_synthetic --kind flow --u_max 23 --out DIR   # flow-23
    python -m data.make_synthetic --kind flow --u_max 46 --out DIR   # flow-46

Each takes ~8.4 GB (a float32 256 x 256 x 2 label is 512 KB, blur + sharp PNGs ~0.2 MB) and about
0.15 (flow-23) / 0.33 (flow-46) CPU-seconds per pair: ~16 / ~33 min with two workers on two free
cores.

``--pairs`` is the number of training pairs: by default 200 (gopro, trajectory) or 10,000
(flow). ``--test_pairs`` defaults to a quarter of it (flow: a fifth, i.e. 2,000 for 10,000), at
least 1. For the flow kind, keep both multiples of ``--flows_per_image`` so that every sharp source
has all its flows. Without ``--out`` the set is written to the cache folder that
:func:`data.default_data_dir` uses (``$DEBLUR_DATA_CACHE`` or ``~/.cache/deblur_zoo``), under its
version- and configuration-tagged name; with the defaults this prepares the embedded default set.
The same arguments give byte-identical files. Output is atomic (temporary folder, then rename);
an existing ``--out`` is an error unless ``--overwrite``. Prints the data set path on success.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from absl import flags

import cli
from data import default_data, synthetic

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program, so importing never clashes)."""
    flags.DEFINE_string("out", None, "Output folder (default: the data cache folder).")
    flags.DEFINE_enum("kind", "gopro", list(synthetic.KINDS), "Blur synthesis kind.")
    flags.DEFINE_integer(
        "pairs", None, "Training pairs (default: 200; flow kind: 10,000).", lower_bound=0
    )
    flags.DEFINE_integer(
        "test_pairs", None, "Test pairs (default: pairs // 4; flow kind: pairs // 5; at least 1)."
    )
    flags.DEFINE_integer("size", 256, "Side of the square pairs.", lower_bound=16)
    flags.DEFINE_integer("seed", 0, "Random seed.", lower_bound=0)
    flags.DEFINE_integer("workers", 2, "Worker processes.", lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output folder.")
    flags.DEFINE_float("u_max", 23.0, "flow kind: maximum |u|, |v| in pixels (23 or 46).")
    flags.DEFINE_integer(
        "flows_per_image", 20, "flow kind: pairs sharing one sharp window (source)."
    )
    flags.DEFINE_float("noise_sigma", 0.0, "Gaussian noise sigma on the blurred images, [0, 1].")
    flags.DEFINE_float("object_prob", 0.5, "gopro kind: probability of moving objects.")
    flags.DEFINE_enum("path", "poly", ["poly", "boracchi"], "gopro kind: camera path model.")


def pair_counts(kind: str, pairs: int | None, test_pairs: int | None) -> tuple[int, int]:
    """(train, test) pairs from the flags and the kind's defaults (module docstring)."""
    flow = kind == "flow"
    if pairs is None:
        pairs = synthetic.FLOW_TRAIN_PAIRS if flow else 200
        if flow and test_pairs is None:
            return pairs, synthetic.FLOW_TEST_PAIRS
    if test_pairs is None:
        test_pairs = max(1, pairs // (5 if flow else 4))
    return pairs, test_pairs


def config_from_flags() -> synthetic.SynthConfig:
    train_pairs, test_pairs = pair_counts(FLAGS.kind, FLAGS.pairs, FLAGS.test_pairs)
    return synthetic.SynthConfig(
        kind=FLAGS.kind,
        size=FLAGS.size,
        train_pairs=train_pairs,
        test_pairs=test_pairs,
        seed=FLAGS.seed,
        noise_sigma=FLAGS.noise_sigma,
        object_prob=FLAGS.object_prob,
        path=FLAGS.path,
        u_max=FLAGS.u_max,
        flows_per_image=FLAGS.flows_per_image,
    )


def main(argv):
    if len(argv) > 1:
        return _error(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        cfg = config_from_flags()
    except ValueError as e:  # SynthConfig names the option (its field is the flag's name)
        return _error(str(e))
    out = FLAGS.out or os.path.join(default_data.cache_root(), default_data.folder_name(cfg))
    start = time.perf_counter()
    try:
        synthetic.build_dataset(out, cfg, FLAGS.workers, FLAGS.overwrite, log=logging.info)
    except (FileExistsError, OSError, RuntimeError) as e:
        return _error(str(e))
    total = cfg.train_pairs + cfg.test_pairs
    logging.info("%d pairs in %.1f s", total, time.perf_counter() - start)
    print(out)
    return 0


def _error(message: str) -> int:
    print(f"make_synthetic: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    define_flags()
    cli.run(main)
