"""Atomic outputs shared by every command: nothing half-written, nothing left behind, usual modes.

Every file or folder a command produces is written under a hidden temporary name in the target's
own folder, then renamed into place (``os.replace``: atomic on one file system). Temporary names
carry the writer's process id, ``.<name>.tmp-<pid>[-<random>]``, so that the next writer of the same
target removes the leftovers of a killed process (``kill -9``, power loss) and never those of a
process that is still running. Outputs get the modes of the user's umask (``0666 & ~umask`` for
files, ``0777 & ~umask`` for folders), not the ``0600`` / ``0700`` that ``tempfile`` creates.

Layout-free: paths are strings; no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile

_TEMP = re.compile(r"^\.(?P<base>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists on this machine (ours or another user's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str, base: str) -> list[str]:
    """Removes ``folder/.<base>.tmp-<pid>*`` and ``.<base>.old-<pid>*`` left by dead processes.

    Returns the removed paths. Missing folders and entries that vanish meanwhile are ignored.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP.match(name)
        if not match or match["base"] != base or pid_alive(int(match["pid"])):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                continue
        removed.append(path)
    return removed


def atomic_write_bytes(path: str, payload) -> None:
    """Writes ``payload`` (bytes-like) to ``path`` through ``.<name>.tmp-<pid>`` in the same folder.

    Creates missing parent folders; the file gets the umask's mode; stale temporaries of the same
    name from dead processes are removed first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    remove_stale_temporaries(folder, base)
    temp = os.path.join(folder, f".{base}.tmp-{os.getpid()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str, sync: bool = False):
    """Yields a temporary ``.<name>.tmp-<pid>-partial<suffix>`` beside ``path`` for a writer that
    needs a file name (and a suffix choosing its format); renamed to ``path`` when the block ends
    normally (after an ``fsync`` with ``sync``), removed otherwise. Creates missing parent folders
    and removes stale temporaries of dead processes first."""
    folder, base = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder, base)
    temp = os.path.join(folder, f".{base}.tmp-{os.getpid()}-partial{suffix}")
    try:
        yield temp
        if sync:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the data is on disk before the rename makes it the output
            finally:
                os.close(fd)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def atomic_save_weights(model, path: str) -> None:
    """``model.save_weights`` to ``path`` through :func:`atomic_path` (Keras wants the
    ``.weights.h5`` suffix)."""
    with atomic_path(path, ".weights.h5") as temp:
        model.save_weights(temp)


def atomic_write_json(path: str, payload) -> None:
    """``payload`` as indented JSON (no NaN/Inf) through :func:`atomic_write_bytes`."""
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def write_results(out_dir: str, csv_text: str, summary: dict) -> None:
    """An evaluation's ``per_image.csv`` and ``summary.json`` in ``out_dir``, each atomically."""
    atomic_write_bytes(os.path.join(out_dir, "per_image.csv"), csv_text.encode())
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)


def temporary_dir(target: str, kind: str = "tmp") -> str:
    """A new empty hidden folder ``.<name>.<kind>-<pid>-<random>`` beside ``target`` with the
    umask's mode, after removing the stale ones of dead processes. Rename it to ``target`` when
    complete (:func:`replace_dir`)."""
    parent = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(parent, base)
    folder = tempfile.mkdtemp(prefix=f".{base}.{kind}-{os.getpid()}-", dir=parent)
    os.chmod(folder, dir_mode())
    return folder


def replace_dir(temp: str, target: str) -> None:
    """Moves the complete folder ``temp`` to ``target``; an existing ``target`` is moved aside
    first and deleted after the rename, so ``target`` is always either the old or the new one."""
    old = None
    if os.path.exists(target):
        old = temporary_dir(target, kind="old")
        os.replace(target, os.path.join(old, "previous"))
    os.replace(temp, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)
