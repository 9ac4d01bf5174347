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


class RasterStripHandler(ModelHandler[Any, PredictionResult, Any]):
    """Segments one horizontal strip of a large raster per element, streaming: tiles are read
    window by window, run through the FCN in batches, blended by a ``RowStitcher`` (two tile
    heights of scores in memory) and the finished rows written to a tiled GeoTIFF part.

    Strips are what spreads one huge raster over many workers; within a strip, memory does not
    grow with the raster. The model is the FCNModelHandler's, loaded once per worker.
    """

    def __init__(self, fcn: FCNModelHandler, config):
        super().__init__()
        self._fcn, self._config = fcn, config

    def load_model(self):
        return self._fcn.load_model()

    def run_inference(self, batch, model, inference_args=None):
        return [PredictionResult(strip, segment_strip(strip, model, self._fcn, self._config)) for strip in batch]

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}

    def share_model_across_processes(self) -> bool:
        return self._fcn.share_model_across_processes()

    def model_copies(self) -> int:
        return self._fcn.model_copies()

    def get_metrics_namespace(self) -> str:
        return "segpipe_inference"


def segment_strip(strip, model, fcn: FCNModelHandler, config) -> dict:
    """Rows [row0, row1) of one raster -> a GeoTIFF part under OUT/.parts and its statistics."""
    import rasterio
    from rasterio.windows import Window

    from pipelines import rasters
    from segmodel import tiling
    info, index, row0, row1 = strip["info"], strip["index"], strip["row0"], strip["row1"]
    tile, overlap = config.tile_size, config.tile_overlap
    num_classes = len(config.class_names)
    th, tw = min(tile, info.height), min(tile, info.width)
    rows = [r for r in tiling.tile_starts(info.height, tile, overlap) if r < row1 and r + th > row0]
    cols = tiling.tile_starts(info.width, tile, overlap)
    stitcher = tiling.RowStitcher(info.width, num_classes, th, overlap, row0, row1)
    totals = {"pixels": np.zeros(num_classes, np.int64), "confidence": np.zeros(num_classes), "entropy": 0.0}
    workdir = tempfile.mkdtemp(prefix="segpipe-strip-")
    local = os.path.join(workdir, "part.tif")

    def emit(done, dst):
        if done is None:
            return
        first, mask, stats = done
        dst.write(mask[None], window=Window(0, first - row0, mask.shape[1], mask.shape[0]))
        for key in ("pixels", "confidence"):
            totals[key] += stats[key]
        totals["entropy"] += stats["entropy"]

    with rasters.gdal_env(), rasters.open_raster(info.source) as src, \
            rasterio.open(local, "w", **rasters.mask_profile(info, height=row1 - row0)) as dst:
        for row in rows:
            emit(stitcher.start_row(row), dst)
            for start in range(0, len(cols), fcn._batch_size):
                chunk = cols[start:start + fcn._batch_size]
                tiles = [rasters.read_window(src, info, row, col, th, tw) for col in chunk]
                results = fcn.run_inference([data for data, _ in tiles], model)
                for col, (_, valid), result in zip(chunk, tiles, results):
                    stitcher.add(row, col, result.inference, None if valid.all() else valid)
        emit(stitcher.finish(), dst)
    part = f"{config.output_dir}/.parts/{info.rel}/strip-{index:05d}.tif"
    rasters.upload_atomic(local, part)
    import shutil
    shutil.rmtree(workdir, ignore_errors=True)
    return {"index": index, "row0": row0, "row1": row1, "part": part, "stats": totals}
