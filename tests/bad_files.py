"""Damaged files for the tests of every command (no TensorFlow here).

:func:`write_damaged_png` makes the file of the project issue's point 1: a PNG whose signature,
IHDR and IEND chunks are intact (so header-only checks pass) but whose compressed image data has
200 bytes overwritten, so only decoding finds the damage.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(payload: bytes):
    """``[(type, data_offset, length), ...]`` of a PNG byte string, in file order."""
    assert payload[:8] == PNG_SIGNATURE, "not a PNG"
    chunks, offset = [], 8
    while offset < len(payload):
        (length,) = struct.unpack(">I", payload[offset : offset + 4])
        kind = payload[offset + 4 : offset + 8].decode("latin-1")
        chunks.append((kind, offset + 8, length))
        offset += 12 + length
    return chunks


def damage_png_bytes(payload: bytes, count: int = 200, seed: int = 0) -> bytes:
    """``payload`` with ``count`` bytes in the middle of its (first) IDAT chunk's data replaced by
    random bytes; signature, IHDR, IEND and every chunk length stay as they were (the IDAT CRC no
    longer matches its data, as after a disk or transfer error)."""
    idat = [(offset, length) for kind, offset, length in png_chunks(payload) if kind == "IDAT"]
    assert idat, "PNG without IDAT"
    offset, length = idat[0]
    count = min(count, length)  # a tiny image's IDAT may be shorter than 200 bytes
    start = offset + (length - count) // 2
    noise = np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    damaged = payload[:start] + noise + payload[start + count :]
    assert len(damaged) == len(payload)
    return damaged


def damage_png(path, count: int = 200, seed: int = 1) -> str:
    """Damages the PNG file at ``path`` in place (:func:`damage_png_bytes`); returns the path."""
    with open(path, "rb") as handle:
        payload = handle.read()
    with open(path, "wb") as handle:
        handle.write(damage_png_bytes(payload, count, seed))
    return str(path)


def write_damaged_png(path, shape=(64, 64, 3), seed: int = 0) -> str:
    """Writes a noisy ``shape`` uint8 image as PNG with cv2, then damages 200 bytes of its IDAT
    data (:func:`damage_png_bytes`). Noise keeps the compressed data long enough at any size."""
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    with open(path, "wb") as handle:
        handle.write(damage_png_bytes(encoded.tobytes(), seed=seed))
    return str(path)
