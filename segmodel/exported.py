"""The exported model on disk, found and loaded one way everywhere (evaluation, batch
segmentation, the report, benchmarks).

A model is named by its folder (``MODEL/``, holding ``model.keras`` and ``classes.json``) or by
the ``.keras`` file itself (``classes.json`` beside it), local or remote. Remote files are read
through ``opener`` (a function path -> readable binary file: Beam's ``FileSystems.open`` in the
Beam jobs, TensorFlow's ``tf.io.gfile.GFile`` by default) and the model is copied to a local
temporary file first, because Keras loads ``.keras`` archives from local paths.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid

import keras
import tensorflow as tf


def model_files(model: str) -> tuple:
    """(path of the .keras file, path of classes.json) for a MODEL folder or a .keras file."""
    if model.endswith(".keras"):
        return model, f"{model.rsplit('/', 1)[0] if '/' in model else '.'}/classes.json"
    folder = model.rstrip("/")
    return f"{folder}/model.keras", f"{folder}/classes.json"


def save_atomic(model, path: str) -> None:
    """Saves a Keras model to ``path`` (a .keras file, local or remote) under a temporary name
    first and renames it into place: a process killed mid-save leaves the previous file (or
    none), never a truncated archive that a reader or a resumed run would fail on."""

    temp = f"{path[:-len('.keras')]}.tmp-{uuid.uuid4().hex}.keras"
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if folder and not tf.io.gfile.exists(folder):
        tf.io.gfile.makedirs(folder)
    try:
        model.save(temp)
        tf.io.gfile.rename(temp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(temp):
            tf.io.gfile.remove(temp)


def _gfile_open(path: str):
    return tf.io.gfile.GFile(path, "rb")


def as_nhwc(model):
    """The project's interface (RGB 0..255 [N, H, W, 3] -> scores [N, H, W, C]) of an exported
    model: the model itself, or for a torchvision-style ``nchw`` export the network it wraps."""
    if isinstance(model.output, dict) and model.inputs[0].shape[1] == 3:
        inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        if len(inner) == 1:
            return inner[0]
    return model


def load_exported(model: str, opener=None, layout: str = "nhwc"):
    """The exported Keras model (custom layers registered). ``layout="nhwc"`` (what evaluation,
    batch segmentation and the report use): the project's interface whatever layout it was
    exported with (see as_nhwc); ``"as_exported"``: the file's own interface."""
    loaded = _load(model, opener)
    return as_nhwc(loaded) if layout == "nhwc" else loaded


def register_custom_objects() -> None:
    """Registers the FCN's custom layers, loss and metric with Keras's loader (importing their
    modules does): ``keras.models.load_model`` of a segpipe model needs it first."""
    from segmodel import layers, losses, metrics  # noqa: F401


def _load(model: str, opener=None):

    register_custom_objects()
    path, _ = model_files(model)
    if "://" not in path:
        return keras.models.load_model(path, compile=False)
    workdir = tempfile.mkdtemp(prefix="segpipe-model-")
    local = os.path.join(workdir, "model.keras")
    try:
        with (opener or _gfile_open)(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
        return keras.models.load_model(local, compile=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def read_classes(model: str, opener=None) -> dict:
    """The model's classes.json document ({"ignore_index": 255, "classes": [{"index", "name"}, ...]})."""
    _, path = model_files(model)
    with (opener or _gfile_open)(path) as handle:
        return json.loads(handle.read())


def class_names(model: str, opener=None) -> tuple:
    return tuple(c["name"] for c in read_classes(model, opener)["classes"])


def model_version(model: str, opener=None, modified=None) -> str:
    """What a person reads beside a machine label: ``NAME@DATE-HASH``, the model folder's name (or
    the .keras file's stem), the day ``model.keras`` was written (UTC, ``modified``: its POSIX
    time, when the storage knows it) and the first 8 hex digits of its SHA-256: a retrained model
    in the same folder reads differently, the same file reads the same anywhere."""
    import datetime
    import hashlib
    path, _ = model_files(model)
    digest = hashlib.sha256()
    with (opener or _gfile_open)(path) as handle:
        while chunk := handle.read(16 << 20):
            digest.update(chunk)
    name = os.path.splitext(os.path.basename(path))[0] if model.endswith(".keras") else \
        os.path.basename(model.rstrip("/"))
    day = datetime.datetime.fromtimestamp(modified, datetime.timezone.utc).strftime("%Y-%m-%d") if modified else ""
    return f"{name}@{day + '-' if day else ''}{digest.hexdigest()[:8]}"
