"""Offline synthetic blur data sets in the ``GOPRO_Large`` layout: ``data_and_evaluation.md`` §2
(and ``sen_rpgan.md`` §5 for the flow kind).

Kinds (``SynthConfig.kind``):

* ``gopro`` (§2.3, the embedded default): a sharp window of S + 2m (m = 48) is warped along a
  smooth random camera path, N ∈ {7, 9, 11, 13} frames at t_k = −½ + (k + ½)/N, translation
  T(t) = a·t + b·t² + c·t³ (a, b, c ~ N(0, I₂)) rescaled to a path length ℓ ~ U(3, 30) px, rotation
  ω_max·t with ω_max ~ U(−1.5°, 1.5°), zoom 1 + ζ·t with ζ ~ U(−0.03, 0.03), about the window
  centre (bilinear, reflect border), cropped to the central S x S. With probability 0.5, 1–2
  moving objects (48–128 px sprites cut from another photo of the split, soft elliptical alpha with
  a 3-px feather, path p₀ + w·t + ½a·t², |w| ≤ 40, |a| ≤ 20 px) are composited over every frame.
  ``blur`` = mean of the frames on the stored values, ``blur_gamma`` = ((1/N) Σ F^2.2)^(1/2.2),
  ``sharp`` = the middle frame (t = 0: the identity, an un-resampled crop; sprites at integer
  positions). ``path="boracchi"`` replaces the polynomial translation by a §2.1 trajectory
  resampled to the N frame times.
* ``trajectory`` (§2.1): uniform blur by a Boracchi–Foi PSF (centroid-centred, sum 1, no
  renormalisation) of a window with a 32-px margin (half the PSF canvas), centre kept.
* ``flow`` (§2.2, ``sen_rpgan.md`` §5; the **flow-23** / **flow-46** sets of SEN): Gong et al.'s
  random flow model as written (:func:`data.motion_blur.random_flow`: tx, ty ~ U(±u_max), i.e. the
  "strong" preset 27 scaled by u_max/27; tx_acc, ty_acc ~ U(±0.3), tz ~ U(±5e-3), rot_z ~
  U(±π/70), centre shift U(±15) px; 1-based grid of the S x S output), rescaled by
  min(1, u_max / max |u|,|v|), MATLAB-rounded to integers, 2 % zero fields (a random draw per
  pair); the exact non-uniform operator K of :mod:`data.motion_blur` is applied to a sharp window
  of (S + 2m)², m = ⌈u_max·√2/2⌉ + 1, with the flow extended by edge replication, and the central
  S x S of blur and sharp are kept (a border-free "valid" blur: m exceeds every kernel's
  half-extent). The ``uv_half`` label (u ≥ 0; u < 0 negates both components) is saved as
  ``flow/<frame>.npy`` (float32 (S, S, 2), u = +right, v = +down, integer values, no negative
  zeros). ``flows_per_image`` consecutive pairs (one *group*) share one sharp window, the "sharp
  source" of the paper (20 flows per source). The paper's sets (§5, register #25):
  ``FLOW_TRAIN_PAIRS`` = 10,000 train and ``FLOW_TEST_PAIRS`` = 2,000 test pairs, i.e. 500 / 100
  sources x 20 flows; the splits draw their windows from disjoint photos and dead-leaves seeds,
  so no test source appears in train. ``python -m data.make_synthetic --kind flow --u_max 46
  --out DIR`` builds flow-46 with these counts (``--u_max 23``: flow-23).

Sharp windows: 50 % photo windows (§2.6 sources of the split; sources larger than 2x the window are
first down-scaled by a factor in [0.5, 1] with area interpolation) and 50 % dead-leaves images
(§2.5, r_max = 0.25·S, disk colours from a photo of the split or uniform, half each).

Layout: ``<out>/{train,test}/SYN_<source>_<nnn>/{blur,blur_gamma,sharp[,flow]}/<NNNNNN>.png`` where
``<NNNNNN>`` is the pair index within the split and ``<nnn>`` = index // 100 (sequences of at most
100 frames, like GoPro's), plus ``<out>/synthetic.json`` describing the set. ``gopro`` writes both
blur variants; the other kinds write ``blur`` only. No noise by default (``noise_sigma`` adds
Gaussian noise of that σ, in [0, 1] units, to the blurred images before quantisation).

Determinism: every pair draws from its own generator seeded by (seed, split, kind, pair index[,
stream]) (the flow kind's shared window: by its group index), so the same configuration gives
byte-identical files whatever the number of worker processes; train and test use disjoint photo
sources and disjoint dead-leaves seeds. Workers take whole groups, and a process keeps the last
windows it made, so a group's window is made once (flow kind: ~30 % of the time per pair).
Versions (:func:`version`, in ``synthetic.json`` and the cache folder names): gopro and
trajectory 1; flow 2 (version 1 could store −0.0 in labels and did not shard by group). Values are
rounded to uint8 PNG. Sub-pixel warps use OpenCV's bilinear interpolation (1/32-pixel coordinate
quantisation, negligible for blur synthesis).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

import fileio
from data import dead_leaves, image_io, motion_blur, trajectories
from data import synthetic_sources as sources

VERSION = 1  # of the gopro and trajectory kinds (the embedded default set)
KINDS = ("gopro", "trajectory", "flow")
KIND_VERSIONS = {"gopro": VERSION, "trajectory": VERSION, "flow": 2}
FLOW_TRAIN_PAIRS = 10_000  # flow-23 / flow-46 (sen_rpgan.md §5): 500 train sources x 20 flows
FLOW_TEST_PAIRS = 2_000  # 100 test sources x 20 flows
SPLITS = ("train", "test")
MANIFEST = "synthetic.json"
GOPRO_MARGIN = 48
TRAJECTORY_CANVAS = 64
GAMMA = 2.2


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic data set (and its files, byte for byte)."""

    kind: str = "gopro"
    size: int = 256
    train_pairs: int = 200
    test_pairs: int = 50
    seed: int = 0
    noise_sigma: float = 0.0
    object_prob: float = 0.5
    path: str = "poly"  # gopro kind: "poly" (§2.3 step 2) or "boracchi"
    u_max: float = 23.0  # flow kind
    flows_per_image: int = 20  # flow kind

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        if self.path not in ("poly", "boracchi"):
            raise ValueError(f"path must be 'poly' or 'boracchi', got {self.path!r}.")
        if self.size < 16 or self.train_pairs < 0 or self.test_pairs < 0:
            raise ValueError(f"invalid size or pair counts in {self}.")
        if not self.u_max > 0:
            raise ValueError(f"u_max must be positive, got {self.u_max}.")
        if self.flows_per_image < 1:
            raise ValueError(f"flows_per_image must be at least 1, got {self.flows_per_image}.")

    def pairs(self, split: str) -> int:
        return self.train_pairs if split == "train" else self.test_pairs

    def group_size(self) -> int:
        """Consecutive pairs sharing one sharp window (flow kind), else 1."""
        return self.flows_per_image if self.kind == "flow" else 1


def version(kind: str) -> int:
    """Generator version of a kind (bumped whenever the kind's files change)."""
    return KIND_VERSIONS[kind]


def pair_rng(cfg: SynthConfig, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of one pair (independent of generation order and worker count)."""
    entropy = [cfg.seed, SPLITS.index(split), KINDS.index(cfg.kind), index, stream]
    return np.random.default_rng(entropy)


# ---------------------------------------------------------------------------------------------
# Sharp windows (§2.3 step 1, §2.5, §2.6)


def sample_window(rng: np.random.Generator, split: str, side: int, size: int):
    """(source name, uint8 RGB (side, side, 3) window): a photo window or a dead-leaves image."""
    usable = sources.usable_sources(split, side)
    if rng.random() < 0.5 or not usable:
        colours = sources.colour_samples(split, rng) if rng.random() < 0.5 else None
        return "deadleaves", dead_leaves.dead_leaves(side, rng, colours, r_max=0.25 * size)
    name = usable[rng.integers(len(usable))]
    return name, photo_window(rng, name, side)


def photo_window(rng: np.random.Generator, name: str, side: int) -> np.ndarray:
    image = sources.load_source(name)
    if min(image.shape[:2]) > 2 * side:
        factor = rng.uniform(0.5, 1.0)
        dsize = (round(image.shape[1] * factor), round(image.shape[0] * factor))
        image = cv2.resize(image, dsize, interpolation=cv2.INTER_AREA)
    y = rng.integers(0, image.shape[0] - side + 1)
    x = rng.integers(0, image.shape[1] - side + 1)
    window = image[y : y + side, x : x + side]
    if sources.is_texture(name) and rng.random() < 0.5:
        gains = rng.uniform(0.6, 1.0, 3)
        window = np.clip(np.rint(window * gains), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(window)


# ---------------------------------------------------------------------------------------------
# GoPro-style frame averaging (§2.3)


class CameraPath(NamedTuple):
    """Translation T(t) as a function, rotation ω_max (radians) and zoom rate ζ; t ∈ [−½, ½]."""

    translation: Callable[[np.ndarray], np.ndarray]
    omega_max: float
    zeta: float


def frame_times(n: int) -> np.ndarray:
    """t_k = −½ + (k + ½)/N; for odd N the middle time is exactly 0."""
    return -0.5 + (np.arange(n) + 0.5) / n


def sample_camera_path(rng: np.random.Generator, kind: str = "poly") -> CameraPath:
    """A random smooth (``poly``) or jerky (``boracchi``) camera path with T(0) = 0.

    Both translations are rescaled to a path length ℓ ~ U(3, 30) px over the exposure.
    """
    if kind == "boracchi":
        shape = _boracchi_translation(rng)
    else:
        shape = functools.partial(_poly, rng.standard_normal((3, 2)))
    length = _path_length(shape)
    scale = rng.uniform(3, 30) / length if length > 0 else 0.0
    translation = functools.partial(_scaled, shape, scale)
    omega = math.radians(rng.uniform(-1.5, 1.5))
    return CameraPath(translation, omega, rng.uniform(-0.03, 0.03))


def _poly(coeffs: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, np.float64)[..., None]
    return coeffs[0] * t + coeffs[1] * t**2 + coeffs[2] * t**3


def _scaled(translation, scale: float, t) -> np.ndarray:
    return scale * translation(t)


def _path_length(translation, samples: int = 257) -> float:
    points = translation(np.linspace(-0.5, 0.5, samples))
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _boracchi_translation(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    traj = trajectories.random_trajectory(rng, canvas=TRAJECTORY_CANVAS)
    xy = np.stack([traj.real, traj.imag], axis=-1)
    grid = np.linspace(-0.5, 0.5, len(traj))

    def translation(t):
        t = np.atleast_1d(np.asarray(t, np.float64))
        at = np.stack([np.interp(t, grid, xy[:, i]) for i in range(2)], axis=-1)
        return at - np.array([np.interp(0.0, grid, xy[:, i]) for i in range(2)])

    return translation


def camera_matrix(path: CameraPath, t: float, centre: float, offset: float) -> np.ndarray:
    """2x3 forward map window -> output frame at time t (affine about ``centre``, then − offset)."""
    s, w = 1.0 + path.zeta * t, path.omega_max * t
    rot = s * np.array([[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]])
    shift = np.asarray(path.translation(t)).reshape(2)
    trans = centre + shift - rot @ np.array([centre, centre]) - offset
    return np.hstack([rot, trans[:, None]])


def camera_frames(window: np.ndarray, size: int, path: CameraPath, times) -> list[np.ndarray]:
    """Float32 (size, size, 3) frames of the window seen along ``path`` at ``times``."""
    window = window.astype(np.float32)
    margin = (window.shape[0] - size) // 2
    centre = (window.shape[0] - 1) / 2
    frames = []
    for t in times:
        if t == 0:  # the identity: an exact, un-resampled crop
            frames.append(window[margin : margin + size, margin : margin + size].copy())
            continue
        m = camera_matrix(path, float(t), centre, margin)
        frames.append(
            cv2.warpAffine(
                window, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
        )
    return frames


class Sprite(NamedTuple):
    """A moving object: premultiplied colour, alpha (h, w), start (x, y), velocity, acceleration."""

    premultiplied: np.ndarray
    alpha: np.ndarray
    start: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray

    def position(self, t: float) -> np.ndarray:
        return self.start + self.velocity * t + 0.5 * self.acceleration * t * t


def elliptical_alpha(h: int, w: int, feather: float = 3.0) -> np.ndarray:
    """Float32 (h, w) alpha of the inscribed ellipse, ramping to 1 over ``feather`` px inside."""
    a, b = w / 2, h / 2
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rho = np.sqrt(((x + 0.5 - a) / a) ** 2 + ((y + 0.5 - b) / b) ** 2)
    distance = (1 - rho) * min(a, b)  # approximate distance inside the boundary
    return np.clip(distance / feather, 0, 1).astype(np.float32)


def sample_sprites(rng: np.random.Generator, split: str, size: int, exclude: str) -> list[Sprite]:
    """0 (probability ½ is applied by the caller), 1 or 2 moving objects for a size x size frame."""
    scale = min(1.0, size / 256)
    names = [n for n in sources.split_sources(split) if n != exclude]
    sprites = []
    for _ in range(rng.integers(1, 3)):
        h, w = (int(rng.integers(round(48 * scale), round(128 * scale) + 1)) for _ in range(2))
        source = sources.load_source(names[rng.integers(len(names))])
        y, x = rng.integers(0, source.shape[0] - h + 1), rng.integers(0, source.shape[1] - w + 1)
        alpha = elliptical_alpha(h, w)
        patch = source[y : y + h, x : x + w].astype(np.float32) * alpha[..., None]
        start = np.array(
            [rng.integers(-w // 2, size - w // 2), rng.integers(-h // 2, size - h // 2)]
        )
        sprites.append(Sprite(patch, alpha, start.astype(np.float64), *_motion(rng)))
    return sprites


def _motion(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    def vector(limit):
        angle = rng.uniform(0, 2 * math.pi)
        return rng.uniform(0, limit) * np.array([math.cos(angle), math.sin(angle)])

    return vector(40.0), vector(20.0)


def composite(frame: np.ndarray, sprite: Sprite, t: float) -> np.ndarray:
    """Composites a sprite over a float32 frame at its position at time t (premultiplied alpha)."""
    x, y = sprite.position(t)
    size = (frame.shape[1], frame.shape[0])
    m = np.array([[1.0, 0.0, x], [0.0, 1.0, y]])
    if t == 0:  # integer start position: place exactly, no resampling in the ground truth
        colour, alpha = _place(sprite.premultiplied, x, y, frame), _place(sprite.alpha, x, y, frame)
    else:
        warp = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        colour = cv2.warpAffine(sprite.premultiplied, m, size, **warp)
        alpha = cv2.warpAffine(sprite.alpha, m, size, **warp)
    return frame * (1 - alpha[..., None]) + colour


def _place(image: np.ndarray, x: float, y: float, frame: np.ndarray) -> np.ndarray:
    out = np.zeros(frame.shape[:2] + image.shape[2:], np.float32)
    x, y = int(x), int(y)
    h, w = image.shape[:2]
    y0, y1, x0, x1 = max(y, 0), min(y + h, out.shape[0]), max(x, 0), min(x + w, out.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = image[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def average_frames(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(blur, blur_gamma) in float32 0..255: the plain mean and the mean in linear light.

    Float32 is exact for the mean of identical integer frames and within 1e-4 otherwise, far
    below the uint8 quantisation that follows.
    """
    stack = np.stack(frames).astype(np.float32)
    blur = stack.mean(axis=0)
    flat = np.clip(stack, 0, 255).reshape(len(frames), -1) * np.float32(1 / 255)
    linear = cv2.pow(flat, GAMMA).mean(axis=0)  # cv2.pow: ~4x faster than numpy's power
    blur_gamma = np.float32(255) * cv2.pow(linear, 1 / GAMMA).reshape(blur.shape)
    return blur, blur_gamma


def quantise(image: np.ndarray) -> np.ndarray:
    """Rounds float 0..255 values to uint8."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_gopro(
    window: np.ndarray,
    size: int,
    path: CameraPath,
    n_frames: int,
    sprites: list[Sprite] = (),
) -> dict[str, np.ndarray]:
    """Float 0..255 ``blur``, ``blur_gamma`` and ``sharp`` (size, size, 3) of one §2.3 sample."""
    times = frame_times(n_frames)
    frames = camera_frames(window, size, path, times)
    for sprite in sprites:
        frames = [composite(f, sprite, float(t)) for f, t in zip(frames, times, strict=True)]
    blur, blur_gamma = average_frames(frames)
    return {"blur": blur, "blur_gamma": blur_gamma, "sharp": frames[n_frames // 2]}


def make_gopro_pair(cfg: SynthConfig, split: str, index: int) -> dict:
    rng = pair_rng(cfg, split, index)
    name, window = sample_window(rng, split, cfg.size + 2 * GOPRO_MARGIN, cfg.size)
    path = sample_camera_path(rng, cfg.path)
    n_frames = int(rng.choice([7, 9, 11, 13]))
    sprites = sample_sprites(rng, split, cfg.size, name) if rng.random() < cfg.object_prob else []
    images = render_gopro(window, cfg.size, path, n_frames, sprites)
    return _finish(cfg, rng, name, images)


# ---------------------------------------------------------------------------------------------
# Uniform (trajectory) and non-uniform (flow) blur


def make_trajectory_pair(cfg: SynthConfig, split: str, index: int) -> dict:
    rng = pair_rng(cfg, split, index)
    margin = TRAJECTORY_CANVAS // 2
    name, window = sample_window(rng, split, cfg.size + 2 * margin, cfg.size)
    psf = trajectories.random_psf(rng, canvas=TRAJECTORY_CANVAS)
    blurred = trajectories.blur_uniform(window.astype(np.float32), psf)
    crop = np.s_[margin : margin + cfg.size, margin : margin + cfg.size]
    return _finish(cfg, rng, name, {"blur": blurred[crop], "sharp": window[crop]})


@functools.lru_cache(maxsize=4)
def flow_window(cfg: SynthConfig, split: str, group: int) -> tuple[str, np.ndarray]:
    """(source name, read-only uint8 window (S + 2m)²) shared by the pairs of ``group``.

    Cached: a worker makes its pairs group by group, so each window is drawn once.
    """
    side = cfg.size + 2 * motion_blur.flow_margin(cfg.u_max)
    name, window = sample_window(pair_rng(cfg, split, group, 1), split, side, cfg.size)
    window.setflags(write=False)
    return name, window


def make_flow_pair(cfg: SynthConfig, split: str, index: int) -> dict:
    """One flow-set pair (module docstring, ``sen_rpgan.md`` §5): blur, sharp and ``uv_half``."""
    name, window = flow_window(cfg, split, index // cfg.flows_per_image)
    margin = motion_blur.flow_margin(cfg.u_max)
    rng = pair_rng(cfg, split, index, 2)
    flow = motion_blur.random_flow(rng, cfg.size, cfg.size, cfg.u_max)
    blurred = motion_blur.blur_valid(window.astype(np.float64), flow)
    crop = np.s_[margin : margin + cfg.size, margin : margin + cfg.size]
    out = _finish(cfg, rng, name, {"blur": blurred, "sharp": window[crop]})
    # + 0: MATLAB rounding leaves -0.0 for small negative values; store clean zeros.
    out["flow"] = motion_blur.to_uv_half(flow).astype(np.float32) + np.float32(0)
    return out


def _finish(cfg: SynthConfig, rng, name: str, images: dict) -> dict:
    """Optional noise on the blurred images, then quantisation to uint8."""
    out = {"source": name}
    noise = None
    if cfg.noise_sigma > 0:
        noise = rng.normal(0.0, 255.0 * cfg.noise_sigma, images["sharp"].shape)
    for key, image in images.items():
        if noise is not None and key != "sharp":
            image = image + noise
        out[key] = quantise(image)
    return out


MAKERS = {"gopro": make_gopro_pair, "trajectory": make_trajectory_pair, "flow": make_flow_pair}


# ---------------------------------------------------------------------------------------------
# Writing a data set


def sequence_name(source: str, index: int) -> str:
    return f"SYN_{source}_{index // 100:03d}"


def write_pair(split_dir: str, index: int, pair: dict) -> str:
    """Writes one generated pair in the GoPro layout; returns its sequence name."""
    seq = sequence_name(pair["source"], index)
    frame = f"{index:06d}"
    for key in ("blur", "blur_gamma", "sharp", "flow"):
        if key not in pair:
            continue
        folder = os.path.join(split_dir, seq, key)
        os.makedirs(folder, exist_ok=True)
        if key == "flow":
            image_io.write_npy(os.path.join(folder, frame + ".npy"), pair[key])
        else:
            image_io.write_png(os.path.join(folder, frame + ".png"), pair[key])
    return seq


def generate_one(cfg: SynthConfig, split: str, index: int, split_dir: str) -> str:
    """Generates and writes pair ``index`` of ``split`` (the unit of work of a worker)."""
    return write_pair(split_dir, index, MAKERS[cfg.kind](cfg, split, index))


def generate_split(root: str, split: str, cfg: SynthConfig, workers: int = 1, log=None) -> None:
    """Generates every pair of a split into ``root/split``.

    ``workers > 1`` runs shards in separate Python processes (``subprocess``) rather than a
    multiprocessing pool: it is safe whatever the caller (no fork of a process holding
    TensorFlow's or OpenCV's threads, no re-import of an unguarded main script), and the output is
    identical because every pair has its own generator.
    """
    split_dir = os.path.join(root, split)
    os.makedirs(split_dir, exist_ok=True)
    n = cfg.pairs(split)
    groups = -(-n // cfg.group_size())
    if workers <= 1 or groups < 2:
        for done, i in enumerate(shard_indices(cfg, split, 0, 1), 1):
            generate_one(cfg, split, i, split_dir)
            _log_progress(log, split, done, n)
        return
    shards = [_start_shard(cfg, split, split_dir, k, workers) for k in range(min(workers, groups))]
    failed = [p.args for p in shards if p.wait() != 0]
    if failed:
        raise RuntimeError(f"synthetic data worker failed: {failed[0]}")
    _log_progress(log, split, n, n)


def shard_indices(cfg: SynthConfig, split: str, shard: int, count: int):
    """Pair indices of worker ``shard`` of ``count``: whole groups, round robin, in order."""
    size, n = cfg.group_size(), cfg.pairs(split)
    for start in range(shard * size, n, count * size):
        yield from range(start, min(start + size, n))


def _start_shard(cfg: SynthConfig, split: str, split_dir: str, shard: int, count: int):
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OPENCV_FOR_THREADS_NUM="1")  # the shards already use the cores
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    config = json.dumps(dataclasses.asdict(cfg))
    code = "import sys; from data.synthetic import _shard_main; _shard_main(sys.argv[1:])"
    cmd = [sys.executable, "-c", code, config, split, split_dir, str(shard), str(count)]
    return subprocess.Popen(cmd, env=env)


def _shard_main(argv: list[str]) -> None:
    config, split, split_dir, shard, count = argv
    cv2.setNumThreads(1)
    cfg = SynthConfig(**json.loads(config))
    for i in shard_indices(cfg, split, int(shard), int(count)):
        generate_one(cfg, split, i, split_dir)


def _log_progress(log, split: str, done: int, total: int) -> None:
    if log is not None and (done == total or done % 25 == 0):
        log(f"{split}: {done}/{total} pairs")


def manifest(cfg: SynthConfig) -> dict:
    return {
        "version": version(cfg.kind),
        "config": dataclasses.asdict(cfg),
        "layout": "GOPRO_Large: {train,test}/<sequence>/{blur,blur_gamma,sharp[,flow]}/<frame>",
        "sources": {s: list(sources.split_sources(s)) + ["deadleaves"] for s in SPLITS},
        "spec": "data_and_evaluation.md §2; sen_rpgan.md §5 (flow kind)",
    }


def build_dataset(
    out_dir: str, cfg: SynthConfig, workers: int = 1, overwrite: bool = False, log=None
) -> str:
    """Generates a whole data set atomically (temporary folder, then rename) and returns its path.

    Raises FileExistsError if ``out_dir`` exists and ``overwrite`` is False.
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists (use overwrite).")
    # fileio: a hidden folder named after this process (stale ones of dead processes are removed),
    # the umask's modes for every folder and file.
    tmp = fileio.temporary_dir(out_dir)
    try:
        for split in SPLITS:
            generate_split(tmp, split, cfg, workers, log)
        text = json.dumps(manifest(cfg), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        image_io.atomic_write_bytes(os.path.join(tmp, MANIFEST), text.encode())
        if overwrite:
            fileio.replace_dir(tmp, out_dir)
        else:
            os.rename(tmp, out_dir)  # fails if another process created it meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
