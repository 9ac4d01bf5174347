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


class FCNModelHandler(ModelHandler[Any, PredictionResult, Any]):
    """Two kinds of examples, one model:

    * a uint8 RGB tile [h, w, 3] -> its class probabilities [h, w, C] (float32);
    * a raster strip (a dict: image info, strip index, rows) -> the strip segmented, streaming:
      its tiles are read window by window, run through the model in batches, blended by a
      ``RowStitcher`` (two tile rows of scores in memory, whatever the raster's size) and the
      finished rows written to a tiled GeoTIFF part; the result is the part's path and stats.

    One handler, so one RunInference step and one model per worker for photos and rasters alike.
    """

    def __init__(self, model: str, batch_size: int = 8, large_model: bool = False, model_copies: int = 1,
                 strip_config=None, precision: str = "float32"):
        super().__init__()
        self._strip_config = strip_config
        self._precision = precision
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
        from segmodel.fcn import with_precision
        LOG.info("loading %s (%s)", path, self._precision)
        return with_precision(keras.models.load_model(path, compile=False), self._precision)

    def run_inference(self, batch: Sequence[Any], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        results = [None] * len(batch)
        # Tiles of one image share a shape; a batch can mix images of different sizes, so it
        # runs once per distinct shape, keeping every model call on equal-shaped tensors.
        by_shape = {}
        for index, example in enumerate(batch):
            if isinstance(example, dict):
                results[index] = PredictionResult(example, segment_strip(example, model, self, self._strip_config))
            else:
                by_shape.setdefault(example.shape, []).append(index)
        for indices in by_shape.values():
            probabilities = self.probabilities(model, [batch[i] for i in indices])
            for k, i in enumerate(indices):
                results[i] = PredictionResult(batch[i], probabilities[k])
        return results

    @staticmethod
    def probabilities(model, tiles) -> np.ndarray:
        """Equal-shaped tiles -> softmax class probabilities [n, h, w, C] (softmax in TensorFlow:
        multi-threaded and several times faster than NumPy's on 512x512 tiles)."""
        from keras import ops
        scores = model(np.stack(tiles), training=False)
        if isinstance(scores, dict):  # the torchvision-style export: [N, C, H, W]
            return np.asarray(ops.softmax(ops.transpose(scores["out"], (0, 2, 3, 1)), axis=-1), dtype=np.float32)
        return np.asarray(ops.softmax(scores, axis=-1), dtype=np.float32)

    def batch_elements_kwargs(self):
        # Fixed-size batches: the model sees the batch size it is tuned for from the first call
        # (Beam's adaptive batching would start at 1 and spend the first minutes growing).
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def model_copies(self) -> int:
        return self._model_copies

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
    strip_stats = []
    workdir = tempfile.mkdtemp(prefix="segpipe-strip-")
    local = os.path.join(workdir, "part.tif")

    def emit(done, dst):
        if done is None:
            return
        first, mask, stats = done
        dst.write(mask[None], window=Window(0, first - row0, mask.shape[1], mask.shape[0]))
        strip_stats.append(stats)

    with rasters.gdal_env(), rasters.open_raster(info.source) as src, \
            rasterio.open(local, "w", **rasters.mask_profile(info, height=row1 - row0)) as dst:
        for row in rows:
            emit(stitcher.start_row(row), dst)
            for start in range(0, len(cols), fcn._batch_size):
                chunk = cols[start:start + fcn._batch_size]
                tiles = [rasters.read_window(src, info, row, col, th, tw) for col in chunk]
                probabilities = fcn.probabilities(model, [data for data, _ in tiles])
                for col, (_, valid), p in zip(chunk, tiles, probabilities):
                    stitcher.add(row, col, p, None if valid.all() else valid)
            LOG.info("%s strip %d: tile row %d of %d done", info.rel, index, rows.index(row) + 1, len(rows))
        emit(stitcher.finish(), dst)
    part = f"{config.output_dir}/.parts/{info.rel}/strip-{index:05d}.tif"
    rasters.upload_atomic(local, part)
    import shutil
    shutil.rmtree(workdir, ignore_errors=True)
    return {"index": index, "row0": row0, "row1": row1, "part": part,
            "stats": tiling.sum_stats(strip_stats, num_classes)}
