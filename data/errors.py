"""The one exception type of the data layer.

Every problem with a user's data (missing folder, missing counterpart, unreadable, truncated or
wrongly typed image, size mismatch, image smaller than the crop) raises :class:`DataError`, whose
message names the file or folder and the problem, so that training stops with an actionable message
instead of an opaque TensorFlow decoding error.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data set problem; the message names the file or folder and what is wrong with it."""
