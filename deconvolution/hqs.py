"""HQS data step of the SEN + RP-GAN framework (``sen_rpgan.md`` §1, §6): conjugate gradients on
(KᵀK + β𝕀) x = βZ + KᵀO, per image and colour channel, batched. TensorFlow only.

Images are float32 (N, H, W, 3) in [0, 1] (any channel count works), flows float32 (N, H, W, 2)
signed pixels (u right, v down), K = :class:`deconvolution.blur_operator.BlurOperator`.

CG (§6, register item 21): x₀ = Z (warm start); r₀ = b − (Kᵀ(Kx₀) + βx₀); p₀ = r₀; ρ = Σr² per
column (one column = one image's one channel); each iteration costs one K and one Kᵀ:
q = Kᵀ(Kp) + βp, α = ρ/Σp⊙q, x += αp, r −= αq, p = r + (ρ'/ρ)p. A column stops when
√ρ ≤ ``tol``·‖b‖ (relative, per column; ρ is the recursively updated residual) and is then frozen
(α = 0), so an image's result does not depend on its batch mates; the loop ends when every
column has stopped or after ``max_iter`` iterations; then x is clamped to [0, 1] (as the Sun/Gong
deconvolution does after each solve). The reported count is the number of iterations run (the
initial residual costs one more K and Kᵀ). The vector updates of an iteration are one
XLA-compiled function (K and Kᵀ are not: sparse kernels), which matters when K is cheap (a
flow-23 solve at 720x1280, β = 0.02: 5.0 s unfused, 2.9 s fused, of which 2.2 s are K and Kᵀ).
No gradient flows through CG (its result is RP-GAN's input).

Why hand-written and not ``tf.linalg.experimental.conjugate_gradient`` (kept as
``solver="tf"`` on :class:`NormalOperator`, a ``tf.linalg.LinearOperator`` with batch shape
[N, C] and vectors of length H·W): TensorFlow's solver is the same algorithm and its ``tol`` is
already relative per column (it scales ``tol`` by ‖rhs‖ of each batch member), but it divides
without a guard (α = γ/⟨p, Ap⟩, β = γ'/γ) and keeps iterating columns that have converged. A
column whose residual is exactly zero — an image with zero flow (K = 𝕀, solved exactly in one
step; 2 % of the flow-23/46 samples), a channel that is 0 everywhere, any level-1 solve with
Z = O of a constant image — then computes 0/0 and its x becomes NaN as soon as another column of
the batch needs more iterations (reproduced: a batch of a zero-flow and a blurred image gives NaN
for the first image after 38 iterations). The spec asks for guarded divisions, so the default
solver guards them (0/0 → 0) and freezes converged columns; on well-posed columns both solvers
take the same number of iterations and agree to the tolerance (tests/test_hqs.py).

β ladder (§6, register item 20): β_n = 0.02·5^{n−1} = (0.02, 0.1, 0.5) for three levels.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from deconvolution.blur_operator import BlurOperator

BETAS = (0.02, 0.1, 0.5)
SOLVERS = ("cg", "tf")
# Version of the data step's numbers (the CG recurrence, its guards, stopping rule and freezing,
# the warm start, the final clamp to [0, 1]): bump it with any change that alters what
# solve_data_term returns for the same inputs and settings. The RP-GAN deconvolution cache
# (training/rpgan/deconv_cache.py) keys its I*_1 files on it, with every CG setting.
DATA_STEP_VERSION = 1


def beta_ladder(levels: int = 3, first: float = 0.02, factor: float = 5.0) -> tuple[float, ...]:
    """β_n = first·factor^{n−1} (§6: 0.02, 0.1, 0.5, 2.5, 12.5 for five levels)."""
    return tuple(first * factor**n for n in range(levels))


def _dot(a, b):
    """Σ a⊙b per column: (N, H, W, C) -> (N, 1, 1, C)."""
    return tf.reduce_sum(a * b, axis=[1, 2], keepdims=True)


@tf.function(jit_compile=True)
def _cg_update(x, r, p, q, rho, limit, shift):
    """One CG update after q = apply(p): XLA fuses the ~15 element-wise passes into two.

    The system is apply + shift·𝕀; divisions are guarded (0/0 -> 0) and converged columns
    (ρ ≤ limit) are frozen: α = 0, p = 0.
    """
    q = q + shift * p
    active = rho > limit
    alpha = tf.where(active, tf.math.divide_no_nan(rho, _dot(p, q)), 0.0)
    x = x + alpha * p
    r = r - alpha * q
    rho_next = tf.where(active, _dot(r, r), rho)
    p = tf.where(active, r + tf.math.divide_no_nan(rho_next, rho) * p, 0.0)
    return x, r, p, rho_next


def conjugate_gradient(apply, b, x0, tol=1e-5, max_iter=100, shift=0.0):
    """Batched CG on images: solves (apply + shift·𝕀)(x) = b for every (image, channel) column.

    Args:
        apply: symmetric positive semi-definite map of (N, H, W, C) float32 tensors (with
            ``shift`` > 0) or positive definite.
        b, x0: (N, H, W, C) right-hand side and initial guess.
        tol: a column stops when ‖r‖ ≤ tol·‖b‖ (its own b).
        max_iter: iteration limit.
        shift: added multiple of the identity (β of the data step).

    Returns:
        (x, iterations): x (N, H, W, C) unclamped, iterations an int32 scalar tensor.
    """
    b = tf.convert_to_tensor(b, tf.float32)
    x = tf.convert_to_tensor(x0, tf.float32)
    shift = tf.cast(shift, tf.float32)
    r = b - apply(x) - shift * x
    limit = tf.cast(tol, tf.float32) ** 2 * _dot(b, b)
    rho = _dot(r, r)

    def running(i, x, r, p, rho):
        return tf.logical_and(i < max_iter, tf.reduce_any(rho > limit))

    def step(i, x, r, p, rho):
        return i + 1, *_cg_update(x, r, p, apply(p), rho, limit, shift)

    i, x, *_ = tf.while_loop(running, step, [tf.constant(0), x, r, r, rho])
    return x, i


class NormalOperator(tf.linalg.LinearOperator):
    """A = KᵀK + β𝕀 as a ``tf.linalg.LinearOperator`` for ``tf.linalg.experimental`` solvers.

    Batch shape [N, C] (one member per image and channel), vectors of length H·W (row-major
    pixels): :meth:`to_vectors` / :meth:`to_images` convert (N, H, W, C) images.
    """

    def __init__(self, op: BlurOperator, beta, image_shape):
        self._op = op
        self._beta = tf.cast(beta, tf.float32)
        self._image_shape = tf.convert_to_tensor(image_shape, tf.int32)
        super().__init__(
            dtype=tf.float32,
            is_self_adjoint=True,
            is_positive_definite=True,
            is_non_singular=True,
            is_square=True,
            name="NormalOperator",
        )

    def to_vectors(self, images):
        """(N, H, W, C) -> (N, C, H·W)."""
        n, c = self._image_shape[0], self._image_shape[3]
        return tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [n, c, -1])

    def to_images(self, vectors):
        """(N, C, H·W) -> (N, H, W, C)."""
        n, h, w, c = tf.unstack(self._image_shape)
        return tf.transpose(tf.reshape(vectors, [n, c, h, w]), [0, 2, 3, 1])

    def apply_images(self, x):
        """Kᵀ(Kx) + βx on (N, H, W, C) images."""
        return self._op.normal(x) + self._beta * x

    def _shape(self):
        return tf.TensorShape([None, None, None, None])

    def _shape_tensor(self):
        n, h, w, c = tf.unstack(self._image_shape)
        return tf.stack([n, c, h * w, h * w])

    def _matvec(self, x, adjoint=False):
        return self.to_vectors(self.apply_images(self.to_images(x)))

    def _matmul(self, x, adjoint=False, adjoint_arg=False):
        return self._matvec(x[..., 0])[..., None]


def solve_data_term(
    blurred, z, op, beta, tol=1e-5, max_iter=100, solver="cg", adjoint_blurred=None
):
    """I* = argmin (β/2)‖I − Z‖² + ½‖KI − O‖², by CG on (KᵀK + β𝕀) I = βZ + KᵀO (eq. 4, §6).

    Args:
        blurred: O, float32 (N, H, W, C) in [0, 1].
        z: Z, float32 (N, H, W, C), the prior's last output (O at level 1); also the warm start.
        op: the :class:`BlurOperator` of the images' flows.
        beta: β (Python float or scalar tensor).
        tol: per-column relative residual tolerance ‖r‖ ≤ tol·‖b‖.
        max_iter: iteration limit (100, §6).
        solver: ``"cg"`` (guarded, default) or ``"tf"`` (``tf.linalg.experimental``; see the
            module docstring for why it is not the default).
        adjoint_blurred: KᵀO (float32, O's shape) when the caller has it already: it does not
            depend on β or Z, so an HQS ladder computes it once for all its levels (one Kᵀ per
            level saved, the same numbers); ``None`` = computed here.

    Returns:
        (x, iterations): x float32 (N, H, W, C) clamped to [0, 1]; iterations an int32 scalar.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    blurred = tf.convert_to_tensor(blurred, tf.float32)
    z = tf.convert_to_tensor(z, tf.float32)
    beta = tf.cast(beta, tf.float32)
    if adjoint_blurred is None:
        adjoint_blurred = op.adjoint(blurred)
    b = beta * z + tf.convert_to_tensor(adjoint_blurred, tf.float32)
    if solver == "cg":  # β𝕀 is added by CG
        x, iterations = conjugate_gradient(op.normal, b, z, tol, max_iter, shift=beta)
    else:
        normal = NormalOperator(op, beta, tf.shape(blurred))
        state = tf.linalg.experimental.conjugate_gradient(
            normal, normal.to_vectors(b), x=normal.to_vectors(z), tol=tol, max_iter=max_iter
        )
        x, iterations = normal.to_images(state.x), state.i
    return tf.stop_gradient(tf.clip_by_value(x, 0.0, 1.0)), iterations


def hqs_identity_prior(
    blurred,
    flows,
    betas=BETAS,
    tol=1e-5,
    max_iter=100,
    method="auto",
    with_iterations=False,
):
    """The HQS ladder with the identity as prior (Z_n = I*_n): non-blind deconvolution (§1, §6).

    Z₀ = O; for each β_n: I*_n = CG(β_n; Z_{n−1}) and Z_n = I*_n. With a learned prior (RP-GAN),
    Z_n = G(I*_n, O) instead; this is the data step alone, e.g. with the true flows. K is built
    once for all levels; runs eagerly or inside a ``tf.function``.

    Args:
        blurred: O, float32 (N, H, W, C) in [0, 1].
        flows: float32 (N, H, W, 2) signed flows (u right, v down), pixels.
        betas: the β ladder (default (0.02, 0.1, 0.5)).
        tol, max_iter: CG settings (§6).
        method: :class:`BlurOperator` method.
        with_iterations: also return the CG iteration count of each level.

    Returns:
        [I*_1, ..., I*_n] (float32 (N, H, W, C) in [0, 1]); with ``with_iterations``, a pair
        (that list, list of int32 scalar iteration counts).
    """
    blurred = tf.convert_to_tensor(blurred, tf.float32)
    # Built here, so that the operator lives where it is used (eagerly: CSR; in a graph: sparse).
    op = BlurOperator(flows, method)
    adjoint = op.adjoint(blurred)  # KᵀO: the same at every level
    z, images, iterations = blurred, [], []
    for beta in betas:
        z, count = solve_data_term(blurred, z, op, beta, tol, max_iter, adjoint_blurred=adjoint)
        images.append(z)
        iterations.append(count)
    return (images, iterations) if with_iterations else images


@functools.lru_cache(maxsize=8)
def traced_data_solver(tol=1e-5, max_iter=100, solver="cg"):
    """``solve(blurred, z, flows, beta) -> (I*, iterations)``: K built from ``flows`` and
    :func:`solve_data_term`, as one ``tf.function`` with dynamic N, H, W (traced once per
    process and setting; K is then a ``tf.SparseTensor``).

    For many small solves (the deconvolution cache and the replay buffer of RP-GAN training, 256²
    images and windows): there the traced solve is several times faster than the eager one, whose
    CG loop runs op by op from Python (measured at 256², flow-23, β 0.02, 38 iterations under
    load: 9.3 s eagerly with CSR, see ``benchmarks/deconvolution.py``'s graph column for K alone).
    Arguments as :func:`solve_data_term`; ``beta`` a float32 scalar.
    """
    image = tf.TensorSpec((None, None, None, None), tf.float32)
    flow = tf.TensorSpec((None, None, None, 2), tf.float32)

    @tf.function(input_signature=[image, image, flow, tf.TensorSpec((), tf.float32)])
    def solve(blurred, z, flows, beta):
        op = BlurOperator(flows, "sparse")
        return solve_data_term(blurred, z, op, beta, tol, max_iter, solver)

    return solve
