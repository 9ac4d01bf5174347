"""Pure image-file checks shared by the dataset and batch-segmentation pipelines (Pillow only)."""
from __future__ import annotations

import io
import posixpath
import re
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from segformat.limits import DEFAULT_MAX_PIXELS
from segformat.masks import InputError

try:
    from isal import isal_zlib as _deflate
except ImportError:  # a platform without isal wheels: the standard zlib, ~10x slower
    _deflate = zlib

SUPPORTED_FORMATS = {"JPEG": "jpeg", "PNG": "png"}


class ImageError(InputError):
    """An input image that cannot be used."""


def join_under_root(root: str, relative: str) -> str:
    """``root/relative``, refusing a relative path that is absolute, climbs with ``..`` or (on a
    local disk) leads through a symbolic link to a file outside ``root``."""
    if not isinstance(relative, str) or not relative:
        raise ImageError("malformed_image_record", "empty file_name")
    if (relative.startswith(("/", "\\")) or "://" in relative
            or (len(relative) > 1 and relative[1] == ":")):
        raise ImageError("path_escapes_root", f"absolute file_name {relative!r}")
    parts = relative.replace("\\", "/").split("/")
    if ".." in parts:
        raise ImageError("path_escapes_root", f"file_name {relative!r} contains '..'")
    joined = root.rstrip("/") + "/" + posixpath.normpath("/".join(parts)).lstrip("/")
    ensure_inside(joined, root, f"file_name {relative!r}")
    return joined


def ensure_inside(path: str, root: str, what: str = "") -> None:
    """On a local disk, refuses a path that leads through a symbolic link to a file outside
    ``root`` (object stores have no links)."""
    if "://" in root or "://" in path:
        return
    import os
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise ImageError("path_escapes_root", f"{what or path} is a link to a file outside {root}")


# libjpeg's warning about junk between the last coded data and the end-of-image marker (some
# cameras and editors write it): the pixels are whole, and TensorFlow's decoder reads such files.
# Every other warning (data segment ended early, bad Huffman code, premature end of file, junk
# inside the headers) means damaged pixels or headers, which TensorFlow may refuse mid-training.
HARMLESS_JPEG_WARNING = re.compile(r"extraneous bytes before marker 0xd9$")


def check_jpeg_data(data: bytes) -> bool:
    """Decodes a JPEG at 1/8 scale (every coded byte is still read) with libjpeg-turbo's warnings
    as errors. True when it decoded; False when libjpeg-turbo cannot convert its colour space
    (CMYK: Pillow checks it instead); raises ImageError("corrupt_image") on damaged data."""
    import simplejpeg
    try:
        simplejpeg.decode_jpeg(data, strict=True, min_height=1, min_width=1, min_factor=8)
        return True
    except ValueError as error:
        message = str(error)
        if HARMLESS_JPEG_WARNING.search(message):
            return True
        if "color conversion" in message.lower() or "colorspace" in message.lower():
            return False
        reason = "truncated_image" if "premature end of jpeg file" in message.lower() else "corrupt_image"
        raise ImageError(reason, message) from None


def check_png_chunks(data: bytes) -> None:
    """Verifies the CRC-32 of every PNG chunk. Pillow does not check the image data chunks'
    CRCs (and stops inflating once it has its rows), so a flipped bit there passes Pillow but
    stops libpng, the decoder TensorFlow uses in the trainer (found by tests/test_fuzz.py)."""
    offset = 8
    while offset + 12 <= len(data):
        length = struct.unpack(">I", data[offset:offset + 4])[0]
        end = offset + 12 + length
        if end > len(data):
            raise ImageError("truncated_image", f"PNG chunk at byte {offset} runs past the end of the file")
        kind = data[offset + 4:offset + 8]
        if zlib.crc32(data[offset + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            raise ImageError("corrupt_image", f"PNG {kind.decode('latin-1')!r} chunk at byte {offset} fails its CRC")
        if kind == b"IEND":
            return
        offset = end
    raise ImageError("truncated_image", "PNG without its IEND chunk")


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Checks that ``data`` is a complete JPEG or PNG; returns (format, height, width).

    The whole file is decoded (JPEGs at 1/8 scale in the DCT domain, which is ~10x cheaper and
    still reads every byte, with libjpeg-turbo's warnings as errors), so truncated and corrupt
    files are caught here rather than in the trainer. The size check happens on the header,
    before any pixel is decoded.
    """
    if not data:
        raise ImageError("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError("decompression_bomb",
                                 f"{width}x{height} pixels exceeds the limit of {max_pixels}")
            fmt = SUPPORTED_FORMATS.get(image.format)
            if fmt is None:
                raise ImageError("unsupported_format", f"{image.format} (JPEG and PNG are supported)")
            if fmt == "jpeg" and check_jpeg_data(data):
                return fmt, height, width
            if fmt == "png":
                check_png_chunks(data)
            if fmt == "jpeg":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("decompression_bomb", str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:  # what Pillow raises on bad files
        reason = "truncated_image" if "truncated" in str(e) else "corrupt_image"
        raise ImageError(reason, str(e)) from None
    return fmt, height, width


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Single-channel 8-bit PNG of a class mask.

    Written directly (filter type 0, a zlib stream at level 1 from ISA-L, or zlib itself where
    the isal package is missing) rather than with Pillow: Pillow's encoder spends ~1.4 ms of its
    1.5 ms per 640x480 mask choosing adaptive row filters, which buy nothing on label maps (long
    runs of one value); this takes ~0.2 ms, most of it the copy into rows. Any PNG reader
    (Pillow, tf.io.decode_png, libpng) reads it.
    """
    mask = np.asarray(mask, dtype=np.uint8)  # any memory order: it is copied into `rows` once
    if mask.ndim != 2:
        raise ValueError(f"a class mask is [H, W], got shape {mask.shape}")
    height, width = mask.shape
    rows = np.zeros((height, width + 1), np.uint8)  # each row: filter byte 0, then the pixels
    rows[:, 1:] = mask

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", _deflate.compress(rows, 1))
            + chunk(b"IEND", b""))


def glob_root(pattern: str) -> str:
    """The part of a glob before its first wildcard, up to the last '/' (``data/*/x.png`` -> ``data/``)."""
    cut = len(pattern)
    for char in "*?[":
        position = pattern.find(char)
        if position != -1:
            cut = min(cut, position)
    return pattern[: pattern.rfind("/", 0, cut) + 1] if "/" in pattern[:cut] else ""


SEGMENT_OUTPUTS = tuple(f"{folder}/x{ext}" for folder in ("masks", "overlays", "masks/a/b")
                        for ext in (".png", ".tif", ".jpg", ".json"))


def output_inside_input(output_dir: str, pattern: str, outputs=SEGMENT_OUTPUTS) -> bool:
    """Whether files a job writes under ``output_dir`` (``outputs``, relative names; by default
    batch segmentation's masks and overlays) could match the input glob: a re-run would read its
    own outputs as inputs."""
    from apache_beam.io.filesystem import FileSystem
    matcher = re.compile(FileSystem.translate_pattern(pattern))  # the rule Beam's match applies
    base = output_dir.rstrip("/")
    return any(matcher.match(f"{base}/{name}") for name in outputs)


def same_folder(a: str, b: str) -> bool:
    """Whether two folder names (local or URIs) name the same folder."""
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    import os
    return os.path.realpath(a) == os.path.realpath(b)


def relative_to(path: str, root: str) -> str:
    if root and path.startswith(root):
        return path[len(root):]
    return posixpath.basename(path)


def stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]
