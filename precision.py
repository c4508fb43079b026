"""Numeric precision of the networks: ``--precision float32|bfloat16|float16`` of every command.

A precision names a Keras mixed-precision policy (``keras.mixed_precision``):

* ``float32`` — the papers' (default): everything in float32.
* ``bfloat16`` — policy ``mixed_bfloat16``: variables in float32, convolutions and activations in
  bfloat16. Fast on CPUs with native bf16 (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``),
  NVIDIA Ampere and later GPUs and TPUs; **emulated, and slower than float32, on CPUs without it**
  (AVX2-only, most AVX-512 CPUs before 2020).
* ``float16`` — policy ``mixed_float16``: as bfloat16 with float16 activations (tensor cores of
  NVIDIA GPUs before Ampere). Training wraps every optimizer in
  ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling, :mod:`training.optimizers`).

What stays float32 whatever the precision: variables (so checkpoints and weight files do not depend
on it), every model's outputs (each model casts its outputs to float32,
:func:`models.blocks.float32_outputs`), losses, metrics, the FFT loss, the Wasserstein and
gradient-penalty terms, the blur operator K / Kᵀ and the conjugate-gradient data step.

Keras policies are process-wide: a command sets one with :func:`set_precision` at its entry point,
before any network is built (a layer takes the policy in force when it is created).
No TensorFlow here (Keras only), so the commands can check ``--precision`` before TF starts.
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("float32", "bfloat16", "float16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# CPU flags (/proc/cpuinfo) under which bfloat16 convolutions run natively (oneDNN).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

HELP = (
    "Network compute precision: float32 (the papers'), bfloat16 or float16 (Keras mixed "
    "precision: variables, losses, metrics and the deconvolution stay float32). bfloat16 is fast "
    "on CPUs with avx512_bf16 / amx_bf16, Ampere+ GPUs and TPUs, and emulated (slower than "
    "float32) on other CPUs; float16 is for NVIDIA GPUs (training uses dynamic loss scaling)."
)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ``ValueError`` (one line)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}."
        )
    return precision


def policy_name(precision: str) -> str:
    """The Keras policy name of a precision (``"bfloat16"`` -> ``"mixed_bfloat16"``)."""
    return POLICIES[check_precision(precision)]


def set_precision(precision: str) -> str:
    """Sets Keras' global dtype policy for ``precision``; returns the precision in force before.
    Networks built afterwards compute in it."""
    import keras

    previous = current_precision()
    keras.mixed_precision.set_global_policy(policy_name(precision))
    return previous


def current_precision() -> str:
    """The precision of Keras' global policy (``"float32"`` for a plain float32 policy)."""
    import keras

    name = keras.mixed_precision.global_policy().name
    for precision, policy in POLICIES.items():
        if name == policy:
            return precision
    return name


@contextlib.contextmanager
def precision_scope(precision: str):
    """Sets ``precision`` for the block and restores the previous policy afterwards (tests,
    benchmarks; commands call :func:`set_precision` once)."""
    previous = set_precision(precision)
    try:
        yield
    finally:
        set_precision(previous)


def cpu_flags(path: str = "/proc/cpuinfo") -> set:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` does not exist)."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def native_bfloat16(path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bfloat16 natively (one of :data:`NATIVE_BF16_FLAGS`)."""
    return bool(cpu_flags(path) & set(NATIVE_BF16_FLAGS))
