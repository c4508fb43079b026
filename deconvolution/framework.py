"""The blind deblurring framework of Wu et al. as one TensorFlow callable (``sen_rpgan.md`` §1,
§6, §10; register items #20, #21, #24): SEN estimates a motion flow, the flow defines the blur
operator K, and the HQS ladder alternates the CG data step with the RP-GAN generator G.

Layout: images float32 (N, H, W, 3) in [0, 1], any N, H, W (SEN pads to multiples of 64 and G to
multiples of 4 inside their calls, by edge replication, and crop back); flows float32
(N, H, W, 2) in pixels (u right, v down; SEN's ``uv_half`` flows give the same K, since
K(u, v) = K(−u, −v)).

Per global iteration g = 1..``global_iterations`` (§10):

1. U = SEN(O), real-valued (no rounding at inference, §10.2); with ``flow_source="true"`` the given
   true flow is used instead, **in the first global iteration only** (it is the flow of the
   original O; once O has been replaced by a restored image, that flow no longer describes it,
   so later iterations estimate U = SEN(O) from the new O, which needs a SEN).
2. K = :class:`deconvolution.blur_operator.BlurOperator` (U), built once per global iteration.
3. Z₀ = O; for n = 1..N (``levels``): I*_n = CG(β_n; Z_{n−1})
   (:func:`deconvolution.hqs.solve_data_term`: warm start Z_{n−1}, tolerance ``cg_tol``, at most
   ``cg_max_iter`` iterations, clamped to [0, 1]; register #21), and
   Z_n = clip(G(concat(I*_n, O)), 0, 1) (register #13: G is linear, clipped when used as Z).
   β ladder β_n = 0.02·5^{n−1} (register #20) unless ``betas`` is given.
4. O ← Z_N **everywhere** (SEN input, data term, G's conditioning; register #24 default).

``generator=None`` is the identity prior (Z_n = I*_n): non-blind HQS, the reference rows of the
experiments (with ``flow_source="true"`` it equals :func:`deconvolution.hqs.hqs_identity_prior`).

Precision: SEN and G may compute in bfloat16 or float16 (a Keras mixed policy,
``precision.set_precision``); their outputs are cast to float32 here (whatever the models do)
before K is built and before CG, and the images the framework is given are cast to float32:
K, Kᵀ and CG are float32 always (the data step is a linear solve; bfloat16's 8-bit significand,
a relative rounding of 4e-3, is far coarser than CG's 1e-5 tolerance). G takes the float32
concat(I*_n, O) and casts it to its compute dtype itself.

Runs eagerly (K as TensorFlow's CSR matrix, the fastest single K on a quiet CPU at 720x1280) or
inside a ``tf.function`` with dynamic N, H, W (K as a ``tf.SparseTensor`` with
``sparse_dense_matmul``; see :mod:`deconvolution.blur_operator`), so a ``tf.Module`` wrapping
the framework exports as one SavedModel, CG included (``tests/test_framework.py``: the module tracks
:attr:`BlindDeblurFramework.variables` and the serving ``tf.function`` is passed as a signature,
as ``export.py`` does, so saving does not re-trace every Keras layer). The loops over levels and
global iterations are Python loops (unrolled when traced); CG's own loop is a ``tf.while_loop``.

Measured once (256x256, full-width SEN and G with random weights, a smooth 2-14 px flow, levels 3,
CPU shared with other jobs): eagerly 4.2-4.4 s (SEN 1.1, K 0.09, CG 0.5 for 36 / 18 / 9
iterations, G 2.5-2.8 for three passes), traced ``tf.function`` 3.4 s. With tiny networks, where
CG dominates, the traced framework was 3-4.5x faster than the eager one at 256x256 and 720x1280
(``inference/framework_io.py``): eagerly every CG iteration is a round of Python-dispatched ops.
So its users (evaluation, export, training validation, the cache's and buffer's solves through
:func:`deconvolution.hqs.traced_data_solver`) trace it.
"""

from __future__ import annotations

import functools
import time

import tensorflow as tf

from deconvolution.blur_operator import BlurOperator
from deconvolution.hqs import beta_ladder, solve_data_term

FLOW_SOURCES = ("sen", "true")


def _sync(value):
    """Waits eagerly for a tensor, the first of a tuple, or a :class:`BlurOperator`'s table (for
    the timings: TensorFlow may run ops asynchronously)."""
    if isinstance(value, tuple):
        value = value[0]
    if isinstance(value, BlurOperator):
        value = value.num_taps
    if tf.executing_eagerly():
        value.numpy()


class BlindDeblurFramework:
    """SEN + K + CG + G composed (``sen_rpgan.md`` §10). See the module docstring.

    Args:
        sen: the flow estimator, ``sen(images, training=False)`` -> (N, H, W, 2) flow; may be
            ``None`` only with ``flow_source="true"`` and one global iteration.
        generator: RP-GAN's G, ``generator(concat(I*, O), training=False)`` -> (N, H, W, 3)
            linear; ``None`` = identity prior (Z_n = I*_n).
        levels: N, the HQS levels (3; Table 4 uses 1-5).
        global_iterations: 1-3 in the paper (Tables 2-3).
        betas: the β ladder, one per level; ``None`` = 0.02·5^{n−1} (register #20).
        flow_source: ``"sen"`` or ``"true"`` (the ``true_flow`` argument, first global
            iteration only).
        cg_tol, cg_max_iter: CG settings (register #21: 1e-5, 100).
        method: :class:`BlurOperator` method (``"auto"``: CSR eagerly, sparse in a graph).

    ``framework(blurred, true_flow=None)`` -> the restored Z_N of the last global iteration,
    float32 (N, H, W, 3) in [0, 1]; :meth:`intermediates` also returns every flow, I*_n and Z_n
    and (eagerly) the seconds spent in SEN, K's construction, CG and G.
    """

    def __init__(
        self,
        sen,
        generator,
        levels=3,
        global_iterations=1,
        betas=None,
        flow_source="sen",
        cg_tol=1e-5,
        cg_max_iter=100,
        method="auto",
    ):
        if flow_source not in FLOW_SOURCES:
            raise ValueError(f"flow_source must be one of {FLOW_SOURCES}, got {flow_source!r}.")
        if int(levels) < 1 or int(global_iterations) < 1:
            raise ValueError(
                f"levels and global_iterations must be >= 1, got {levels}, {global_iterations}."
            )
        betas = beta_ladder(int(levels)) if betas is None else tuple(float(b) for b in betas)
        if len(betas) != int(levels):
            raise ValueError(f"betas must have one value per level ({levels}), got {betas}.")
        if sen is None and (flow_source == "sen" or int(global_iterations) > 1):
            raise ValueError(
                "a SEN is needed with flow_source='sen' and for global iterations after the "
                "first (the true flow describes only the original blurred image)."
            )
        self.sen, self.generator = sen, generator
        self.levels, self.global_iterations = int(levels), int(global_iterations)
        self.betas, self.flow_source = betas, flow_source
        self.cg_tol, self.cg_max_iter, self.method = float(cg_tol), int(cg_max_iter), method

    @property
    def variables(self):
        """SEN's and G's variables (those a ``tf.Module`` wrapping the framework must track to
        save it; stand-ins without ``variables`` contribute none)."""
        parts = (self.sen, self.generator)
        return [v for part in parts if part is not None for v in getattr(part, "variables", [])]

    def __call__(self, blurred, true_flow=None):
        """(N, H, W, 3) float in [0, 1] -> restored (N, H, W, 3) float32 in [0, 1]."""
        return self.intermediates(blurred, true_flow, timings=False)[-1]["z"][-1]

    def with_identity_prior(self, blurred, true_flow=None):
        """``(Z_N, I*_N of the identity prior)``: the framework's output and, for the same input,
        flow, K and β ladder, the identity-prior HQS (Z_n = I*_n), the baseline a learned prior
        must beat; both (N, H, W, 3) float32 in [0, 1]. The two share SEN, K and the level-1
        solve, and later levels solve both right-hand sides as extra columns of one CG (a column
        costs little beside the sparse products' index traffic), so this costs about one
        framework pass instead of two; each column's CG is its own (per-column stopping)."""
        results = self.intermediates(blurred, true_flow, timings=False, identity_prior=True)
        return results[-1]["z"][-1], results[0]["identity"][-1]

    def intermediates(self, blurred, true_flow=None, timings=None, identity_prior=False):
        """Every intermediate, one dict per global iteration:

        ``"input"`` O of that iteration, ``"flow"`` U (N, H, W, 2), ``"istar"`` [I*_1..I*_N],
        ``"z"`` [Z_1..Z_N] (each (N, H, W, 3) in [0, 1]), ``"cg_iterations"`` per level
        (int32 scalars) and, with ``timings`` (default: when running eagerly), ``"seconds"``
        {"sen", "operator", "cg", "g"} (wall-clock seconds of SEN, K's construction, the CG
        solves and the generator; each part is waited for before its clock stops; never inside
        a ``tf.function``). SEN + operator + CG + G is the framework's time but for the
        concatenations and clips. With ``identity_prior``, the first global iteration also has
        ``"identity"``: [I*_1..I*_N] of the identity prior (see :meth:`with_identity_prior`).
        """
        # Clocks mean nothing while a graph is traced: timings only eagerly.
        timings = tf.executing_eagerly() and (timings is None or bool(timings))
        blurred = _float32(blurred)
        if self.flow_source == "true" and true_flow is None:
            raise ValueError("flow_source='true' needs the true_flow argument.")
        results = []
        for g in range(self.global_iterations):
            given = true_flow if (self.flow_source == "true" and g == 0) else None
            baseline = identity_prior and g == 0
            results.append(self._global_iteration(blurred, given, timings, baseline))
            blurred = results[-1]["z"][-1]  # register #24: O <- Z_N everywhere
        return results

    def global_iteration(self, blurred, true_flow=None):
        """One global iteration on O = ``blurred`` (SEN's flow, or ``true_flow`` when given), as
        one dict of :meth:`intermediates` without timings: a caller that stamps or traces each
        global iteration itself (experiments_rpgan.py) chains them with O <- Z_N."""
        return self._global_iteration(_float32(blurred), true_flow, False)

    def _global_iteration(self, blurred, true_flow, timings, identity_prior=False):
        """One pass of SEN, K and the HQS ladder on O = ``blurred`` (and, with
        ``identity_prior``, the identity-prior ladder beside it)."""
        seconds = dict.fromkeys(("sen", "operator", "cg", "g"), 0.0)

        def timed(part, fn, *args):
            start = time.perf_counter()
            out = fn(*args)
            if timings:
                _sync(out)
                seconds[part] += time.perf_counter() - start
            return out

        flow = timed("sen", self._flow, blurred) if true_flow is None else _float32(true_flow)
        op = timed("operator", BlurOperator, flow, self.method)
        # KᵀO does not depend on the level: once per global iteration, not once per solve.
        adjoint = timed("cg", op.adjoint, blurred)
        z, istars, zs, counts, identity = blurred, [], [], [], []
        for n, beta in enumerate(self.betas):
            # Level 1 starts both ladders from Z_0 = O: one solve serves both.
            shared = identity_prior and n > 0
            right = tf.concat([z, identity[-1]], -1) if shared else z
            observed = tf.concat([blurred, blurred], -1) if shared else blurred
            given = tf.concat([adjoint, adjoint], -1) if shared else adjoint
            solve = functools.partial(solve_data_term, adjoint_blurred=given)
            solved, count = timed(
                "cg", solve, observed, right, op, beta, self.cg_tol, self.cg_max_iter
            )
            istar, own = tf.split(solved, 2, axis=-1) if shared else (solved, solved)
            z = istar if self.generator is None else timed("g", self._prior, istar, blurred)
            istars.append(istar)
            zs.append(z)
            counts.append(count)
            identity.append(own)
        out = {"input": blurred, "flow": flow, "istar": istars, "z": zs, "cg_iterations": counts}
        if identity_prior:
            out["identity"] = identity
        if timings:
            out["seconds"] = seconds
        return out

    def _flow(self, blurred):
        """U = SEN(O), real-valued (§10.2: no rounding at inference), float32 whatever SEN's
        compute dtype: K is built from it in float32."""
        return _float32(self.sen(blurred, training=False))

    def _prior(self, istar, blurred):
        """Z_n = clip(G(concat(I*_n, O)), 0, 1) (register #13), float32: it is the next CG's
        warm start and right-hand side. G's input is float32; under a mixed policy G casts it
        to its compute dtype itself (a Keras layer's inputs are cast to its compute dtype)."""
        restored = self.generator(tf.concat([istar, blurred], axis=-1), training=False)
        return tf.clip_by_value(_float32(restored), 0.0, 1.0)


def _float32(value):
    """``value`` as a float32 tensor: a cast, not ``convert_to_tensor(..., tf.float32)``, which
    refuses a bfloat16 / float16 tensor (a network's output under a mixed policy). K, Kᵀ and CG
    are float32 whatever the networks compute in: the data step is a linear solve."""
    return tf.cast(tf.convert_to_tensor(value), tf.float32)
