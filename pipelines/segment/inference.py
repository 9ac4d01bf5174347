"""The RunInference ModelHandler of batch segmentation: chunks in, outcomes out.

Beam's stock TensorFlow handlers load models with ``tf.keras.models.load_model``, which in
TensorFlow 2.16+ is Keras 2 (tf_keras, an extra package) and cannot read a Keras 3 ``.keras``
file. This handler loads with Keras 3 (``segmodel.exported.load_exported``), wraps the model in a
``segmodel.predict.TiledSegmenter`` and hands it whole batches of chunks: the segmenter reads
their pixels ahead on threads, pools their tiles into equal-shaped model calls, blends and
resolves on the accelerator, and passes each finished chunk to ``ChunkWriter``; what leaves
this step is each chunk's small outcome (a record, a part file's path, or an error record).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipelines.segment.chunks import Chunk, ChunkJob
from pipelines.segment.outputs import ChunkWriter

LOG = logging.getLogger(__name__)


def model_identity(model: str) -> tuple:
    """(class names, NAME@DATE-HASH) of an exported model on any filesystem: what its machine
    labels are named by and carry as their model_version."""
    from apache_beam.io.filesystems import FileSystems

    from segmodel.exported import class_names, model_files, model_version
    keras_file = FileSystems.match([model_files(model)[0]])[0].metadata_list
    modified = keras_file[0].last_updated_in_seconds if keras_file else None
    return class_names(model, FileSystems.open), model_version(model, FileSystems.open, modified)


def chunk_tiles(chunk: Chunk) -> int:
    """A chunk's weight when RunInference groups chunks into batches: the model tiles it runs."""
    return chunk.tiles


class ChunkModelHandler(ModelHandler[Chunk, PredictionResult, Any]):
    """``model``: a MODEL folder or ``.keras`` file, local or remote. ``batch_size``: tiles per
    model call. ``batch_tiles``: tiles' worth of chunks handed to the segmenter at once (more
    pools better and overlaps more; a batch's outcomes wait for its last chunk).
    ``large_model``/``model_copies``: one model per machine shared by its worker processes
    (Beam's multi-process shared model), what a GPU worker wants; one copy per GPU."""

    def __init__(self, model: str, writer: ChunkWriter, *, num_classes: int, tile_size: int, tile_overlap: int,
                 batch_size: int, batch_tiles: int, precision: str = "float32", tta_scales=(1.0,), tta_flip: bool = False,
                 large_model: bool = False,
                 model_copies: int = 1):
        super().__init__()
        self._confidence_map = bool(writer.spec.scores) or writer.spec.vectors
        self._probability_map = writer.spec.scores == "all"
        self._model, self._writer = model, writer
        self._num_classes, self._tile, self._overlap = num_classes, tile_size, tile_overlap
        self._batch_size, self._batch_tiles, self._precision = batch_size, batch_tiles, precision
        self._tta_scales, self._tta_flip = tuple(tta_scales), tta_flip
        self._large_model = large_model or model_copies > 1
        self._model_copies = model_copies

    def load_model(self):
        from apache_beam.io.filesystems import FileSystems

        from segmodel.predict import segmenter_for
        LOG.info("loading %s (%s; test-time scales %s%s)", self._model, self._precision, self._tta_scales,
                 ", flipped" if self._tta_flip else "")
        return segmenter_for(self._model, self._num_classes, self._tile, self._overlap, self._batch_size,
                             opener=FileSystems.open, precision=self._precision, tta_scales=self._tta_scales,
                             tta_flip=self._tta_flip, confidence_map=self._confidence_map,
                             probability_map=self._probability_map)

    def run_inference(self, batch: Sequence[Chunk], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        outcomes = model.segment([ChunkJob(chunk) for chunk in batch], self._writer)
        return [PredictionResult(chunk, outcome) for chunk, outcome in zip(batch, outcomes)]

    def batch_elements_kwargs(self):
        # Batches of a fixed number of tiles from the first call (Beam's adaptive batching would
        # start at one element and spend the first minutes growing), weighed by tiles, not chunks:
        # a photo is a few tiles, a raster chunk a hundred.
        return {"min_batch_size": self._batch_tiles, "max_batch_size": self._batch_tiles,
                "element_size_fn": chunk_tiles}

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def model_copies(self) -> int:
        return self._model_copies

    def get_metrics_namespace(self) -> str:
        return "segpipe_inference"
