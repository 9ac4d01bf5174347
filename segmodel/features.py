"""The tf.train.Example keys of a segmentation record, and how to build and parse one.

The keys are TensorFlow Model Garden's semantic-segmentation keys, so Model Garden's own
``segmentation_input`` decoder reads our shards too. The dataset writers, the trainer and the
evaluator all go through this module; nothing else spells a key.
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


def build_example(image_bytes: bytes, image_format: str, height: int, width: int,
                  filename: str, source_id: str, mask_png: bytes) -> bytes:
    """A serialized tf.train.Example; ``image_bytes`` are the original file's bytes."""
    # Imported here so that importing segmodel.features stays cheap for callers that only
    # need the key names.
    from tensorflow.core.example import example_pb2, feature_pb2

    def _bytes(value: bytes):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    def _int(value: int):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(value)]))

    example = example_pb2.Example(features=feature_pb2.Features(feature={
        IMAGE_ENCODED: _bytes(image_bytes),
        IMAGE_FORMAT: _bytes(image_format.encode()),
        IMAGE_HEIGHT: _int(height),
        IMAGE_WIDTH: _int(width),
        IMAGE_FILENAME: _bytes(filename.encode()),
        IMAGE_SOURCE_ID: _bytes(str(source_id).encode()),
        MASK_ENCODED: _bytes(mask_png),
        MASK_FORMAT: _bytes(b"png"),
    }))
    # deterministic: map fields in a fixed order, so re-runs give byte-identical shards.
    return example.SerializeToString(deterministic=True)


def feature_spec():
    import tensorflow as tf
    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
        IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
        IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
        IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
        IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string, default_value=""),
        MASK_ENCODED: tf.io.FixedLenFeature((), tf.string),
        MASK_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="png"),
    }


def decode_record(serialized, fast_jpeg: bool = False):
    """Serialized Example -> (image uint8 [H, W, 3], mask uint8 [H, W, 1]) tensors.

    ``fast_jpeg`` uses libjpeg's fast integer IDCT (a few percent of the decode time; pixel
    values differ by a level or two), which is fine for augmented training crops; evaluation and
    prediction keep the accurate default.
    """
    import tensorflow as tf
    parsed = tf.io.parse_single_example(serialized, feature_spec())
    encoded = parsed[IMAGE_ENCODED]
    if fast_jpeg:
        image = tf.cond(tf.io.is_jpeg(encoded),
                        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_FAST"),
                        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    else:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    mask = tf.io.decode_png(parsed[MASK_ENCODED], channels=1)
    shape = tf.stack([parsed[IMAGE_HEIGHT], parsed[IMAGE_WIDTH]])
    image = tf.ensure_shape(image, [None, None, 3])
    tf.debugging.assert_equal(tf.shape(image, out_type=tf.int64)[:2], shape,
                              message="image size differs from image/height, image/width")
    return image, mask
