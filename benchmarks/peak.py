"""The machine's own yardstick for the benchmarks: its fp32 matmul peak, its CPU, its load.

Absolute seconds say little across machines (a 2-core AVX2 laptop and a 2-core AVX-512/AMX
server differ by several times), so every benchmark measures, in the same process and just before
its own timing, the throughput of one large fp32 ``tf.linalg.matmul`` (n x n by n x n,
``2 n^3`` flops; best of several after a warm-up) and reports its models as a *fraction of that
peak*. The matmul runs on TensorFlow's default thread pools, as the models do; it is the best
a dense fp32 kernel of this TensorFlow build reaches on this machine at this moment, not the
datasheet's FMA peak.

    python benchmarks/peak.py [--n 4096] [--repeats 5]

also prints the CPU model, its SIMD / matrix flags (``/proc/cpuinfo``) and the load average.

The benchmarks' shared helpers live here too: the Markdown table printer, the peak resident
memory, the closing load-average line and the JSON-printing child process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time

# The flags that decide fp32 / bf16 convolution speed, widest last.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """CPU model, logical cores and which of :data:`ISA_FLAGS` the CPU reports.

    Returns:
        ``{"model": str, "cores": int, "flags": [names in ISA_FLAGS order]}``; on a system without
        ``/proc/cpuinfo`` the model comes from :mod:`platform` and the flags list is empty.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": [f for f in ISA_FLAGS if f in flags],
    }


def load_average() -> float:
    """The 1-minute load average (runnable processes; above the core count means sharing)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def print_end_load():
    """The benchmarks' last line: the load average now (the start's is in the header)."""
    print(f"load average at the end: {load_average():.2f}")


def rss_gib() -> float:
    """Peak resident set size of this process so far, GiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_peak(n: int = 4096, repeats: int = 5) -> dict:
    """Measures the fp32 matmul throughput of this machine with TensorFlow, in this process.

    One ``tf.function`` (no XLA) computes ``sum(A @ B)`` for two (n, n) float32 uniform matrices;
    the sum forces completion and costs n^2, nothing beside 2 n^3. One warm-up call, then the
    fastest of ``repeats`` (the least disturbed by other jobs).

    Returns:
        ``{"n", "seconds" (best), "gflops" (2 n^3 / best), "median_gflops", "load"}``.
    """
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2), dtype=tf.float32)
    b = tf.random.stateless_uniform((n, n), seed=(3, 4), dtype=tf.float32)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    product(a, b).numpy()
    seconds = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        product(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    flops = 2.0 * n**3
    return {
        "n": n,
        "seconds": seconds[0],
        "gflops": flops / seconds[0] / 1e9,
        "median_gflops": flops / seconds[len(seconds) // 2] / 1e9,
        "load": load_average(),
    }


def describe_machine(info: dict | None = None) -> str:
    """One line: CPU model, cores, ISA flags and the current load average."""
    info = info or cpu_info()
    flags = ", ".join(info["flags"]) or "none of " + ", ".join(ISA_FLAGS)
    return (
        f"CPU: {info['model']}, {info['cores']} logical cores; flags: {flags}; "
        f"{bfloat16_note(info)}; load average {load_average():.2f}"
    )


def bfloat16_note(info: dict | None = None) -> str:
    """Whether this CPU computes bfloat16 natively (``avx512_bf16`` / ``amx_bf16``) or emulates
    it (slower than float32)."""
    import precision

    info = info or cpu_info()
    native = [flag for flag in precision.NATIVE_BF16_FLAGS if flag in info["flags"]]
    if native:
        return f"bfloat16 native ({', '.join(native)})"
    return "bfloat16 emulated (no avx512_bf16 / amx_bf16: slower than float32 here)"


def print_speedups(rows, key) -> None:
    """For rows of several precisions: each non-float32 row's speed-up over the float32 row with
    the same ``key(row)`` (model and settings), measured in this run. Prints nothing otherwise."""
    reference = {key(r): r for r in rows if r.get("precision") == "float32" and "error" not in r}
    lines = [["model", "setting", "precision", "seconds", "float32 seconds", "speed-up"]]
    for row in rows:
        base = reference.get(key(row))
        if row.get("precision", "float32") == "float32" or base is None or "error" in row:
            continue
        setting = ", ".join(str(part) for part in key(row)[1:])
        speedup = base["seconds"] / row["seconds"]
        lines.append(
            [row["model"], setting, row["precision"], f"{row['seconds']:.2f}"]
            + [f"{base['seconds']:.2f}", f"{speedup:.2f}x"]
        )
    if len(lines) > 1:
        print(f"\nSpeed-up over float32 (same run; {bfloat16_note()}):")
        print_markdown(lines)


def fraction(gflops: float, peak: dict) -> float:
    """A throughput as a fraction of a :func:`matmul_peak` result."""
    return gflops / peak["gflops"]


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """``"720x1280"`` -> (720, 1280) for the benchmarks' ``--size``; raises ``ValueError`` naming
    the flag."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 720x1280") from None
    if height < minimum or width < minimum:
        raise ValueError(f"--size {text!r}: sides must be at least {minimum}")
    return height, width


def print_markdown(lines, align: str = "right"):
    """Prints rows of cells as a Markdown table (first row = header), each column padded to its
    widest cell, right-aligned (numbers) or with ``align="left"``; cells go through ``str``."""
    justify = {"right": str.rjust, "left": str.ljust}[align]
    cells = [[str(cell) for cell in line] for line in lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    for index, line in enumerate(cells):
        print("| " + " | ".join(justify(c, w) for c, w in zip(line, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def run_json_child(command: list[str], error_row: dict) -> dict:
    """Runs a benchmark's child process (TensorFlow's C++ log silenced) and returns the last line
    of its stdout that is a JSON object; if it fails or prints none, ``error_row`` plus
    ``"error"``: the last line of its stderr."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    rows = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not rows:
        error = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {**error_row, "error": error}
    return json.loads(rows[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="matrix side")
    parser.add_argument("--repeats", type=int, default=5, help="timed products (best reported)")
    args = parser.parse_args()
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be positive")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(describe_machine())
    peak = matmul_peak(args.n, args.repeats)
    print(
        f"fp32 matmul {peak['n']}x{peak['n']}: {peak['gflops']:.1f} GFLOP/s best "
        f"({peak['median_gflops']:.1f} median of {args.repeats}), load average {peak['load']:.2f}"
    )


if __name__ == "__main__":
    import sys

    # Run as a script: the repository root (precision.py, for the bfloat16 note) on the path, as
    # the other benchmarks put it.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
