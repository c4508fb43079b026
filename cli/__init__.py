"""What every command-line script shares: flags defined once, ``--help`` that lists the script's
own flags and exits 0, TensorFlow's start-up noise hidden, results on stdout.

A script defines its flags at import time without importing TensorFlow (so ``--help`` and flag
errors answer in about a second), declares them key flags (:func:`declare_key_flags`: absl's help
lists the main module's key flags only, and shared flags are defined in other modules), and ends
with ``cli.run(main)``, which:

* answers ``-h`` / ``--help`` / ``--helpshort`` with the docstring and the key flags (defaults
  included) and ``--helpfull`` with every flag, both with exit status 0 (absl's own exit 1);
* hides TensorFlow's C++ start-up lines (oneDNN notice, CUDA probing on a CPU-only machine, the
  "failed call to cuInit" error line, CPU feature guard) unless ``--tf_logs`` is given: they are
  not about the user's command and one of them looks like an error.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
# Flags defined through define_once belong to the module that called it, not to this one, so that a
# script's --help (its module's key flags) lists them.
flags.disclaim_key_flags()
HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")
HELPFULL_ARGS = ("--helpfull", "-helpfull")


def define_precision_flag():
    """``--precision float32|bfloat16|float16`` (:mod:`precision`), the same in every command."""
    from absl import flags

    import precision

    define_once(
        flags.DEFINE_enum,
        "precision",
        "float32",
        precision.HELP,
        enum_values=list(precision.PRECISIONS),
    )


def define_once(define, name, default, help_text, **kwargs):
    """``define(name, default, help_text, **kwargs)`` unless a flag ``name`` already exists
    (several scripts share flag names and may be imported in one process)."""
    if name not in FLAGS:
        define(name=name, default=default, help=help_text, **kwargs)


define_once(
    flags.DEFINE_bool,
    "tf_logs",
    False,
    "Show TensorFlow's start-up log lines (hidden by default; for debugging the installation).",
)


def declare_key_flags(names) -> None:
    """Makes ``names`` (defined in any module) key flags of the calling script, so that its
    ``--help`` lists them."""
    for name in names:
        flags.declare_key_flag(name)


def help_text(full: bool = False) -> str:
    """The usage text: the main module's docstring, then its key flags (or every flag)."""
    doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
    listed = FLAGS.get_help() if full else FLAGS.main_module_help()
    more = "" if full else "\n\nAll flags, including absl's own: --helpfull"
    return f"{doc}\n\nFlags:\n{listed}{more}\n"


def import_tensorflow():
    """Imports and returns TensorFlow with its C++ start-up lines hidden (unless ``--tf_logs``).

    ``TF_CPP_MIN_LOG_LEVEL=3`` (set by :func:`run`) silences TensorFlow's C++ logging once it is
    initialised; the first lines are written before that (absl's "before InitializeLog" notice,
    oneDNN, CUDA stub), so file descriptor 2 points at a temporary file during the import and the
    text is replayed only if the import fails. Scripts call it after their flag checks, where they
    first need TensorFlow, so a bad flag still fails in about a second.
    """
    verbose = FLAGS.is_parsed() and FLAGS.tf_logs
    if verbose or "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    with stderr_captured() as captured:
        try:
            import tensorflow
        except BaseException:
            sys.stderr.write(captured())
            raise
    return tensorflow


@contextlib.contextmanager
def stderr_captured():
    """Points file descriptor 2 (C/C++ libraries' messages too) at a temporary file; yields a
    function returning the text captured so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)

        def text():
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")

        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run(main) -> None:
    """``absl.app.run(main)`` with a ``--help`` that exits 0 and TensorFlow's noise hidden."""
    flags.declare_key_flag("tf_logs")  # a key flag of the calling script (this module disclaims)
    args = sys.argv[1:]
    if any(arg in HELPFULL_ARGS for arg in args):
        sys.stdout.write(help_text(full=True))
        sys.exit(0)
    if any(arg in HELP_ARGS for arg in args):
        sys.stdout.write(help_text())
        sys.exit(0)

    def quiet_main(argv):
        if not FLAGS.tf_logs:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return main(argv)

    app.run(quiet_main, flags_parser=parse_flags)


def parse_flags(argv):
    """absl's parsing, but a bad flag value is the project's one line (``<script>: error: ...``,
    exit 1) instead of absl's "FATAL Flags parsing error" and usage hint."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        script = os.path.basename(argv[0]) if argv else "command"
        sys.stderr.write(f"{script}: error: {error}\n")
        sys.exit(1)
