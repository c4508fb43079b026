"""The run directory: its layout, who reads and writes it, and its housekeeping. Nothing else in
the project spells a file or folder name of a run; no TensorFlow here.

Layout (written by the training loop, read by evaluate.py, export.py, deblur.py, evaluate_flow.py,
train_sen.py's stage 2 and the framework loader)::

    run_dir/
      run_config.json      the run's typed configuration ("config"), model, model_kwargs, paper,
                           data description, loop summary (atomic write)
      checkpoints/         tf.train.CheckpointManager: model, optimizer(s), step, epoch, epoch_step
      best/                the same format, best validation score; best/best.json
      tensorboard/         scalars and images
      final.weights.h5     Keras weights of the inference model, written at the end
      sen.weights.h5       an RP-GAN run's frozen SEN (the blind deblurring framework)

A path *inside* a run (a checkpoint folder, a prefix, ``final.weights.h5``) finds its run through
:func:`find_run` (the folder holding ``run_config.json``, at most two folders up).

Housekeeping: usability checks of ``--run_dir``, the one-trainer-per-folder lock, leftovers of
killed runs, the resume-compatibility comparison, and the removal of a run folder that never
reached its first step.

Leftovers (:func:`remove_leftovers`): a run killed with ``kill -9`` (or a power loss) in the middle
of a checkpoint save leaves ``checkpoints/ckpt-<N>_temp/`` (TensorFlow's sharded save writes
``<prefix>_temp/part-*`` and merges them into ``<prefix>.index`` / ``.data-*``), possibly merged
``ckpt-<N>.*`` files that the ``checkpoint`` state file never listed, and
``checkpoint.tmp<hex>`` (TensorFlow's atomic write of that state file); killed in the middle of a
JSON or final-weights write it leaves :mod:`fileio` temporaries. The chief trainer removes them at
start, under an exclusive lock on the run folder (:class:`RunDirLock`), so they can only belong to
a dead process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile

import fileio

RUN_CONFIG = "run_config.json"
CHECKPOINTS, BEST, TENSORBOARD = "checkpoints", "best", "tensorboard"
BEST_JSON, FINAL_WEIGHTS = "best.json", "final.weights.h5"
SEN_WEIGHTS = "sen.weights.h5"  # an RP-GAN run's frozen SEN
CHECKPOINT_STATE = "checkpoint"  # tf.train.CheckpointManager's state file in a checkpoint folder
CKPT_FOLDERS = (CHECKPOINTS, BEST)
FILEIO_TARGETS = (("", RUN_CONFIG), ("", FINAL_WEIGHTS), (BEST, BEST_JSON))
OLD_TEMPORARIES = ("final.partial.weights.h5",)  # the names of earlier versions
_CKPT_TEMP = re.compile(r"^ckpt-\d+_temp")
_CKPT_FILE = re.compile(r"^(?P<prefix>ckpt-\d+)\.(?:index|data-\d+-of-\d+)$")
_STATE_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]+$")
_OLD_JSON_TEMP = re.compile(r"^\.tmp_.*\.json$")  # loop.write_json_atomic of earlier versions
_STATE_PATHS = re.compile(r'^(?:all_)?model_checkpoint_path(?:s)?: "(?P<path>[^"]*)"$')
MISSING = object()


class RunDirError(ValueError):
    """A run folder, checkpoint or ``run_config.json`` that cannot be used; the message starts
    with the path (callers prefix the flag that named it)."""


# --------------------------------------------------------------------------------------------------
# Layout: reading and writing a run
# --------------------------------------------------------------------------------------------------


def run_config_path(run_dir: str) -> str:
    return os.path.join(run_dir, RUN_CONFIG)


def final_weights_path(run_dir: str) -> str:
    return os.path.join(run_dir, FINAL_WEIGHTS)


def sen_weights_path(run_dir: str) -> str:
    return os.path.join(run_dir, SEN_WEIGHTS)


def write_json(path: str, payload) -> None:
    """Indented JSON with sorted keys (values JSON cannot hold as their ``str``), written through
    :func:`fileio.atomic_write_bytes` (temporary file, rename; the umask's mode)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    fileio.atomic_write_bytes(os.fspath(path), text.encode("utf-8"))


def read_json(path: str):
    """The parsed JSON file at ``path``, or None if it does not exist; :class:`RunDirError` if it
    cannot be read or parsed."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path}: not readable JSON ({error}).") from None


def write_run_config(run_dir: str, payload: dict) -> None:
    write_json(run_config_path(run_dir), payload)


def read_run_config(path: str) -> dict:
    """The ``run_config.json`` of the run folder ``path`` (or that file itself): an object naming
    its ``model``; :class:`RunDirError` if it is absent, unreadable or not such an object."""
    file = run_config_path(path) if os.path.isdir(path) else path
    config = read_json(file)
    if config is None:
        raise RunDirError(f"{file}: no such file.")
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise RunDirError(f"{file}: expected an object with a 'model' name.")
    return config


def find_run(path: str) -> str | None:
    """The run folder ``path`` belongs to: the folder holding ``run_config.json`` at ``path`` (a
    folder, or a file's folder) or at most two folders above it; None if there is none."""
    path = os.path.abspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for _ in range(3):
        if os.path.isfile(run_config_path(folder)):
            return folder
        folder = os.path.dirname(folder)
    return None


def find_run_config(path: str) -> dict | None:
    """:func:`read_run_config` of the run ``path`` belongs to (:func:`find_run`); None if none."""
    run = find_run(path)
    return None if run is None else read_run_config(run)


def latest_checkpoint(folder: str) -> str | None:
    """The newest checkpoint prefix recorded in ``folder``'s ``checkpoint`` state file whose
    ``.index`` exists (``tf.train.latest_checkpoint`` without TensorFlow); None if none."""
    try:
        with open(os.path.join(folder, CHECKPOINT_STATE), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        match = _STATE_PATHS.match(line.strip())
        if match and line.strip().startswith("model_checkpoint_path"):
            prefix = match["path"]
            prefix = prefix if os.path.isabs(prefix) else os.path.join(folder, prefix)
            return prefix if os.path.isfile(prefix + ".index") else None
    return None


def resolve_checkpoint(path: str) -> tuple[str | None, str | None]:
    """``(prefix, None)`` for a checkpoint prefix, a checkpoint folder or a run (its latest in
    ``checkpoints/``), or ``(None, final.weights.h5)`` for a run without checkpoints;
    :class:`RunDirError` naming what was looked for otherwise."""
    if os.path.isfile(path + ".index"):
        return path, None
    if not os.path.isdir(path):
        raise RunDirError(f"{path}: neither a directory nor a checkpoint prefix.")
    for folder in (os.path.join(path, CHECKPOINTS), path):
        latest = latest_checkpoint(folder) if os.path.isdir(folder) else None
        if latest:
            return latest, None
    final = final_weights_path(path)
    if os.path.isfile(final):
        return None, final
    raise RunDirError(
        f"{path}: no checkpoint found (looked for {path}/{CHECKPOINTS}/, a checkpoint folder, and "
        f"{final})."
    )


# --------------------------------------------------------------------------------------------------
# Housekeeping
# --------------------------------------------------------------------------------------------------


def run_dir_problem(path: str) -> str | None:
    """Why ``path`` cannot be a run folder (a file, or no folder can be written there), else None.

    Nothing is created: the deepest existing folder on the way is probed with a temporary file
    (``os.access`` says yes to root on read-only file systems).
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"--run_dir {path} is a file, not a folder"
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"--run_dir {path}: {existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".probe.tmp-{os.getpid()}-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or error
        return f"--run_dir {path} is not writable (cannot create a file in {existing}: {reason})"
    return None


class RunDirLock:
    """An exclusive ``flock`` on the run folder itself (no lock file is left behind): a second
    trainer on the same folder is refused instead of interleaving checkpoints, and every
    temporary found at start belongs to a dead process."""

    def __init__(self, path: str):
        self.path, self.fd = path, None

    def acquire(self) -> bool:
        """True if the lock is now held; False if another process holds it."""
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def remove_leftovers(run_dir: str) -> list[str]:
    """Removes the temporaries of killed runs (module docstring) in ``run_dir``; returns them.

    Call only while holding :class:`RunDirLock`.
    """
    removed = []
    for folder, target in FILEIO_TARGETS:
        removed += fileio.remove_stale_temporaries(os.path.join(run_dir, folder), target)
    for name in _listdir(run_dir):
        if name in OLD_TEMPORARIES or _OLD_JSON_TEMP.match(name):
            removed.append(_remove(os.path.join(run_dir, name)))
    for folder in CKPT_FOLDERS:
        removed += _checkpoint_leftovers(os.path.join(run_dir, folder))
    return removed


def _checkpoint_leftovers(folder: str) -> list[str]:
    names = _listdir(folder)
    listed = _listed_prefixes(os.path.join(folder, CHECKPOINT_STATE))
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        temporary = any(p.match(name) for p in (_CKPT_TEMP, _STATE_TEMP, _OLD_JSON_TEMP))
        if temporary or _is_unrecorded(name, listed):
            removed.append(_remove(path))
    return removed


def _is_unrecorded(name: str, listed: set[str] | None) -> bool:
    """A ``ckpt-<N>.*`` file merged by a save that never reached the state file: newer than every
    listed checkpoint, or any when there is no state file (the first save was killed). Nothing is
    judged when the state file exists but lists nothing readable."""
    match = _CKPT_FILE.match(name)
    if match is None or listed == set():
        return False
    if listed is None:
        return True
    newest = max(int(prefix.rsplit("-", 1)[1]) for prefix in listed)
    return int(match["prefix"].rsplit("-", 1)[1]) > newest


def _listed_prefixes(state_file: str) -> set[str] | None:
    """Checkpoint prefixes (base names) listed in a CheckpointManager ``checkpoint`` file; None if
    there is no such file."""
    try:
        with open(state_file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    except OSError:
        return set()
    prefixes = set()
    for line in lines:
        match = _STATE_PATHS.match(line.strip())
        if match:
            name = os.path.basename(match["path"])
            if re.fullmatch(r"ckpt-\d+", name):
                prefixes.add(name)
    return prefixes


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _remove(path: str) -> str:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return path


def first_difference(old, new):
    """``(dotted key, old value, new value)`` of the first of :func:`differences`, or None if the
    two JSON-like values are equal."""
    found = differences(old, new)
    return found[0] if found else None


def differences(old, new, key: str = "") -> list:
    """Every ``(dotted key, old value, new value)`` where two JSON-like values differ (dicts
    compared key by key, in sorted order; an absent key has the value :data:`MISSING`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for name in sorted(set(old) | set(new), key=str):
            dotted = f"{key}.{name}" if key else name
            found += differences(old.get(name, MISSING), new.get(name, MISSING), dotted)
        return found
    return [] if old == new else [(key, old, new)]


def describe_value(value) -> str:
    return "(not set)" if value is MISSING else repr(value)


class Created:
    """What this process added to a run folder, so that a run that never reached its first step
    can be removed again without touching anything that was there before."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.folder_created = not os.path.exists(run_dir)
        self.before = set() if self.folder_created else set(_listdir(run_dir))

    def remove(self) -> None:
        if self.folder_created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in set(_listdir(self.run_dir)) - self.before:
            _remove(os.path.join(self.run_dir, name))
