"""Parsing a segmentation record in tf.data (the keys and the writer live in ``segformat.records``,
which the dataset pipelines use without TensorFlow)."""
from __future__ import annotations

import tensorflow as tf

from segformat.records import (IMAGE_ENCODED, IMAGE_FILENAME, IMAGE_FORMAT, IMAGE_HEIGHT,  # noqa: F401
                               IMAGE_SOURCE_ID, IMAGE_WIDTH, MASK_ENCODED, MASK_FORMAT)


def feature_spec():
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


def _assert_size(actual, size):
    """The decoded image's [height, width] must be the record's image/height, image/width."""
    tf.debugging.assert_equal(tf.cast(actual, tf.int64), tf.cast(size, tf.int64),
                              message="image size differs from image/height, image/width")


def decode_record(serialized):
    """Serialized Example -> (image uint8 [H, W, 3], mask uint8 [H, W, 1]) tensors, decoded
    whole with the accurate IDCT (evaluation and prediction; training uses decode_record_window)."""
    parsed = tf.io.parse_single_example(serialized, feature_spec())
    image = tf.ensure_shape(tf.io.decode_image(parsed[IMAGE_ENCODED], channels=3, expand_animations=False),
                            [None, None, 3])
    _assert_size(tf.shape(image)[:2], tf.stack([parsed[IMAGE_HEIGHT], parsed[IMAGE_WIDTH]]))
    return image, tf.io.decode_png(parsed[MASK_ENCODED], channels=1)


def decode_record_window(serialized, window_fn):
    """Serialized Example -> (image window, mask window, window) decoding only what a training
    crop needs: ``window_fn(size)`` gets the image's [height, width] from the record and returns
    a dict with the source ``start`` and ``stop`` rows/columns (``preprocess.crop_window``).

    JPEGs go through ``tf.io.decode_and_crop_jpeg`` (libjpeg skips the rows below the window and
    the IDCT outside it: at scale 2 a 512 crop needs a quarter of a 640x480 photo), with libjpeg's
    fast integer IDCT (pixel values differ from the accurate one by a level or two, which is
    fine for augmented training crops); PNG images and the mask are decoded whole and sliced.
    """
    parsed = tf.io.parse_single_example(serialized, feature_spec())
    encoded = parsed[IMAGE_ENCODED]
    size = tf.cast(tf.stack([parsed[IMAGE_HEIGHT], parsed[IMAGE_WIDTH]]), tf.int32)
    window = window_fn(size)
    start, stop = window["start"], window["stop"]

    def cropped_jpeg():
        _assert_size(tf.io.extract_jpeg_shape(encoded)[:2], size)
        return tf.io.decode_and_crop_jpeg(encoded, tf.concat([start, stop - start], 0), channels=3,
                                          dct_method="INTEGER_FAST")

    def sliced():
        image = tf.ensure_shape(tf.io.decode_image(encoded, channels=3, expand_animations=False), [None, None, 3])
        _assert_size(tf.shape(image)[:2], size)
        return image[start[0]:stop[0], start[1]:stop[1]]

    image = tf.cond(tf.io.is_jpeg(encoded), cropped_jpeg, sliced)
    mask = tf.io.decode_png(parsed[MASK_ENCODED], channels=1)[start[0]:stop[0], start[1]:stop[1]]
    return tf.ensure_shape(image, [None, None, 3]), mask, window
