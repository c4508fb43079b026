"""Throughput of the data layer on this machine.

    python benchmarks/data_pipeline.py [--pairs 24] [--epochs 3] [--crop 256] [--batch_size 8]
        [--synthetic_pairs 8] [--default_set | --nodefault_set]

1. Training pipeline (:func:`data.pipeline.train_dataset`): pairs per second of 256x256 paired
   crops with horizontal flips from 1280x720 RGB PNG pairs written to a temporary folder
   (natural-looking content: up-scaled, shifted scikit-image photographs, the blur one Gaussian-
   blurred), without the cache and with the in-memory cache warm (epochs after the first), and
   with IDC's random-sigma noise (Gaussian sampling costs ~5 ms per 256x256x3 crop here).
   Target: >= 60 pairs/s on 2 cores with the cache.
2. Synthetic data: pairs per second of each kind (gopro, trajectory, flow; 256x256, one process).
3. Optionally (``--default_set``, on by default) the wall time of building the embedded default
   set (200 + 50 pairs of 256x256, 2 worker processes) into a temporary folder.

Wall times depend on what else runs on the machine; the CPU seconds of this process (and its
children) are printed beside them.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli  # noqa: E402  (the repository root is on the path only now)

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 24, "1280x720 pairs written for the pipeline benchmark.")
flags.DEFINE_integer("epochs", 2, "Epochs timed without the cache.")
flags.DEFINE_integer("cached_epochs", 10, "Epochs timed with the cache (after it is filled).")
flags.DEFINE_integer("crop", 256, "Crop size.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("synthetic_pairs", 8, "Pairs generated per synthetic kind.")
flags.DEFINE_bool("default_set", True, "Also time building the embedded default set.")


@dataclasses.dataclass(frozen=True)
class DataPipelineBenchmarkConfig:
    """One data_pipeline.py run, read from the flags once (:func:`config_from_flags`)."""

    pairs: int = 24
    epochs: int = 2
    cached_epochs: int = 10
    crop: int = 256
    batch_size: int = 8
    synthetic_pairs: int = 8
    default_set: bool = True


def config_from_flags() -> DataPipelineBenchmarkConfig:
    """data_pipeline.py's flags as one :class:`DataPipelineBenchmarkConfig`."""
    names = [field.name for field in dataclasses.fields(DataPipelineBenchmarkConfig)]
    return DataPipelineBenchmarkConfig(**{name: FLAGS[name].value for name in names})


def cpu_seconds() -> float:
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def write_gopro_like_pairs(root: str, n: int) -> None:
    """``n`` 1280x720 PNG pairs in the paired-folder layout (``train/{blur,sharp}``)."""
    import cv2
    import numpy as np

    from data import image_io, synthetic_sources

    rng = np.random.default_rng(0)
    names = [s for s in synthetic_sources.PHOTOS if s != "chelsea"]
    for i in range(n):
        photo = synthetic_sources.load_source(names[i % len(names)])
        big = cv2.resize(photo, (1400, 800), interpolation=cv2.INTER_CUBIC)
        y, x = rng.integers(0, 80), rng.integers(0, 120)
        sharp = np.ascontiguousarray(big[y : y + 720, x : x + 1280])
        blur = cv2.GaussianBlur(sharp, (0, 0), 2.0)
        for kind, image in (("blur", blur), ("sharp", sharp)):
            os.makedirs(os.path.join(root, "train", kind), exist_ok=True)
            image_io.write_png(os.path.join(root, "train", kind, f"{i:06d}.png"), image)


def time_pipeline(
    config: DataPipelineBenchmarkConfig, source, cache: bool, noise: str
) -> tuple[float, float]:
    """(pairs/s, CPU s per pair) over the timed epochs (after one warm-up epoch)."""
    from data import pipeline

    ds = pipeline.train_dataset(
        source,
        batch_size=config.batch_size,
        crop_size=config.crop,
        noise=noise,
        cache=cache,
        seed=0,
    )
    for _ in ds:  # warm-up: tracing, thread pools and (with the cache) decoding
        pass
    start, cpu, pairs = time.perf_counter(), cpu_seconds(), 0
    for _ in range(config.cached_epochs if cache else config.epochs):
        for blur, _sharp in ds:
            pairs += int(blur.shape[0])
    elapsed = time.perf_counter() - start
    return pairs / elapsed, (cpu_seconds() - cpu) / pairs


def time_synthetic(pairs: int, kind: str, out: str) -> tuple[float, float]:
    """(pairs/s, CPU s per pair) of ``pairs`` pairs of one synthetic kind at 256x256 in one
    process."""
    from data import synthetic

    cfg = synthetic.SynthConfig(
        kind=kind, size=256, train_pairs=pairs, test_pairs=0, flows_per_image=1
    )
    start, cpu = time.perf_counter(), cpu_seconds()
    synthetic.build_dataset(out, cfg, workers=1)
    elapsed = time.perf_counter() - start
    return pairs / elapsed, (cpu_seconds() - cpu) / pairs


def time_default_set(out: str) -> tuple[float, float]:
    """(wall s, CPU s) of building the embedded default set into ``out``."""
    from data import default_data, synthetic

    start, cpu = time.perf_counter(), cpu_seconds()
    synthetic.build_dataset(out, default_data.DEFAULT_CONFIG, workers=2)
    return time.perf_counter() - start, cpu_seconds() - cpu


def main(argv):
    del argv
    config = config_from_flags()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import data

    rows = []
    with tempfile.TemporaryDirectory(prefix="data_bench_") as tmp:
        write_gopro_like_pairs(tmp, config.pairs)
        source = data.open_split(tmp, "train")
        crop = f"{config.crop}x{config.crop} crops of 1280x720 PNG pairs, h-flip"
        for cache, noise in ((False, "off"), (True, "off"), (True, "random_sigma")):
            rate, cpu = time_pipeline(config, source, cache, noise)
            what = f"train_dataset, {crop}, noise {noise}, cache {'on (warm)' if cache else 'off'}"
            rows.append((what, rate, cpu))
        for kind in ("gopro", "trajectory", "flow"):
            out = os.path.join(tmp, f"syn_{kind}")
            rate, cpu = time_synthetic(config.synthetic_pairs, kind, out)
            rows.append((f"synthetic kind '{kind}', 256x256, 1 process", rate, cpu))
        if config.default_set:
            default_wall, default_cpu = time_default_set(os.path.join(tmp, "default"))
    print(f"\nCPU cores visible: {os.cpu_count()}\n")
    print("| what | pairs/s (wall) | CPU s / pair |")
    print("|---|---:|---:|")
    for label, rate, cpu in rows:
        print(f"| {label} | {rate:.1f} | {cpu:.3f} |")
    if config.default_set:
        print(
            f"\nEmbedded default set (200 + 50 pairs, 256x256, 2 worker processes): "
            f"{default_wall:.1f} s wall, {default_cpu:.1f} CPU s."
        )


if __name__ == "__main__":
    cli.run(main)
