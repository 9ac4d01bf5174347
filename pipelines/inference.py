"""A Beam RunInference ModelHandler for the exported FCN (``MODEL/model.keras``).

Beam's stock TensorFlow handlers load models with ``tf.keras.models.load_model``, which in
TensorFlow 2.16+ is Keras 2 (tf_keras, an extra package) and cannot read a Keras 3 ``.keras``
file. This handler loads with Keras 3 after importing ``segmodel`` (which registers the custom
layers), copies a ``gs://`` model to local disk first, and runs batches of equal-shaped tiles.
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

LOG = logging.getLogger(__name__)


def local_model_path(model: str) -> str:
    """The .keras file for ``model`` (a MODEL dir or a .keras path), copied locally if remote."""
    path = model if model.endswith(".keras") else model.rstrip("/") + "/model.keras"
    if "://" not in path:
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="segpipe-model-"), "model.keras")
    with FileSystems.open(path) as src, open(local, "wb") as dst:
        while chunk := src.read(16 << 20):
            dst.write(chunk)
    return local


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


class FCNModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """uint8 RGB tiles [h, w, 3] -> class probabilities [h, w, C] (float32)."""

    def __init__(self, model: str, batch_size: int = 8, large_model: bool = False, model_copies: int = 1):
        super().__init__()
        self._model = model
        self._batch_size = batch_size
        # large_model: one copy per machine shared by all SDK processes (Beam's multi-process
        # shared model), which is what a GPU worker wants; model_copies: one per GPU.
        self._large_model = large_model or model_copies > 1
        self._model_copies = model_copies

    def load_model(self):
        import keras
        import segmodel  # noqa: F401  (registers the FCN's custom layers)
        path = local_model_path(self._model)
        LOG.info("loading %s", path)
        return keras.models.load_model(path, compile=False)

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        # Tiles of one image share a shape; a batch can mix images of different sizes, so it
        # runs once per distinct shape, keeping every model call on equal-shaped tensors.
        results = [None] * len(batch)
        by_shape = {}
        for index, tile in enumerate(batch):
            by_shape.setdefault(tile.shape, []).append(index)
        for indices in by_shape.values():
            stacked = np.stack([batch[i] for i in indices])
            scores = model(stacked, training=False)
            if isinstance(scores, dict):  # the torchvision-style export
                scores = np.transpose(np.asarray(scores["out"]), (0, 2, 3, 1))
            probabilities = softmax(np.asarray(scores, dtype=np.float32))
            for k, i in enumerate(indices):
                results[i] = PredictionResult(batch[i], probabilities[k])
        return results

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self._batch_size}

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def model_copies(self) -> int:
        return self._model_copies

    def get_metrics_namespace(self) -> str:
        return "segpipe_inference"
