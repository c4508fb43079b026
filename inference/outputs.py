"""Output locations of the user commands, checked before any work starts, explained in words.

evaluate.py, export.py and deblur.py call these before loading the model and before the first
image, so a mistake in an output path costs a second, not hours of scoring. Each problem raises
:class:`OutputError` with one sentence naming the flag and the path:

* ``--out_dir runs/x/eval: is a file, not a folder.``
* ``--out exports/m: is under the file exports, not a folder.``
* ``--save_images /data/out: /data is not writable.``
* ``--out_dir results: results/summary.json exists; pass --overwrite to replace it.``

The rule for existing results (the same in the three commands): an output that would replace an
existing file or folder is refused unless ``--overwrite`` is given.

No TensorFlow; paths are strings.
"""

from __future__ import annotations

import os


class OutputError(ValueError):
    """An output location that cannot be used; the message names the flag and the path."""


def _first_existing(path: str) -> str:
    """``path`` itself or its nearest existing ancestor (absolute)."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_folder(path: str, flag: str) -> None:
    """``path`` is, or can be created as, a folder this process can write into."""
    where = f"{flag} {path}"
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{where}: is a file, not a folder.")
    existing = _first_existing(path)
    if not os.path.isdir(existing):
        raise OutputError(f"{where}: is under the file {existing}, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{where}: {existing} is not writable.")


def check_new_folder(path: str, flag: str) -> None:
    """``path`` can be created, or replaced, as a whole folder (export.py's ``--out``): it is not
    a file, and the folder that will hold it can be created and written."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path}: is a file, not a folder.")
    _check_parent(path, flag)


def check_file_target(path: str, flag: str) -> None:
    """``path`` can be written as a file: not a folder, and its folder can be created/written."""
    if os.path.isdir(path):
        raise OutputError(f"{flag} {path}: is a folder, not a file.")
    _check_parent(path, flag)


def _check_parent(path: str, flag: str) -> None:
    existing = _first_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(existing):
        raise OutputError(f"{flag} {path}: is under the file {existing}, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {existing} is not writable.")


def refuse_existing(paths, flag: str, overwrite: bool, what: str = "") -> None:
    """Refuses when any of ``paths`` exists and ``overwrite`` is false; names the first one and how
    many exist. ``what`` (e.g. the flag's value) prefixes the message after the flag."""
    if overwrite:
        return
    existing = [p for p in paths if os.path.lexists(p)]
    if not existing:
        return
    more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
    them = "them" if len(existing) > 1 else "it"
    prefix = f"{flag} {what}: " if what else f"{flag}: "
    raise OutputError(f"{prefix}{existing[0]} exists{more}; pass --overwrite to replace {them}.")
