"""Cost of the benchmark authors' evaluation protocols (``protocols/``) on this machine.

    python benchmarks/protocol_cost.py [--frames 20] [--workers 2] [--reference 2] [--no-png]
        [--opencv_threads N] [--size 680x773] [--kohler_size 800x800]

Köhler (:func:`protocols.kohler.score_shot`): two images of one shot (a "restored" one and the
"blurred" input, as the evaluation scores both) against ``--frames`` generated 800 x 800 sharp
frames: crops of scikit-image's astronaut moving along a smooth random path (sub-pixel, a few
pixels per frame, as a camera shake's recorded frames), with noise; the blurred image is the mean
of the frames, the restored one a lightly blurred middle frame. Rows: the frames in memory, and
(unless ``--no-png``) written as PNGs and decoded by :func:`protocols.kohler.read_frames` ahead
of the scoring, as the evaluation reads them; ``--reference`` frames (0: skipped) are also scored
by the step-by-step procedure on whole arrays (the implementation before the fast path, one image
at a time, one thread), for the speed-up. Seconds per frame (both images), CPU seconds per frame
(all threads of this process), and the projection to the whole benchmark: 48 shots x 199 frames.

RealBlur (:func:`protocols.realblur.aligned_scores`): one pair of ``--size`` (RealBlur-J images
are about 680 x 773): the astronaut and a slightly warped, blurred, darker copy (ECC converges).

Wall times depend on the machine's other jobs: the load average is printed beside every row.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import peak  # noqa: E402  (benchmarks/ is the script's own folder)

from protocols import kohler, realblur  # noqa: E402  (the repository root is on the path now)

KOHLER_FRAMES = 48 * 199  # 4 scenes x 12 camera shakes, about 199 sharp frames each


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def photo(height: int, width: int, margin: int = 0) -> np.ndarray:
    """scikit-image's astronaut resized to (height + 2 margin, width + 2 margin), RGB uint8."""
    import skimage.data

    size = (width + 2 * margin, height + 2 * margin)
    return cv2.resize(skimage.data.astronaut(), size, interpolation=cv2.INTER_CUBIC)


def kohler_shot(count: int, size: tuple[int, int], seed: int = 0):
    """(images {"restored", "blurred"}, frames [(name, RGB uint8)]) of a generated shot."""
    height, width = size
    margin = 40
    scene = photo(height, width, margin).astype(np.float32)
    rng = np.random.default_rng(seed)
    velocity, position, frames = np.zeros(2), np.zeros(2), []
    for index in range(count):
        velocity = 0.8 * velocity + rng.normal(0, 0.6, 2)
        position = np.clip(position + velocity, -margin + 1, margin - 1)
        warp = np.array([[1.0, 0.0, margin + position[1]], [0.0, 1.0, margin + position[0]]])
        crop = cv2.warpAffine(
            scene, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        noisy = np.clip(crop + rng.normal(0, 2, crop.shape), 0, 255).round().astype(np.uint8)
        frames.append((f"GroundTruth1_1_{index + 1}.png", noisy))
    blurred = np.mean([frame for _, frame in frames], axis=0).round().astype(np.uint8)
    restored = cv2.GaussianBlur(frames[count // 2][1], (0, 0), 0.8)
    return {"restored": restored, "blurred": blurred}, frames


def timed(function, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process, load average at the end)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu, peak.load_average()


def kohler_row(label, count, wall, cpu, load) -> list:
    return [
        label,
        count,
        f"{1000 * wall / count:.1f}",
        f"{1000 * cpu / count:.1f}",
        f"{KOHLER_FRAMES * wall / count / 60:.1f}",
        f"{KOHLER_FRAMES * cpu / count / 60:.1f}",
        f"{load:.2f}",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="Köhler frames generated")
    parser.add_argument("--workers", type=int, default=2, help="score_shot's scoring threads")
    parser.add_argument(
        "--reference", type=int, default=2, help="frames scored step by step too (0: none)"
    )
    parser.add_argument(
        "--png",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the frames read from PNG files (read_frames)",
    )
    parser.add_argument(
        "--opencv_threads",
        type=int,
        default=None,
        help="cv2.setNumThreads during the timings (default: OpenCV's own)",
    )
    parser.add_argument("--kohler_size", default="800x800", help="Köhler frame size, HxW")
    parser.add_argument("--size", default="680x773", help="RealBlur pair size, HxW")
    args = parser.parse_args()
    if args.frames < 1 or args.workers < 1 or args.reference < 0:
        parser.error("--frames and --workers must be positive, --reference not negative")
    try:
        kohler_size = peak.parse_size(args.kohler_size, minimum=176)
        realblur_size = peak.parse_size(args.size, minimum=32)
    except ValueError as error:
        parser.error(str(error))

    if args.opencv_threads is not None:
        cv2.setNumThreads(args.opencv_threads)
    print(peak.describe_machine())
    print(f"OpenCV threads: {cv2.getNumThreads()}; score_shot workers: {args.workers}\n")
    images, frames = kohler_shot(args.frames, kohler_size)
    header = ["Köhler, 2 images", "frames", "ms / frame", "CPU ms / frame",
              "min, 48 x 199", "CPU min, 48 x 199", "load"]  # fmt: skip
    rows = [header]
    results, wall, cpu, load = timed(kohler.score_shot, images, frames, workers=args.workers)
    rows.append(kohler_row("score_shot, in memory", len(frames), wall, cpu, load))
    per_frame = (wall / len(frames), cpu / len(frames))
    if args.png:
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for name, frame in frames:
                paths.append(os.path.join(folder, name))
                cv2.imwrite(paths[-1], cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            read = kohler.read_frames(paths, workers=args.workers)
            from_png, png_wall, png_cpu, load = timed(kohler.score_shot, images, read, args.workers)
            rows.append(
                kohler_row("read_frames + score_shot", len(frames), png_wall, png_cpu, load)
            )
        assert from_png == results
    if args.reference:
        subset = frames[: args.reference]

        def reference():
            return [
                kohler.procedure_frame_scores(image, f)
                for _, f in subset
                for image in images.values()
            ]

        _, ref_wall, ref_cpu, load = timed(reference)
        rows.append(kohler_row("step by step (before)", len(subset), ref_wall, ref_cpu, load))
    peak.print_markdown(rows)
    for label, scores in results.items():
        print(
            f"{label}: PSNR {scores['psnr']:.3f} dB, MS-SSIM {scores['msssim']:.4f}, "
            f"SSIM {scores['ssim']:.4f}, best frame {scores['best_frame']}"
        )
    if args.reference:
        speed = ref_wall / len(subset) / per_frame[0]
        speed_cpu = ref_cpu / len(subset) / per_frame[1]
        print(f"score_shot (in memory) over step by step: {speed:.1f}x wall, {speed_cpu:.1f}x CPU")
    print()

    height, width = realblur_size
    sharp = photo(height, width)
    warp = np.array([[1.0, 0.004, 1.5], [-0.003, 1.0, -1.0], [0.0, 0.0, 1.0]], np.float32)
    moved = cv2.warpPerspective(sharp, warp, (width, height), borderMode=cv2.BORDER_REFLECT)
    output = (cv2.GaussianBlur(moved, (0, 0), 1.2) * 0.9).round().astype(np.uint8)
    scores, wall, cpu, load = timed(realblur.aligned_scores, output, sharp)
    rows = [["RealBlur aligned_scores", "size", "s", "CPU s", "PSNR", "SSIM", "load"]]
    rows.append(["one pair", f"{height}x{width}", f"{wall:.2f}", f"{cpu:.2f}",
                 f"{scores['psnr']:.2f}", f"{scores['ssim']:.4f}", f"{load:.2f}"])  # fmt: skip
    peak.print_markdown(rows)
    peak.print_end_load()


if __name__ == "__main__":
    main()
