"""Running Python in a child process from tests: one place for the environment, time-out and the
``RESULT <json>`` convention of child scripts that report numbers back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

RESULT_PREFIX = "RESULT "


def run_python(args, *, env=None, timeout=300, quiet_tf=True):
    """``python *args`` in the repository root; returns the ``CompletedProcess`` (text output).

    Args:
        args: the interpreter's arguments, e.g. ``["-c", code]`` or ``["evaluate.py", "--help"]``.
        env: variables added to (or, with value ``None``, removed from) this process's environment.
        quiet_tf: ``TF_CPP_MIN_LOG_LEVEL=2`` and no GPU unless ``env`` says otherwise.
    """
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    if quiet_tf:
        environment.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def result_json(proc, which=-1):
    """The JSON a child printed after ``RESULT `` (the last line by default); asserts exit 0."""
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[which][len(RESULT_PREFIX) :])
