"""The exported model in formats other runtimes load (``segpipe export``).

* ``savedmodel``: a TensorFlow SavedModel for TF Serving and Vertex AI prediction, with two
  signatures: ``serving_default`` takes encoded images (JPEG/PNG bytes, a batch of strings of
  one size) and ``serving_pixels`` a uint8 batch [N, H, W, 3]; both return ``classes`` (uint8
  [N, H, W]) and ``scores`` (float32 class probabilities [N, H, W, C]). Loaded with
  ``tf.saved_model.load``; no Keras and no segpipe needed.
* ``tflite``: a TensorFlow Lite flatbuffer of ``serving_pixels`` (float32 weights, or float16
  with ``--precision float16``: half the size), any height and width
  (``interpreter.resize_tensor_input``).
* ``onnx``: ``serving_pixels`` converted by tf2onnx (the ``onnx`` extra) for onnxruntime and
  other ONNX runtimes: input ``pixels`` (uint8 [N, H, W, 3], any height and width), outputs
  ``classes`` and ``scores`` as above.

Both compute what the Keras model computes (softmax of its scores, argmax); the tests check them
in their own runtimes against the Keras model on real photos at odd sizes.
"""
from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf

from segmodel.exported import load_exported

from segcli.export import FORMATS, TFLITE_PRECISIONS, make_parser


def _outputs(model, pixels):
    scores = tf.nn.softmax(tf.cast(model(tf.cast(pixels, tf.float32), training=False), tf.float32), axis=-1)
    return {"classes": tf.cast(tf.argmax(scores, axis=-1), tf.uint8), "scores": scores}


def save_savedmodel(model, path: str) -> None:
    """``model`` (RGB 0..255 -> scores [N, H, W, C]) as a SavedModel at ``path`` (see the module)."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def pixels(images):
        return _outputs(model, images)

    def encoded(images):
        decoded = tf.map_fn(lambda data: tf.io.decode_image(data, channels=3, expand_animations=False), images,
                            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        return _outputs(model, decoded)

    archive.add_endpoint("serving_default", encoded, input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("serving_pixels", pixels,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")])
    archive.write_out(path, verbose=False)


def save_tflite(model, path: str, precision: str = "float32") -> None:
    """``serving_pixels`` as a TFLite model at ``path`` (float16 weights when asked)."""
    if precision not in TFLITE_PRECISIONS:
        raise ValueError(f"precision must be one of {TFLITE_PRECISIONS}, got {precision!r}")
    with tempfile.TemporaryDirectory() as folder:
        save_savedmodel(model, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["serving_pixels"])
        if precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        data = converter.convert()
    temp = f"{path}.tmp"
    with tf.io.gfile.GFile(temp, "wb") as handle:
        handle.write(data)
    tf.io.gfile.rename(temp, path, overwrite=True)


# ONNX's opset 17 (2022): every current runtime reads it, and it has every operator the FCN needs.
ONNX_OPSET = 17


def save_onnx(model, path: str) -> None:
    """``serving_pixels`` as an ONNX model at ``path``, through tf2onnx's own converter on the
    SavedModel (its command line: the path tf2onnx documents and tests for SavedModels)."""
    import subprocess
    import sys
    with tempfile.TemporaryDirectory() as folder:
        save_savedmodel(model, f"{folder}/savedmodel")
        local = f"{folder}/model.onnx"
        done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", f"{folder}/savedmodel",
                               "--signature_def", "serving_pixels", "--opset", str(ONNX_OPSET), "--output", local],
                              capture_output=True, text=True)
        if done.returncode != 0 or not os.path.exists(local):
            raise RuntimeError(f"tf2onnx could not convert the model (pip install 'segpipe[onnx]'): "
                               f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        temp = f"{path}.tmp"
        tf.io.gfile.copy(local, temp, overwrite=True)
        tf.io.gfile.rename(temp, path, overwrite=True)


def export(model_dir: str, output: str, fmt: str, precision: str = "float32") -> str:
    """MODEL (model.keras + classes.json) -> ``output`` in ``fmt``; classes.json is copied beside it."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    model = load_exported(model_dir)
    if fmt == "savedmodel":
        temp = f"{output.rstrip('/')}.tmp"
        if tf.io.gfile.exists(temp):
            tf.io.gfile.rmtree(temp)
        save_savedmodel(model, temp)
        if tf.io.gfile.exists(output):
            tf.io.gfile.rmtree(output)
        tf.io.gfile.rename(temp, output)
        classes = f"{output.rstrip('/')}/assets.extra/classes.json"
    else:
        (save_tflite(model, output, precision) if fmt == "tflite" else save_onnx(model, output))
        classes = os.path.splitext(output)[0] + ".classes.json"
    source = f"{model_dir.rstrip('/')}/classes.json" if not model_dir.endswith(".keras") else None
    if source and tf.io.gfile.exists(source):
        tf.io.gfile.makedirs(os.path.dirname(classes))
        tf.io.gfile.copy(source, classes, overwrite=True)
    return output




def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.precision != "float32" and args.fmt != "tflite":
        raise SystemExit("segpipe export: --precision is for --format tflite")
    out = export(args.model, args.output, args.fmt, args.precision)
    print(f"segpipe export: {args.model} -> {out} ({args.fmt}{', ' + args.precision if args.fmt == 'tflite' else ''})")
    return out
