"""The tf.train.Example keys of a segmentation record and its serialization, without TensorFlow.

The keys are TensorFlow Model Garden's semantic-segmentation keys, so Model Garden's own
``segmentation_input`` decoder reads our shards too. Writers (the dataset pipelines) go through
``build_example``; readers through ``segmodel.features``; nothing else spells a key.

``build_example`` writes the protobuf wire format of ``tf.train.Example`` itself (the message is
four nested length-delimited fields; tests check it byte for byte against TensorFlow's own
``SerializeToString(deterministic=True)``): importing TensorFlow only to get its generated
``example_pb2`` costs every Beam worker ~5 s of CPU and ~1 GB of memory.
"""
from __future__ import annotations

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
# where a chip of a GeoTIFF scene came from (segpipe dataset raster; docs/datasets.md)
GEO_SCENE = "image/geo/scene"
GEO_CRS = "image/geo/crs"
GEO_WINDOW = "image/geo/window"
GEO_TRANSFORM = "image/geo/transform"

# A dataset folder's manifest (docs/datasets.md), written last by the dataset jobs: the list of a
# complete dataset's shards with their sizes and CRC-32C; training reads only what it lists.
MANIFEST = "dataset.json"
MANIFEST_FORMAT = "segpipe-dataset/1"


def _varint(value: int) -> bytes:
    if value < 0:  # int64 negatives are ten-byte two's complement varints
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list = 1 { BytesList.value = 1 }


def _int64_feature(value: int) -> bytes:
    return _field(3, _field(1, _varint(int(value))))  # Feature.int64_list = 3 { packed value = 1 }


def build_example(image_bytes: bytes, image_format: str, height: int, width: int,
                  filename: str, source_id: str, mask_png: bytes, extra=()) -> bytes:
    """A serialized tf.train.Example; ``image_bytes`` are the original file's bytes; ``extra``:
    more (key, text) string features, e.g. a raster chip's ``image/geo/*`` keys.

    Deterministic: map entries in sorted key order (what protobuf's deterministic mode does),
    so the same inputs give byte-identical shards on every run.
    """
    features = {
        IMAGE_ENCODED: _bytes_feature(image_bytes),
        IMAGE_FORMAT: _bytes_feature(image_format.encode()),
        IMAGE_HEIGHT: _int64_feature(height),
        IMAGE_WIDTH: _int64_feature(width),
        IMAGE_FILENAME: _bytes_feature(filename.encode()),
        IMAGE_SOURCE_ID: _bytes_feature(str(source_id).encode()),
        MASK_ENCODED: _bytes_feature(mask_png),
        MASK_FORMAT: _bytes_feature(b"png"),
    }
    features.update({key: _bytes_feature(str(value).encode()) for key, value in extra})
    # Features.feature = 1 is map<string, Feature>: each entry a message {key = 1, value = 2}.
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value))
                       for key, value in sorted(features.items()))
    return _field(1, entries)  # Example.features = 1


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length (uint64 LE), its masked CRC-32C (uint32 LE), the data, the data's
    masked CRC-32C: the framing TensorFlow's TFRecordWriter writes (docs/datasets.md)."""
    import struct
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc32c(length)) + data + struct.pack("<I", _masked_crc32c(data))
