"""segformat.records writes tf.train.Example's wire format itself: byte-identical to TensorFlow's."""
import subprocess
import sys

import numpy as np
import tensorflow as tf

from segformat import records as R


def tensorflow_example(image, fmt, height, width, filename, source_id, mask):
    def b(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    # The key strings as TF Model Garden spells them (official/vision/dataloaders/
    # tf_example_decoder.py and segmentation_input.py), literally: not the code's own constants.
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": b(image), "image/format": b(fmt.encode()), "image/height": i(height),
        "image/width": i(width), "image/filename": b(filename.encode()), "image/source_id": b(source_id.encode()),
        "image/segmentation/class/encoded": b(mask),
        "image/segmentation/class/format": b(b"png")})).SerializeToString(deterministic=True)


def test_build_example_is_byte_identical_to_tensorflow():
    rng = np.random.default_rng(0)
    cases = [(b"", "jpeg", 0, 0, "", "", b""),
             (rng.bytes(300_000), "png", 480, 640, "dir/ü.jpg", "397133", rng.bytes(17)),
             (rng.bytes(127), "jpeg", 2 ** 40, 127, "a" * 128, "x" * 16384, rng.bytes(128)),
             (rng.bytes(1), "jpeg", -1, 1, "b", "-5", rng.bytes(2 ** 21 + 3))]
    for case in cases:
        ours = R.build_example(*case)
        assert ours == tensorflow_example(*case), case[1:4]
        parsed = tf.train.Example.FromString(ours).features.feature
        assert parsed["image/height"].int64_list.value[0] == case[2]
        assert parsed["image/encoded"].bytes_list.value[0] == case[0]
        assert parsed["image/segmentation/class/encoded"].bytes_list.value[0] == case[6]


def test_tfrecord_framing_is_byte_identical_to_tensorflows_writer(tmp_path):
    rng = np.random.default_rng(1)
    payloads = [b"", b"x", rng.bytes(1000), rng.bytes(3 << 20)]
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for payload in payloads:
            writer.write(payload)
    assert b"".join(R.frame_record(p) for p in payloads) == (tmp_path / "tf.tfrecord").read_bytes()


def test_dataset_modules_do_not_import_tensorflow():
    """The dataset pipelines' workers never pay TensorFlow's import (seconds and ~1 GB each)."""
    code = ("import sys, pipelines.coco_to_tfrecord, pipelines.masks_to_tfrecord, segformat.records; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
