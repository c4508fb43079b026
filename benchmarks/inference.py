"""Inference cost of every registered model as a fraction of this machine's fp32 matmul peak,
with and without XLA.

    python benchmarks/inference.py [--models mimo_unet,idc] [--size 720x1280] [--xla both|on|off]
        [--precision float32,bfloat16] [--json rows.json]

Every (model, XLA on/off) pair runs in a fresh subprocess (peak memory is then the model's own),
the two settings of one model back to back, in alternating order (so that a change in the
machine's load does not always favour the same one). Each subprocess:

1. measures the machine's fp32 matmul peak in the same process (:mod:`benchmarks.peak`);
2. builds the model (random weights), runs one forward of a single H x W image through the same
   function ``evaluate.py`` and ``deblur.py`` use (``inference.sources.image_function`` over
   ``models.inference.restore``; a ``tf.function`` of a (1, H, W, 3) input, XLA-compiled or not),
   as a warm-up (tracing and compilation: "first s"), then the median of ``--repeats`` forwards;
3. measures the peak again; the larger of the two is the row's peak.

The models are the registry's (:func:`models.model_names`: ``gradientnet``, ``idc``,
``mimo_unet``, ``mimo_unet_plus``, ``two_way``, at full width); for the GradientNet GAN that is the
generator alone (3,496,759 parameters, 451.22 GMAC at 720x1280, as
:func:`models.gradientnet.multiply_adds`), the critic having no part in inference. The flow
estimators follow (``models.FLOW_ESTIMATOR_BUILDERS``: ``sen``, the default two stacks at full
width, 76,974,030 parameters), run the way ``evaluate_flow.py`` and ``show_flow.py`` run them
(:func:`inference.flow_io.estimate_flow`: padded to a multiple of 64, so 720x1280 costs
768x1280, 626.25 GMAC, and cropped back). SEN is slow on a CPU; ``--models sen`` alone.
``--models framework`` (never in the default list: minutes per image) adds the whole blind
deblurring framework of Wu et al. (SEN + K + CG + RP-GAN's G, levels 3, one global iteration),
timed by ``benchmarks/framework.py`` in its own process with the share of each part.

Printed per row: parameters, the analytic multiply-adds of one forward (convolution weights only,
transposed convolutions by input pixels; :mod:`models.flops`), seconds, effective GFLOP/s
(2 x multiply-adds / seconds), the fraction of the peak, peak resident memory; then, per model,
which setting is faster. Timings depend on the other jobs of the machine: the load average is
printed at the start and the end, and fractions of a peak measured at the same moment are the
numbers to compare across machines.

``--precision`` (a comma list of float32, bfloat16, float16; :mod:`precision`) runs every row in
each precision, each in its own process with the Keras policy set before the model is built, and
prints each precision's speed-up over float32 measured in the same run. bfloat16 is native on CPUs
with ``avx512_bf16`` or ``amx_bf16`` (the first line prints the CPU's flags) and emulated, slower
than float32, elsewhere. ``--json FILE`` writes one object per row with ``model``,
``precision``, ``xla``, ``seconds`` (median), ``fraction_of_peak`` and the rest of the row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402
from benchmarks import peak  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models", None, "Registry names to benchmark, restorers or flow estimators (default: all)."
)
flags.DEFINE_string("size", "720x1280", "Image size HEIGHTxWIDTH (GoPro: 720x1280).")
flags.DEFINE_integer("repeats", 3, "Timed forwards after the warm-up (median reported).")
flags.DEFINE_enum("xla", "both", ["both", "on", "off"], "Time with XLA, without, or both.")
flags.DEFINE_list(
    "precision",
    ["float32"],
    "Comma list of float32, bfloat16, float16, each row in each (bfloat16 is native only with "
    "avx512_bf16 / amx_bf16; emulated, slower than float32, on other CPUs).",
)
flags.DEFINE_integer("peak_n", 4096, "Side of the fp32 matmul that measures the peak.")
flags.DEFINE_integer("peak_repeats", 5, "Timed matmuls of the peak measurement (best kept).")
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
flags.DEFINE_string("child", None, "Internal: 'name:0|1', benchmark one model and print JSON.")
cli.declare_key_flags(
    ["models", "size", "repeats", "xla", "precision", "peak_n", "peak_repeats", "json"]
)


@dataclasses.dataclass(frozen=True)
class InferenceBenchmarkConfig:
    """One inference.py run, read from the flags once (:func:`config_from_flags`); ``models``
    None: every registered model; ``child``: the internal 'name:0|1:precision' of a child
    process."""

    models: tuple[str, ...] | None = None
    size: str = "720x1280"
    repeats: int = 3
    xla: str = "both"
    precision: tuple[str, ...] = ("float32",)
    peak_n: int = 4096
    peak_repeats: int = 5
    json: str | None = None
    child: str | None = None


def config_from_flags() -> InferenceBenchmarkConfig:
    """inference.py's flags as one :class:`InferenceBenchmarkConfig`."""
    names = [field.name for field in dataclasses.fields(InferenceBenchmarkConfig)]
    values = {name: FLAGS[name].value for name in names}
    if values["models"] is not None:
        values["models"] = tuple(values["models"])
    values["precision"] = tuple(values["precision"])
    return InferenceBenchmarkConfig(**values)


def measure(
    config: InferenceBenchmarkConfig,
    name: str,
    height: int,
    width: int,
    jit_compile: bool,
    dtype: str = "float32",
) -> dict:
    """Peak, then ``name``'s forward in precision ``dtype``, then the peak again, all in this
    process."""
    import numpy as np
    import tensorflow as tf

    import precision

    precision.set_precision(dtype)
    load_start = peak.load_average()
    peak_before = peak.matmul_peak(config.peak_n, config.peak_repeats)
    model, forward, macs = build_forward(name, height, width, jit_compile)
    image = tf.constant(np.random.default_rng(0).random((1, height, width, 3), np.float32))
    start = time.perf_counter()
    forward(image).numpy()
    first = time.perf_counter() - start
    seconds = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        forward(image).numpy()
        seconds.append(time.perf_counter() - start)
    peak_after = peak.matmul_peak(config.peak_n, config.peak_repeats)
    best_peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    median = statistics.median(seconds)
    gflops = 2 * macs / median / 1e9
    return {
        "model": name,
        "precision": dtype,
        "xla": jit_compile,
        "parameters": int(model.count_params()),
        "gmac": macs / 1e9,
        "first_seconds": first,
        "seconds": median,
        "all_seconds": seconds,
        "gflops": gflops,
        "peak_gflops": best_peak["gflops"],
        "peak_gflops_before_after": [peak_before["gflops"], peak_after["gflops"]],
        "fraction_of_peak": peak.fraction(gflops, best_peak),
        "peak_rss_gib": peak.rss_gib(),
        "load": [load_start, peak.load_average()],
    }


def build_forward(name: str, height: int, width: int, jit_compile: bool):
    """(model, the forward the commands use, its analytic MACs) of a restorer or flow estimator."""
    import models
    from inference import flow_io, sources
    from models import flops, inference

    if name in flow_estimator_names():
        model = models.build_flow_estimator(name)
        function = lambda x: flow_io.estimate_flow(model, x)  # noqa: E731
    else:
        model = models.build_model(name)
        function = lambda x: inference.restore(model, x)  # noqa: E731
    model.build((None, None, None, 3))
    macs = flops.count_macs(model, height, width)  # padded to the model's multiple, as run
    return model, sources.image_function(function, jit_compile=jit_compile), macs


def flow_estimator_names() -> list[str]:
    """The registered flow estimators' names (``models.FLOW_ESTIMATOR_BUILDERS``)."""
    import models

    return sorted(getattr(models, "FLOW_ESTIMATOR_BUILDERS", {}))


def run_child(
    config: InferenceBenchmarkConfig, name: str, jit_compile: bool, dtype: str = "float32"
) -> dict:
    """Runs :func:`measure` in a fresh interpreter (its flags from ``config``); an error row if
    it fails."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--child={name}:{int(jit_compile)}:{dtype}",
        f"--size={config.size}",
        f"--repeats={config.repeats}",
        f"--peak_n={config.peak_n}",
        f"--peak_repeats={config.peak_repeats}",
    ]
    return peak.run_json_child(command, {"model": name, "xla": jit_compile, "precision": dtype})


def check_precisions(names) -> None:
    """Raises ``ValueError`` naming ``--precision`` values that are not precisions."""
    import precision

    unknown = sorted(set(names) - set(precision.PRECISIONS))
    if unknown or not names:
        choices = list(precision.PRECISIONS)
        raise ValueError(f"--precision: unknown {unknown}; choose from {choices}")


def settings(xla: str) -> list[bool]:
    """The jit_compile settings of ``--xla`` (both, on or off)."""
    return {"both": [False, True], "on": [True], "off": [False]}[xla]


def run_all(config: InferenceBenchmarkConfig, names) -> list[dict]:
    """Every model under every setting and precision; the settings of a model in alternating
    order."""
    rows = []
    for index, name in enumerate(names):
        order = settings(config.xla) if index % 2 == 0 else settings(config.xla)[::-1]
        for jit_compile in order:
            for dtype in config.precision:
                row = run_child(config, name, jit_compile, dtype)
                rows.append(row)
                print(f"  {_summary(row)}", file=sys.stderr, flush=True)
    return rows


def _summary(row) -> str:
    """One progress line of a row."""
    setting = ("XLA" if row["xla"] else "no XLA") + f", {row.get('precision', 'float32')}"
    if "error" in row:
        return f"{row['model']} ({setting}): failed: {row['error']}"
    return (
        f"{row['model']} ({setting}): {row['seconds']:.2f} s, {row['gflops']:.1f} GFLOP/s, "
        f"{100 * row['fraction_of_peak']:.0f} % of {row['peak_gflops']:.0f}"
    )


def print_table(rows, height, width, repeats):
    """The rows as a markdown table, after a line naming the size and ``repeats``."""
    print(f"Inference at {height}x{width}, batch 1, median of {repeats} after a warm-up")
    header = ["model", "precision", "XLA", "parameters", "GMAC", "first s", "seconds", "GFLOP/s"]
    header += ["peak GFLOP/s", "of peak", "peak RSS GiB", "load"]
    lines = [header]
    for row in rows:
        setting = "on" if row["xla"] else "off"
        dtype = row.get("precision", "float32")
        if "error" in row:
            lines.append([row["model"], dtype, setting, "failed", row["error"]] + [""] * 7)
            continue
        lines.append(
            [
                row["model"],
                dtype,
                setting,
                f"{row['parameters']:,}",
                f"{row['gmac']:,.2f}",
                f"{row['first_seconds']:.2f}",
                f"{row['seconds']:.2f}",
                f"{row['gflops']:.1f}",
                f"{row['peak_gflops']:.1f}",
                f"{100 * row['fraction_of_peak']:.0f} %",
                f"{row['peak_rss_gib']:.2f}",
                "-".join(f"{v:.1f}" for v in row["load"]),
            ]
        )
    peak.print_markdown(lines)


def print_comparison(rows):
    """Per model (float32 rows): seconds without and with XLA and which is faster; then the
    verdict."""
    by_model = {}
    for row in rows:
        if "error" not in row and row.get("precision", "float32") == "float32":
            by_model.setdefault(row["model"], {})[row["xla"]] = row
    pairs = {name: r for name, r in by_model.items() if len(r) == 2}
    if not pairs:
        return
    lines = [["model", "no XLA s", "XLA s", "no XLA of peak", "XLA of peak", "faster"]]
    faster_without = 0
    for name, pair in pairs.items():
        off, on = pair[False], pair[True]
        ratio = off["seconds"] / on["seconds"]
        if ratio >= 1:
            verdict = f"XLA, {ratio:.2f}x"
        else:
            verdict = f"no XLA, {1 / ratio:.2f}x"
            faster_without += 1
        lines.append(
            [
                name,
                f"{off['seconds']:.2f}",
                f"{on['seconds']:.2f}",
                f"{100 * off['fraction_of_peak']:.0f} %",
                f"{100 * on['fraction_of_peak']:.0f} %",
                verdict,
            ]
        )
    print()
    peak.print_markdown(lines)
    print(f"Faster without XLA for {faster_without} of {len(pairs)} models.")


FRAMEWORK = "framework"  # SEN + K + CG + G of Wu et al.: benchmarks/framework.py


def run_framework_benchmark(size: str, precisions=("float32",)):
    """The framework's rows (``--models framework``): ``benchmarks/framework.py`` at ``size``
    (``--size``), levels 3, one global iteration, in each precision, in its own process (seconds
    and the shares of SEN, K, CG, G)."""
    script = os.path.join(ROOT, "benchmarks", "framework.py")
    print("\nThe blind deblurring framework (benchmarks/framework.py):", flush=True)
    command = [sys.executable, script, "--size", size, "--precision", ",".join(precisions)]
    subprocess.run(command, check=False)


def main(argv):
    del argv
    config = config_from_flags()
    try:
        height, width = peak.parse_size(config.size)
        if config.repeats < 1 or config.peak_n < 1 or config.peak_repeats < 1:
            raise ValueError("--repeats, --peak_n and --peak_repeats must be positive")
        check_precisions(config.precision)
    except ValueError as error:
        sys.exit(f"inference.py: error: {error}")
    if config.child:
        name, jit_compile, dtype = config.child.split(":")
        cli.import_tensorflow()
        print(json.dumps(measure(config, name, height, width, bool(int(jit_compile)), dtype)))
        return
    cli.import_tensorflow()
    import models

    registered = models.model_names() + flow_estimator_names()
    names = config.models or registered
    unknown = sorted(set(names) - set(registered) - {FRAMEWORK})
    if unknown:
        sys.exit(
            f"inference.py: error: --models: unknown {unknown}; registered: {registered} "
            f"(and {FRAMEWORK!r})"
        )
    print(peak.describe_machine())
    models_only = [n for n in names if n != FRAMEWORK]
    rows = []  # the framework's own benchmark prints its table and writes no rows here
    if models_only:
        rows = run_all(config, models_only)
        print_table(rows, height, width, config.repeats)
        print_comparison(rows)
        xla = {False: "XLA off", True: "XLA on"}
        peak.print_speedups(rows, key=lambda r: (r["model"], xla[r["xla"]]))
    if FRAMEWORK in names:
        run_framework_benchmark(config.size, config.precision)
    peak.print_end_load()
    if config.json:
        from fileio import atomic_write_json

        atomic_write_json(config.json, rows)


if __name__ == "__main__":
    cli.run(main)
