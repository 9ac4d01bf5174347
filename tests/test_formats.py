"""segpipe export: the SavedModel loaded by tf.saved_model.load in a fresh process (no Keras, no
segpipe) and the TFLite models run by TensorFlow's TFLite interpreter, each against the Keras
model's own scores on real photos (COCO val2017) cut to odd sizes."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(333, 257), (45, 61), (32, 32), (7, 100)]  # (height, width)


@pytest.fixture(scope="module")
def model_and_photos(testdata, tmp_path_factory):
    """The tiny FCN-8s (the demo's network, weights from a fixed seed) exported as segpipe train
    does, and real photos cut to odd sizes."""
    import keras

    from segcli.train import PRESETS, TrainConfig
    from segmodel import fcn
    from segmodel.train import build_model
    keras.utils.set_random_seed(4)
    folder = tmp_path_factory.mktemp("model")
    model = build_model(TrainConfig(**PRESETS["tiny"]), 5)
    rng = np.random.default_rng(4)
    for weight in model.weights:  # the class scores start at zero (the paper's init): give them values
        value = keras.ops.convert_to_numpy(weight)
        if weight.trainable and value.ndim == 4 and not value.any():
            weight.assign(rng.normal(0, 0.5, value.shape).astype(np.float32))
    fcn.export_model(model, str(folder / "model.keras"))
    (folder / "classes.json").write_text(json.dumps(
        {"ignore_index": 255, "classes": [{"index": i, "name": n} for i, n in
                                          enumerate(["background", "road", "car", "person", "tree"])]}))
    photos = sorted((testdata / "coco_person_val2017").rglob("*.jpg"))[:len(SIZES)]
    assert len(photos) == len(SIZES)
    images = [np.asarray(Image.open(p).convert("RGB"))[:h, :w] for p, (h, w) in zip(photos, SIZES)]
    return folder, images


def keras_scores(folder, image):
    import keras

    from segmodel.exported import load_exported
    logits = load_exported(str(folder))(image[None].astype(np.float32))
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))[0]


def agree(classes, scores, reference):
    assert classes.shape == reference.shape[:2] and scores.shape == reference.shape
    assert len(np.unique(reference.argmax(-1))) >= 2  # a model that predicts one class would prove nothing
    agreement = float(np.mean(classes == reference.argmax(-1)))
    return agreement, float(np.abs(scores - reference).max())


@pytest.mark.slow
def test_savedmodel_in_a_fresh_process_equals_the_keras_model(model_and_photos, tmp_path):
    folder, images = model_and_photos
    out = tmp_path / "savedmodel"
    subprocess.run([sys.executable, "-m", "segcli.main", "export", "--model", str(folder), "--format", "savedmodel",
                    "--output", str(out)], cwd=ROOT, check=True, capture_output=True)
    assert json.loads((out / "assets.extra" / "classes.json").read_text())["classes"][1]["name"] == "road"
    for k, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        (tmp_path / f"{k}.png").write_bytes(buffer.getvalue())
        np.save(tmp_path / f"{k}.npy", image)
    script = f"""
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(out)!r})
for k in range({len(images)}):
    data = open({str(tmp_path)!r} + f"/{{k}}.png", "rb").read()
    a = loaded.signatures["serving_default"](images=tf.constant([data]))
    b = loaded.signatures["serving_pixels"](pixels=tf.constant(np.load({str(tmp_path)!r} + f"/{{k}}.npy")[None]))
    for name, r in (("bytes", a), ("pixels", b)):
        np.save({str(tmp_path)!r} + f"/{{name}}{{k}}_classes.npy", r["classes"].numpy()[0])
        np.save({str(tmp_path)!r} + f"/{{name}}{{k}}_scores.npy", r["scores"].numpy()[0])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("segmodel", "segcli", "pipelines")))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"  # nothing of segpipe was needed to load and run it
    for k, image in enumerate(images):
        reference = keras_scores(folder, image)
        for name in ("bytes", "pixels"):
            classes = np.load(tmp_path / f"{name}{k}_classes.npy")
            assert classes.dtype == np.uint8
            agreement, difference = agree(classes, np.load(tmp_path / f"{name}{k}_scores.npy"), reference)
            assert agreement >= 0.999 and difference < 1e-4, (name, SIZES[k], agreement, difference)


@pytest.mark.slow
@pytest.mark.parametrize("precision, min_agreement, max_difference", [("float32", 0.999, 1e-4),
                                                                       ("float16", 0.99, 2e-2)])
def test_tflite_in_the_tflite_interpreter_equals_the_keras_model(model_and_photos, tmp_path, precision,
                                                                 min_agreement, max_difference):
    import tensorflow as tf

    from segmodel import formats
    folder, images = model_and_photos
    out = tmp_path / f"model_{precision}.tflite"
    formats.export(str(folder), str(out), "tflite", precision)
    interpreter = tf.lite.Interpreter(model_path=str(out))
    runner = interpreter.get_signature_runner("serving_pixels")
    for k, image in enumerate(images):
        result = runner(pixels=image[None])
        agreement, difference = agree(result["classes"][0], result["scores"][0], keras_scores(folder, image))
        assert agreement >= min_agreement and difference < max_difference, (SIZES[k], agreement, difference)
    if precision == "float16":  # about half the float32 file
        formats.export(str(folder), str(tmp_path / "f32.tflite"), "tflite")
        assert out.stat().st_size < 0.6 * (tmp_path / "f32.tflite").stat().st_size


@pytest.mark.slow
def test_onnx_in_onnxruntime_equals_the_keras_model(model_and_photos, tmp_path):
    import onnxruntime

    from segmodel import formats
    folder, images = model_and_photos
    out = tmp_path / "model.onnx"
    formats.export(str(folder), str(out), "onnx")
    assert json.loads((tmp_path / "model.classes.json").read_text())["classes"][2]["name"] == "car"
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    for k, image in enumerate(images):
        classes, scores = session.run(["classes", "scores"], {"pixels": image[None]})
        agreement, difference = agree(classes[0], scores[0], keras_scores(folder, image))
        assert agreement >= 0.999 and difference < 1e-4, (SIZES[k], agreement, difference)


def test_the_command_line_lists_the_formats_the_converter_knows():
    from segcli import export as flags
    from segmodel import formats
    assert formats.FORMATS == flags.FORMATS == ("savedmodel", "tflite", "onnx")
    with pytest.raises(ValueError, match="format must be one of"):
        formats.export("nowhere", "out", "torchscript")
