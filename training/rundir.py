"""The run directory's housekeeping, without TensorFlow: usability checks of ``--run_dir``, the
one-trainer-per-folder lock, leftovers of killed runs, the resume-compatibility check, and the
removal of a run folder that never reached its first step.

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
import os
import re
import shutil
import tempfile

import fileio

CKPT_FOLDERS = ("checkpoints", "best")
FILEIO_TARGETS = (("", "run_config.json"), ("", "final.weights.h5"), ("best", "best.json"))
OLD_TEMPORARIES = ("final.partial.weights.h5",)  # the names of earlier versions
_CKPT_TEMP = re.compile(r"^ckpt-\d+_temp")
_CKPT_FILE = re.compile(r"^(?P<prefix>ckpt-\d+)\.(?:index|data-\d+-of-\d+)$")
_STATE_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]+$")
_OLD_JSON_TEMP = re.compile(r"^\.tmp_.*\.json$")  # loop.write_json_atomic of earlier versions
_STATE_PATHS = re.compile(r'^(?:all_)?model_checkpoint_path(?:s)?: "(?P<path>[^"]*)"$')
MISSING = object()


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
    listed = _listed_prefixes(os.path.join(folder, "checkpoint"))
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


def first_difference(old, new, key: str = ""):
    """``(dotted key, old value, new value)`` of the first difference between two JSON-like
    values (dicts compared key by key, in sorted order), or None if they are equal. A key absent
    on one side has the value :data:`MISSING`."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new), key=str):
            found = first_difference(
                old.get(name, MISSING), new.get(name, MISSING), f"{key}.{name}" if key else name
            )
            if found:
                return found
        return None
    return None if old == new else (key, old, new)


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
