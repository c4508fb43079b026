"""Every command line of the documentation parses with its script's own flags.

The command lines are the ``python <script>.py ...`` (and ``python -m data.check`` /
``python -m data.make_synthetic``) lines of the fenced code blocks of ``README.md`` and
``docs/*.md``: ``&&`` / ``;`` chains split, ``\\`` continuations joined, ``# comments`` dropped,
``python -m pip`` / ``pytest`` / ``ruff`` skipped. Placeholders are fine (parsing does not look at
paths); ``...`` and the brackets of ``[--optional flags]`` are ignored.

Each script's lines are parsed in one child process of their own, so that one script's flags can
never accept another's: the child runs the script as ``__main__`` with ``cli.run``,
``absl.app.run`` and absl's flag parsing (for the argparse benchmarks ``ArgumentParser.parse_args``)
replaced by a stop, so nothing is trained, loaded or imported beyond what the script imports to
define its flags (no TensorFlow), then parses every line with the script's parser (absl:
``FLAGS.unparse_flags(); FLAGS([script, *args])``). A failure names the page, the line and the
flag error.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REPO_ROOT
from tests.process_checks import result_json, run_python

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([^\s`]*)")
NOT_COMMANDS = {"python", "py", "pycon", "json", "toml", "yaml"}  # fenced code, not shell
PYTHONS = {"python", "python3"}
SKIPPED_MODULES = {"pip", "pytest", "ruff", "venv"}
CHAIN = {"&&", "||", ";", "|", "&"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
INVOCATION = re.compile(r"(^|[\s;&|])python3?\s")  # a line that may run a script

# The child: run the script as __main__ up to its flag parsing, then parse every line.
CHILD = r"""
import argparse, json, runpy, sys, traceback
from absl import app, flags
import cli

job = json.loads(sys.argv[1])
kind, name = job["target"]


class Entered(Exception):
    pass


class Captured(Exception):
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


class ParseError(Exception):
    pass


def stop(*args, **kwargs):
    raise Entered()


def capture(self, args=None, namespace=None):
    raise Captured(self)


def parse_error(message):
    raise ParseError(message)


# The script stops where it would parse its command line, whichever runner it uses.
parse_args, flag_values_call = argparse.ArgumentParser.parse_args, flags.FlagValues.__call__
cli.run = stop
app.run = stop
flags.FlagValues.__call__ = stop
argparse.ArgumentParser.parse_args = capture
sys.argv = [name]
parser, failures, setup = None, [], None
try:
    if kind == "module":
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(name, run_name="__main__")
    setup = "the script ended without reaching cli.run, absl's app.run or argparse"
except Entered:
    pass
except Captured as captured:
    parser = captured.parser
    parser.error = parse_error
except BaseException:
    setup = "running the script up to its flag parsing failed:\n" + traceback.format_exc(limit=3)
flags.FlagValues.__call__ = flag_values_call
for label, args in job["lines"]:
    if setup:
        failures.append([label, setup])
        continue
    try:
        if parser is None:
            flags.FLAGS.unparse_flags()
            flags.FLAGS([name, *args])
        else:
            parse_args(parser, args)
    except (flags.Error, ParseError) as error:
        failures.append([label, f"{type(error).__name__}: {error}"])
print("RESULT " + json.dumps({"failures": failures, "checked": len(job["lines"])}))
"""


def fenced_lines(path):
    """(line number, text) of the lines inside shell-like fenced blocks of ``path``, ``\\``
    continuations joined onto their first line."""
    lines, number, inside, fence, shell = [], 0, False, "", False
    pending, pending_number = None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if not inside and match:
            inside, fence = True, match.group(1)
            shell = match.group(2).lower() not in NOT_COMMANDS
            continue
        closing = line.strip()
        if inside and closing.startswith(fence) and not closing.strip(fence[0]):
            inside = False
            if pending is not None:
                lines.append((pending_number, pending))
                pending = None
            continue
        if not (inside and shell):
            continue
        if pending is None:
            pending, pending_number = "", number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((pending_number, pending + stripped))
        pending = None
    return lines


def tokens(text):
    """Shell words of ``text``, comments dropped, ``&&`` / ``;`` / ``|`` as words of their own."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def segments(words):
    """The commands of a chain: ``words`` split at ``&&``, ``||``, ``;``, ``|``, ``&``."""
    command = []
    for word in words:
        if word in CHAIN:
            if command:
                yield command
            command = []
        else:
            command.append(word)
    if command:
        yield command


def unbracket(word):
    """``[--flag`` -> ``--flag``, ``value]`` -> ``value`` (optional parts of a usage line)."""
    if word.startswith("[-"):
        word = word[1:]
    if word.endswith("]") and "[" not in word:
        word = word[:-1]
    return word


def target_and_args(command):
    """(("path", "x.py") | ("module", "data.check"), args) of a python command, else None."""
    while command and ENV_ASSIGNMENT.match(command[0]):
        command = command[1:]
    if len(command) < 2 or command[0] not in PYTHONS:
        return None
    if command[1] == "-m":
        if len(command) < 3 or command[2].split(".")[0] in SKIPPED_MODULES:
            return None
        target, args = ("module", command[2]), command[3:]
    elif command[1].endswith(".py"):
        target, args = ("path", command[1]), command[2:]
    else:
        return None
    args = [unbracket(word) for word in args if word not in ("...", "…")]
    return target, [word for word in args if word]


def documented_commands():
    """({target: [(label, args), ...]}, [unreadable lines]) over every page."""
    found, unreadable = {}, []
    for page in PAGES:
        relative = page.relative_to(REPO_ROOT)
        for number, text in fenced_lines(page):
            if not INVOCATION.search(text):
                continue
            try:
                words = tokens(text)
            except ValueError as error:  # e.g. an unclosed quote
                unreadable.append(f"{relative}:{number}: {text.strip()}\n    -> {error}")
                continue
            for command in segments(words):
                parsed = target_and_args(command)
                if parsed is None:
                    continue
                target, args = parsed
                label = f"{relative}:{number}: {' '.join(command)}"
                found.setdefault(target, []).append((label, args))
    return found, unreadable


COMMANDS, UNREADABLE = documented_commands()


def test_the_documentation_has_commands():
    """The README and the pages hold the commands of the main scripts (the extraction works)."""
    scripts = {name for _, name in COMMANDS}
    for script in ("train_mimo_unet.py", "evaluate.py", "export.py", "deblur.py", "train_rpgan.py"):
        assert script in scripts, f"no `python {script}` line found in a fenced block: {scripts}"
    readme = [label for lines in COMMANDS.values() for label, _ in lines]
    assert any(label.startswith("README.md:") for label in readme)
    assert not UNREADABLE, "command lines that are not shell words:\n" + "\n".join(UNREADABLE)


def test_extraction_of_chains_continuations_and_optional_parts(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```bash\n"
        "python -m pip install -r r.txt && python a.py --x 1 [--y 2]  # comment && python b.py\n"
        "python b.py --z '{\"k\": [1]}' \\\n    --w 3 ...\n"
        "KERAS_BACKEND=jax python -m data.check DIR --quick; python -m pytest -q\n"
        "```\n```python\npython c.py --never\n```\n",
        encoding="utf-8",
    )
    found = [target_and_args(c) for _, t in fenced_lines(page) for c in segments(tokens(t))]
    assert [f for f in found if f] == [
        (("path", "a.py"), ["--x", "1", "--y", "2"]),
        (("path", "b.py"), ["--z", '{"k": [1]}', "--w", "3"]),
        (("module", "data.check"), ["DIR", "--quick"]),
    ]


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's Keras seeding: these tests never import TensorFlow or Keras."""
    yield


def parse_in_child(target):
    """The child's result for ``target``'s lines (one process per script)."""
    job = {"target": list(target), "lines": [[label, args] for label, args in COMMANDS[target]]}
    return run_python(["-c", CHILD, json.dumps(job)], timeout=120)


@pytest.fixture(scope="module")
def parsed():
    """{target: CompletedProcess}: the children run side by side (each is a second of imports)."""
    targets = sorted(COMMANDS)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(targets, pool.map(parse_in_child, targets), strict=True))


@pytest.mark.parametrize("target", sorted(COMMANDS), ids=lambda target: target[1])
def test_documented_command_lines_parse(target, parsed):
    result = result_json(parsed[target])
    assert result["checked"] == len(COMMANDS[target])
    if result["failures"]:
        lines = "\n".join(f"{label}\n    -> {error}" for label, error in result["failures"])
        pytest.fail(f"documented command lines that do not parse:\n{lines}", pytrace=False)
