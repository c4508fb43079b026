"""Cost of the non-uniform blur operator K / Kᵀ and of the HQS data step (CG), and the
non-blind quality of the data step with the true flows (``sen_rpgan.md`` §3, §6).

    python benchmarks/deconvolution.py [--size 720x1280] [--u_max 23,46]
        [--methods csr,sparse,gather] [--cg_methods csr] [--pairs 20] [--tables operator,nonblind]

Table "operator": every (u_max, method) runs in a fresh subprocess (peak memory is then its own):
a Gong random flow field of the image size (:func:`data.motion_blur.random_flow`, |u|, |v| ≤
u_max, the largest component equal to u_max), a sharp photo (scikit-image's astronaut resized)
blurred by it (O = K·sharp), then: building the tap table and the operator (``BlurOperator``;
first call, XLA compilation of the candidate kernel included, then again), K and Kᵀ on the
(1, H, W, 3) image (eagerly: median of ``--repeats`` after a warm-up; "graph": built and
applied 4 times inside a ``tf.function``, minus built and applied once, / 3), and one CG solve
of the data step from Z = O at β = 0.02 and β = 0.5 (methods in ``--cg_methods``; each CG
iteration is one K and one Kᵀ). Peak resident memory (``getrusage``) after building and at the end.

Table "nonblind": ``--pairs`` 256² test pairs of the flow-23 and flow-46 sets
(:func:`data.synthetic.make_flow_pair`, made in memory; or read from ``--flow23_dir`` /
``--flow46_dir``, GOPRO_Large layout ``test/<seq>/{blur,sharp,flow}``) deconvolved with their
TRUE flows, ``--batch`` at a time, by the identity-prior HQS ladder (β 0.02, 0.1, 0.5;
:func:`deconvolution.hqs.hqs_identity_prior`): mean PSNR (uint8 convention, :mod:`metrics`)
of the blurred input, of level 1 and of three levels, over the whole image and over the
interior (``--interior`` px cut from every side: the blurred images are "valid" blurs of a
larger window, which K with its replicate boundary cannot reproduce at the border). Zero-flow
pairs (2 % of the set) are left out (their blurred image is the sharp one). Seconds per image
leave out the first batch (tracing and XLA compilation).

Timings depend on the machine's other jobs: the load average is printed at the start and end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402
from benchmarks import peak  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "720x1280", "Operator table image size HEIGHTxWIDTH (GoPro: 720x1280).")
flags.DEFINE_list("u_max", ["23", "46"], "Flow limits (the flow-23 / flow-46 sets).")
flags.DEFINE_list("methods", ["csr", "sparse", "gather"], "BlurOperator methods to time.")
flags.DEFINE_list("cg_methods", ["csr"], "Methods whose CG solves are timed (slow for others).")
flags.DEFINE_integer("repeats", 3, "Timed K / Kᵀ applications after a warm-up (median).")
flags.DEFINE_list("tables", ["operator", "nonblind"], "Which tables to print.")
flags.DEFINE_integer("pairs", 20, "Non-blind table: test pairs per set.")
flags.DEFINE_integer("batch", 4, "Non-blind table: images per HQS call.")
flags.DEFINE_integer("interior", 16, "Non-blind table: border cut for the interior PSNR.")
flags.DEFINE_string("flow23_dir", None, "Read the flow-23 test pairs from this GOPRO_Large root.")
flags.DEFINE_string("flow46_dir", None, "Read the flow-46 test pairs from this GOPRO_Large root.")
flags.DEFINE_string("json", None, "Also write all rows to this JSON file.")
flags.DEFINE_string("child", None, "Internal: 'u_max:method', time one operator and print JSON.")
cli.declare_key_flags(
    ["size", "u_max", "methods", "cg_methods", "repeats", "tables", "pairs", "batch", "interior"]
    + ["flow23_dir", "flow46_dir", "json"]
)
BETAS = (0.02, 0.5)
LIST_FLAGS = ("u_max", "methods", "cg_methods", "tables")


@dataclasses.dataclass(frozen=True)
class DeconvolutionBenchmarkConfig:
    """One deconvolution.py run, read from the flags once (:func:`config_from_flags`); ``child``:
    the internal 'u_max:method' of a child process."""

    size: str = "720x1280"
    u_max: tuple[str, ...] = ("23", "46")
    methods: tuple[str, ...] = ("csr", "sparse", "gather")
    cg_methods: tuple[str, ...] = ("csr",)
    repeats: int = 3
    tables: tuple[str, ...] = ("operator", "nonblind")
    pairs: int = 20
    batch: int = 4
    interior: int = 16
    flow23_dir: str | None = None
    flow46_dir: str | None = None
    json: str | None = None
    child: str | None = None


def config_from_flags() -> DeconvolutionBenchmarkConfig:
    """deconvolution.py's flags as one :class:`DeconvolutionBenchmarkConfig`."""
    names = [field.name for field in dataclasses.fields(DeconvolutionBenchmarkConfig)]
    values = {name: FLAGS[name].value for name in names}
    for name in LIST_FLAGS:
        values[name] = tuple(values[name])
    return DeconvolutionBenchmarkConfig(**values)


def sharp_photo(height: int, width: int):
    """scikit-image's astronaut resized to (height, width), float32 RGB in [0, 1]."""
    import cv2
    import numpy as np
    import skimage.data

    image = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    return image.astype(np.float32) / 255


def timed(function, *args):
    """(seconds, result) of one call, results forced to host memory."""
    import tensorflow as tf

    start = time.perf_counter()
    result = function(*args)
    for value in tf.nest.flatten(result):
        value.numpy()
    return time.perf_counter() - start, result


def measure_operator(
    config: DeconvolutionBenchmarkConfig, u_max: float, method: str, height: int, width: int
) -> dict:
    """One row of the operator table (runs in a child process)."""
    import numpy as np
    import tensorflow as tf

    from data import motion_blur
    from deconvolution import hqs

    load = peak.load_average()
    flow = motion_blur.random_flow(np.random.default_rng(1), height, width, u_max, zero_prob=0)
    flows = tf.constant(flow[None])
    sharp = tf.constant(sharp_photo(height, width)[None])
    first, op = _build(flows, method)
    del op
    build, op = _build(flows, method)
    build_rss = peak.rss_gib()
    blurred = op.forward(sharp)
    row = {"u_max": u_max, "method": method, "first_build_seconds": first}
    row.update(build_seconds=build, taps_per_pixel=int(op.num_taps) / (height * width))
    for name, apply in (("forward", op.forward), ("adjoint", op.adjoint)):
        apply(blurred).numpy()
        seconds = [timed(apply, blurred)[0] for _ in range(config.repeats)]
        row[f"{name}_seconds"] = statistics.median(seconds)
    row["build_rss_gib"] = build_rss
    row["graph_forward_seconds"], row["graph_adjoint_seconds"] = graph_seconds(flows, method, sharp)
    if method in config.cg_methods:
        for beta in BETAS:
            seconds, (_, iterations) = timed(hqs.solve_data_term, blurred, blurred, op, beta)
            row[f"cg_{beta}"] = {"seconds": seconds, "iterations": int(iterations)}
    row.update(peak_rss_gib=peak.rss_gib(), load=[load, peak.load_average()])
    return row


def graph_seconds(flows, method, image, count=3):
    """Seconds of one K and one Kᵀ when the operator is built and applied inside a tf.function:
    (time of build + 1 + ``count`` applications − time of build + 1 application) / ``count``
    (with no application at all, the graph would prune the matrix construction)."""
    import tensorflow as tf

    from deconvolution.blur_operator import BlurOperator

    def run(flows, x, times, name):
        op = BlurOperator(flows, method)
        total = tf.cast(op.num_taps, tf.float32) * 0.0
        for _ in range(times):
            x = getattr(op, name)(x)
        return x + total

    result = []
    for name in ("forward", "adjoint"):
        seconds = []
        for times in (1, 1 + count):
            function = tf.function(lambda f, x, t=times, n=name: run(f, x, t, n))
            function(flows, image).numpy()
            seconds.append(timed(function, flows, image)[0])
        result.append((seconds[1] - seconds[0]) / count)
    return result


def _build(flows, method):
    """(seconds, operator): an eagerly built BlurOperator (eager ops run synchronously)."""
    from deconvolution.blur_operator import BlurOperator

    start = time.perf_counter()
    op = BlurOperator(flows, method)
    op.num_taps.numpy()
    return time.perf_counter() - start, op


def run_child(config: DeconvolutionBenchmarkConfig, u_max: str, method: str) -> dict:
    """:func:`measure_operator` in a fresh interpreter (its flags from ``config``); an error row
    if it fails."""
    command = [sys.executable, os.path.abspath(__file__), f"--child={u_max}:{method}"]
    command += [f"--size={config.size}", f"--repeats={config.repeats}"]
    command += [f"--cg_methods={','.join(config.cg_methods)}"]
    return peak.run_json_child(command, {"u_max": float(u_max), "method": method})


def print_operator_table(rows, height, width, repeats):
    """The operator rows as a markdown table, after a line naming the size and ``repeats``."""
    print(f"\nK, Kᵀ and CG at {height}x{width}, batch 1, 3 channels (median of {repeats})")
    header = ["u_max", "method", "taps/px", "build s (first)", "K s", "Kᵀ s", "graph K / Kᵀ s"]
    header += [f"CG β={b} its / s" for b in BETAS] + ["RSS after build GiB", "peak RSS GiB"]
    lines = [header]
    for row in rows:
        if "error" in row:
            lines.append([f"{row['u_max']:g}", row["method"], "failed", row["error"]])
            lines[-1] += [""] * (len(header) - 4)
            continue
        cg = [row.get(f"cg_{b}") for b in BETAS]
        lines.append(
            [
                f"{row['u_max']:g}",
                row["method"],
                f"{row['taps_per_pixel']:.1f}",
                f"{row['build_seconds']:.2f} ({row['first_build_seconds']:.2f})",
                f"{row['forward_seconds']:.3f}",
                f"{row['adjoint_seconds']:.3f}",
                f"{row['graph_forward_seconds']:.3f} / {row['graph_adjoint_seconds']:.3f}",
                *[f"{c['iterations']} / {c['seconds']:.1f}" if c else "-" for c in cg],
                f"{row['build_rss_gib']:.2f}",
                f"{row['peak_rss_gib']:.2f}",
            ]
        )
    peak.print_markdown(lines)


def flow_pairs(u_max: float, count: int, root: str | None):
    """(blur uint8, sharp uint8, signed flow float32) of ``count`` non-zero-flow test pairs."""
    import numpy as np

    if root is not None:
        return list(_read_pairs(root, count))
    from data import synthetic

    cfg = synthetic.SynthConfig(kind="flow", u_max=u_max, size=256, seed=0)
    pairs, index = [], 0
    while len(pairs) < count:
        pair = synthetic.make_flow_pair(cfg, "test", index)
        index += 1
        if np.any(pair["flow"]):
            pairs.append((pair["blur"], pair["sharp"], pair["flow"]))
    return pairs


def _read_pairs(root: str, count: int):
    """(blur, sharp, flow) of the first ``count`` non-zero-flow test pairs under ``root``."""
    import numpy as np

    from data import flow_pipeline, image_io

    for blur_path, flow_path in flow_pipeline.flow_examples(root, "test"):
        if count == 0:
            return
        head, frame = os.path.split(blur_path)
        sharp_path = os.path.join(os.path.dirname(head), "sharp", frame)
        flow = np.load(flow_path).astype(np.float32)
        if np.any(flow):
            count -= 1
            yield image_io.decode_rgb(blur_path), image_io.decode_rgb(sharp_path), flow


def nonblind_row(config: DeconvolutionBenchmarkConfig, u_max: float, root: str | None) -> dict:
    """Mean PSNR of blurred / level 1 / three levels with the true flows."""
    import numpy as np

    import metrics
    from deconvolution import hqs

    pairs = flow_pairs(u_max, config.pairs, root)
    border = config.interior
    cut = np.s_[border : -border or None, border : -border or None]
    scores = {key: [] for key in ("blurred", "level1", "level3")}
    interior = {key: [] for key in scores}
    iterations, seconds = [], []
    for first in range(0, len(pairs), config.batch):
        start = time.perf_counter()
        batch = pairs[first : first + config.batch]
        blur = np.stack([b for b, _, _ in batch]).astype(np.float32) / 255
        flows = np.stack([f for _, _, f in batch])
        levels, counts = hqs.hqs_identity_prior(blur, flows, with_iterations=True)
        iterations.append([int(c) for c in counts])
        seconds.append((time.perf_counter() - start) / len(batch))
        for n, (blurred, sharp, _) in enumerate(batch):
            outputs = {
                "blurred": blurred,
                "level1": metrics.to_uint8(levels[0][n]),
                "level3": metrics.to_uint8(levels[-1][n]),
            }
            for key, image in outputs.items():
                scores[key].append(metrics.psnr(image, sharp))
                interior[key].append(metrics.psnr(image[cut], sharp[cut]))
    row = {"u_max": u_max, "pairs": len(pairs), "source": root or "make_flow_pair (seed 0)"}
    for key in scores:
        row[key] = metrics.average_psnr(scores[key])["psnr"]
        row[f"{key}_interior"] = metrics.average_psnr(interior[key])["psnr"]
    row["iterations_mean"] = np.mean(iterations, axis=0).round(1).tolist()
    # The first batch also traces the function and compiles the XLA kernels.
    row["seconds_per_image"] = statistics.mean(seconds[1:] or seconds)
    return row


def print_nonblind_table(rows, interior):
    """The non-blind rows as a markdown table, after a line naming ``interior``."""
    print(
        f"\nNon-blind HQS with the true flows (identity prior, β 0.02 / 0.1 / 0.5), 256², "
        f"mean PSNR dB (interior: {interior} px cut per side)"
    )
    header = ["set", "pairs", "blurred", "level 1", "3 levels", "blurred (int.)"]
    header += ["level 1 (int.)", "3 levels (int.)", "CG its per level", "s / image"]
    lines = [header]
    for row in rows:
        lines.append(
            [
                f"flow-{row['u_max']:g}",
                str(row["pairs"]),
                *[f"{row[k]:.2f}" for k in ("blurred", "level1", "level3")],
                *[f"{row[k + '_interior']:.2f}" for k in ("blurred", "level1", "level3")],
                " / ".join(f"{v:g}" for v in row["iterations_mean"]),
                f"{row['seconds_per_image']:.1f}",
            ]
        )
    peak.print_markdown(lines)


def validate(config: DeconvolutionBenchmarkConfig):
    """The config as (height, width, [u_max floats]); ValueError naming a bad flag."""
    height, width = peak.parse_size(config.size, minimum=16)
    try:
        limits = [float(v) for v in config.u_max]
    except ValueError:
        raise ValueError(f"--u_max {list(config.u_max)}: expected numbers") from None
    if not limits or min(limits) <= 0:
        raise ValueError("--u_max: values must be positive")
    known = ("csr", "sparse", "gather")
    for name in ("methods", "cg_methods"):
        unknown = sorted(set(getattr(config, name)) - set(known))
        if unknown:
            raise ValueError(f"--{name}: unknown {unknown}; choices: {list(known)}")
    unknown = sorted(set(config.tables) - {"operator", "nonblind"})
    if unknown:
        raise ValueError(f"--tables: unknown {unknown}; choices: ['operator', 'nonblind']")
    if config.repeats < 1 or config.pairs < 1 or config.batch < 1 or config.interior < 0:
        raise ValueError("--repeats, --pairs and --batch must be positive, --interior >= 0")
    for name in ("flow23_dir", "flow46_dir"):
        folder = getattr(config, name)
        if folder is not None and not os.path.isdir(os.path.join(folder, "test")):
            raise ValueError(f"--{name} {folder!r}: no 'test' folder there")
    return height, width, limits


def operator_rows(config: DeconvolutionBenchmarkConfig) -> list[dict]:
    """The operator table's rows: every (u_max, method) in its own child process."""
    rows = []
    for u_max in config.u_max:
        for method in config.methods:
            row = run_child(config, u_max, method)
            print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def nonblind_rows(config: DeconvolutionBenchmarkConfig, limits) -> list[dict]:
    """The non-blind table's rows, one per flow limit; exits on a data error."""
    cli.import_tensorflow()
    from data.errors import DataError

    roots = {23.0: config.flow23_dir, 46.0: config.flow46_dir}
    rows = []
    for u_max in limits:
        try:
            row = nonblind_row(config, u_max, roots.get(u_max))
        except DataError as error:
            sys.exit(f"deconvolution.py: error: {error}")
        print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def main(argv):
    del argv
    config = config_from_flags()
    try:
        height, width, limits = validate(config)
    except ValueError as error:
        sys.exit(f"deconvolution.py: error: {error}")
    if config.child:
        u_max, method = config.child.split(":")
        cli.import_tensorflow()
        print(json.dumps(measure_operator(config, float(u_max), method, height, width)))
        return
    print(peak.describe_machine())
    rows = {"operator": [], "nonblind": []}
    if "operator" in config.tables:
        rows["operator"] = operator_rows(config)
        print_operator_table(rows["operator"], height, width, config.repeats)
    if "nonblind" in config.tables:
        rows["nonblind"] = nonblind_rows(config, limits)
        print_nonblind_table(rows["nonblind"], config.interior)
    peak.print_end_load()
    if config.json:
        from fileio import atomic_write_json

        atomic_write_json(config.json, rows)


if __name__ == "__main__":
    cli.run(main)
