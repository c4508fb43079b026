"""The exception types of the data layer.

Every problem with a user's data (missing folder, missing counterpart, unreadable, truncated or
wrongly typed image, damage inside an image file, size mismatch, image smaller than the crop)
raises :class:`DataError`, whose message names the file or folder and the problem, so that a
command stops with one actionable line instead of an opaque TensorFlow decoding error.

Files are decoded by OpenCV inside ``tf.py_function`` (:mod:`data.sources`,
:mod:`data.pipeline`); a :class:`DataError` raised there reaches the Python code iterating the
dataset as a ``tf.errors.OpError`` whose long message embeds ``DataError: <file>: <problem>`` and a
traceback. :func:`from_op_error` recovers the original one-line message; iterating through
:func:`iterate` (or over the datasets :func:`data.pipeline.eval_dataset` returns) raises the
:class:`DataError` itself. :func:`iterate` also destroys the failed iterator (and with it the
input pipeline's threads, possibly still inside a ``py_function``) before raising: an iterator
left alive until the interpreter exits makes the process abort ("terminate called without an
active exception", exit 134) or hang. TensorFlow is imported only by :func:`iterate`, which runs
on datasets, so it is always loaded by then.
"""

from __future__ import annotations

import gc
import re

# How tf.py_function reports a Python exception: "<type name>: <message>\nTraceback ...".
_EMBEDDED = re.compile(r"(?:^|[^\w.])DataError: ([^\n]+)")


class DataError(ValueError):
    """A data set problem; the message names the file or folder and what is wrong with it."""


class MissingSplitError(DataError):
    """The requested split folder (``root/split``) or data folder does not exist at all.

    Callers that may run without an optional split (training's default validation split) catch
    this one; every other :class:`DataError` (a damaged file in an existing split) is fatal.
    """


def from_op_error(error: BaseException) -> DataError | None:
    """The :class:`DataError` a ``tf.py_function`` raised inside an input pipeline, rebuilt from
    the ``tf.errors.OpError`` that carried it out (``None`` if ``error`` does not carry one)."""
    if isinstance(error, DataError):
        return error
    text = getattr(error, "message", None) or str(error)
    match = _EMBEDDED.search(text)
    return DataError(match.group(1).strip()) if match else None


def iterate(dataset):
    """Yields the elements of ``dataset`` (a ``tf.data.Dataset``, a distributed dataset, anything
    iterable); a ``tf.errors.OpError`` raised while getting the next element is re-raised, after
    the iterator is destroyed, as the :class:`DataError` it carries or else as a copy of itself
    without the frames that hold the iterator (see the module docstring)."""
    import tensorflow as tf

    iterator = iter(dataset)
    failure = None
    while failure is None:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            failure = from_op_error(error) or type(error)(error.node_def, error.op, error.message)
        else:
            yield element
            del element
    del iterator  # cancels and joins the pipeline's threads
    gc.collect()  # tracebacks of earlier errors may hold the iterator's frames in cycles
    raise failure
