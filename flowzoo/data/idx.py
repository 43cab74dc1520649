"""A strict reader for IDX files, the format of MNIST and Fashion-MNIST, written from its definition.

An IDX file is a header followed by the data, every number big-endian:
    bytes 0-1   0x00 0x00
    byte  2     the element type: 0x08 unsigned byte (0x09 signed byte, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64 are the others; nothing flowzoo reads uses them)
    byte  3     the number of dimensions, d
    then        d sizes, 4-byte unsigned big-endian integers
    then        prod(sizes) elements in C order (the last dimension varies fastest)
So images (N, 28, 28) of bytes carry the magic number 0x00000803 and labels (N,) 0x00000801.

Only unsigned bytes are accepted, and the data must be exactly as long as the sizes say: a short file
(a torn download) and a long one (two files joined, or not IDX at all) are both errors, never silently
cut or padded. A file whose first two bytes are gzip's (1f 8b) is decompressed first, whatever its name.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

UNSIGNED_BYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
HEADER = struct.Struct(">BBBB")  # two zero bytes, element type, number of dimensions
SIZE = struct.Struct(">I")


class IDXError(ValueError):
    """A file that is not a well-formed IDX file of the expected kind; the message says what is wrong."""


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip data; IDXError when the gzip stream is torn or corrupt."""
    raw = Path(path).read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IDXError("its gzip stream ends early (the file is truncated)") from None
    except (OSError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise IDXError(f"it is not valid gzip data ({exc})") from None


def parse_idx(data: bytes, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file's bytes, which must hold `ndim` dimensions of unsigned bytes."""
    if len(data) < HEADER.size:
        raise IDXError(f"it is {len(data)} bytes long, shorter than the 4-byte IDX header")
    zero0, zero1, kind, dims = HEADER.unpack_from(data)
    expected_magic = (UNSIGNED_BYTE << 8) | ndim
    if zero0 or zero1 or kind != UNSIGNED_BYTE or dims != ndim:
        magic = int.from_bytes(data[:4], "big")
        raise IDXError(f"its magic number is 0x{magic:08X}, not 0x{expected_magic:08X} "
                       f"(unsigned bytes in {ndim} dimension{'s' if ndim > 1 else ''})")
    start = HEADER.size + SIZE.size * ndim
    if len(data) < start:
        raise IDXError(f"its header is cut short ({len(data)} bytes, the {ndim} sizes need {start})")
    shape = tuple(SIZE.unpack_from(data, HEADER.size + SIZE.size * i)[0] for i in range(ndim))
    expected = math.prod(shape)
    found = len(data) - start
    if found != expected:
        cause = "truncated" if found < expected else "longer than its header says"
        raise IDXError(f"it holds {found:,} data bytes where its header {shape} needs {expected:,} (the file is {cause})")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """parse_idx of the file at `path` (plain or gzipped); IDXError, or OSError when it cannot be read."""
    return parse_idx(read_bytes(Path(path)), ndim)
