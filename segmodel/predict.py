"""Segmenting images of any size tile by tile, with the blend and every per-class step on the
accelerator: only uint8 class ids and a few statistics come back to the host.

``TiledSegmenter.segment(jobs)`` takes a list of jobs (a photo, or one chunk of a large raster;
see ``segmodel.tiling``) and for each returns the class mask of its output rectangle and its
statistics. In between:

* reading runs ahead on threads: each job's ``open()`` (a photo's decode, a raster's header) and
  its tile-row reads are submitted before the model needs them, so the model call rarely waits;
* the tiles of all jobs are pooled into model calls of ``batch_size`` equal-shaped tiles (a call
  can hold the end of one photo and the start of the next);
* one compiled step per call: the model, softmax, the blend weight and a transpose to
  column-major order, all in TensorFlow (on the GPU when there is one);
* each tile row is blended into a one-tile-high buffer as wide as the job (a segment sum over
  columns), finished rows are resolved (normalise, argmax, confidence, entropy, per-class
  sums) in TensorFlow too; the buffer never grows with the image's height, and a job's width is
  bounded by its chunk;
* a finished job is handed to ``on_done`` on a background thread (mask encoding and writing
  overlap the next model calls).

The result equals a whole-image blend of the image's global tile grid (up to float32 rounding
in the order of the additions), whichever chunks the image is cut into.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math

import numpy as np

from segmodel import tiling

LOG = logging.getLogger(__name__)
# Jobs opened (photos decoded, raster headers read) before the model needs them, and tile rows
# of the current job read ahead: enough to hide a decode or an object-store read behind a model
# call, few enough that a batch of large photos stays a few hundred MB.
JOBS_AHEAD = 4
ROWS_AHEAD = 2
READ_THREADS = 4


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where a job's tiles lie: the image's size, the output rectangle [r0, r1) x [c0, c1), the
    tile rows and columns that touch it, and the columns [x0, x1) those tiles span."""
    height: int
    width: int
    r0: int
    r1: int
    c0: int
    c1: int
    rows: tuple
    cols: tuple
    tile_height: int
    tile_width: int

    @property
    def x0(self) -> int:
        return self.cols[0]

    @property
    def x1(self) -> int:
        return self.cols[-1] + self.tile_width

    @classmethod
    def of(cls, height: int, width: int, tile: int, overlap: int, core=None) -> "Geometry":
        r0, r1, c0, c1 = core if core is not None else (0, height, 0, width)
        return cls(height, width, r0, r1, c0, c1,
                   tuple(tiling.tiles_touching(height, tile, overlap, r0, r1)),
                   tuple(tiling.tiles_touching(width, tile, overlap, c0, c1)),
                   min(tile, height), min(tile, width))


class TiledSegmenter:
    """A model with the tiling, blending and resolving around it (see the module docstring).

    ``model``: a Keras model taking RGB 0..255 [N, H, W, 3] and returning scores [N, H, W, C]
    (or the ``{"out": [N, C, H, W]}`` export). A job is any object with ``open() -> (height,
    width)``, ``read(row, col, height, width) -> (uint8 [h, w, 3], valid [h, w] bool or None)``,
    ``close()`` and an attribute ``core``: the output rectangle (r0, r1, c0, c1), or None for the
    whole image. ``read`` calls of one job never run at the same time.
    """

    def __init__(self, model, num_classes: int, tile: int = 512, overlap: int = 64, batch_size: int = 8):
        import tensorflow as tf
        self.model, self.num_classes = model, num_classes
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self._pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS, thread_name_prefix="segment-read")
        self._post = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="segment-post")
        self._weights = {}

        def step(tiles, weights):
            scores = self.model(tf.cast(tiles, tf.float32), training=False)
            if isinstance(scores, dict):  # the torchvision-style export: [N, C, H, W]
                scores = tf.transpose(scores["out"], (0, 2, 3, 1))
            weighted = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1) * weights[None, :, :, None]
            return tf.transpose(weighted, (0, 2, 1, 3))  # column-major: rows of a tile row blend along axis 0

        self._step = tf.function(step, reduce_retracing=True)

    def geometry(self, job, height: int, width: int) -> Geometry:
        return Geometry.of(height, width, self.tile, self.overlap, getattr(job, "core", None))

    def _tile_weights(self, th: int, tw: int):
        if (th, tw) not in self._weights:
            self._weights[(th, tw)] = tiling.blend_weights(th, tw, self.overlap)
        return self._weights[(th, tw)]

    def segment(self, jobs, on_done=None) -> list:
        """[on_done(job, mask, stats, error)] per job, in order (the default returns
        (mask, stats, error)): ``mask`` uint8 [r1 - r0, c1 - c0] class ids (255 where the input
        is not valid), ``stats`` {"pixels", "confidence", "entropy"} over the valid pixels;
        ``error`` the exception that stopped this job (the others go on)."""
        on_done = on_done or (lambda job, mask, stats, error: (mask, stats, error))
        finished = []
        blenders = {}
        queues = collections.defaultdict(list)  # tile shape -> [(job index, row, pixels)]

        def run_model(shape, count):
            waiting, queues[shape] = queues[shape][:count], queues[shape][count:]
            tiles = np.stack([pixels for _, _, pixels in waiting])
            try:
                weighted = self._step(tiles, self._tile_weights(*shape))
            except Exception as error:  # a failed call fails the jobs in it, not the batch
                LOG.exception("model call failed")
                weighted = error
            for k, (index, row, _) in enumerate(waiting):
                blender = blenders.get(index)
                if blender is not None:
                    blender.add(row, weighted if isinstance(weighted, Exception) else weighted[k])
                    if blender.done:
                        finish(index)

        def finish(index):
            blender = blenders.pop(index)
            job = blender.job
            finished.append(self._post.submit(self._finish, on_done, job, blender))

        for index, job, geometry, rows, error in self._read_ahead(jobs):
            if error is not None:
                finished.append(self._post.submit(self._finish, on_done, job, None, error))
                continue
            shape = (geometry.tile_height, geometry.tile_width)
            blenders[index] = _RowBlender(job, geometry, self.num_classes, self.overlap, self._tile_weights(*shape))
            for row, (pixels, valid, read_error) in rows:
                if read_error is not None:
                    blenders[index].fail(read_error)
                    finish(index)
                    break
                blenders[index].expect(row, valid)
                for col in geometry.cols:
                    x = col - geometry.x0
                    queues[shape].append((index, row, pixels[:, x:x + geometry.tile_width]))
                while len(queues[shape]) >= self.batch_size:
                    run_model(shape, self.batch_size)
        for shape in list(queues):
            while queues[shape]:
                run_model(shape, self.batch_size)
        return [future.result() for future in finished]

    @staticmethod
    def _finish(on_done, job, blender, error=None):
        mask = stats = None
        if blender is not None:
            error = blender.error
            if error is None:
                mask, stats = blender.result()
        try:
            return on_done(job, mask, stats, error)
        finally:
            job.close()

    def _read_ahead(self, jobs):
        """Yields (index, job, geometry, rows, error) per job; ``rows`` yields (row, (pixels,
        valid, error)) per tile row, read ``ROWS_AHEAD`` rows ahead on the reading threads."""
        upcoming = iter(enumerate(jobs))
        opened = collections.deque()

        def top_up():
            while len(opened) < JOBS_AHEAD:
                item = next(upcoming, None)
                if item is None:
                    return
                opened.append((*item, self._pool.submit(item[1].open)))
        top_up()
        while opened:
            index, job, future = opened.popleft()
            top_up()
            try:
                height, width = future.result()
            except Exception as error:  # an unreadable input: reported, the job goes on
                yield index, job, None, None, error
                continue
            geometry = self.geometry(job, height, width)
            yield index, job, geometry, self._rows(job, geometry), None

    def _rows(self, job, geometry: Geometry):
        def read(row):
            try:
                pixels, valid = job.read(row, geometry.x0, geometry.tile_height, geometry.x1 - geometry.x0)
                return pixels, valid, None
            except Exception as error:
                return None, None, error
        # One read at a time per job (a raster dataset is not thread-safe), chained ahead.
        pending = collections.deque()
        previous = None
        for row in geometry.rows:
            previous = self._pool.submit(_after, previous, read, row)
            pending.append((row, previous))
            if len(pending) > ROWS_AHEAD:
                row_done, future = pending.popleft()
                yield row_done, future.result()
        while pending:
            row_done, future = pending.popleft()
            yield row_done, future.result()


def _after(previous, function, argument):
    if previous is not None:
        concurrent.futures.wait([previous])
    return function(argument)


class _RowBlender:
    """One job's blend: tile rows arrive top to bottom (their tiles in any order); rows above a
    new tile row can get no more contributions, so they are resolved and kept as uint8."""

    def __init__(self, job, geometry: Geometry, num_classes: int, overlap: int, tile_weights: np.ndarray):
        import tensorflow as tf
        self.job, self.g, self.num_classes = job, geometry, num_classes
        g = geometry
        width = g.x1 - g.x0
        offsets = np.array(g.cols) - g.x0
        self._ids = tf.constant((offsets[:, None] + np.arange(g.tile_width)[None]).reshape(-1), tf.int32)
        self._width = width
        # The weights of a tile row, summed over its tiles (the same for every tile row): [width, th].
        column_weights = np.zeros((width, g.tile_height), np.float32)
        for x in offsets:
            column_weights[x:x + g.tile_width] += tile_weights.T
        self._row_weights = tf.constant(column_weights)
        self._parts = {}  # tile row -> {column index: weighted [tw, th, C]}
        self._valid = {}
        self._order = list(g.rows)
        self._next = 0  # index into _order of the next tile row to blend
        self._carry = None  # (first row, scores [width, h, C], weights [width, h], valid [h, width] or None)
        self._masks, self._stats = [], []
        self.error = None

    @property
    def done(self) -> bool:
        return self.error is not None or self._next == len(self._order)

    def fail(self, error):
        self.error = error

    def expect(self, row, valid):
        self._valid[row] = valid
        self._parts[row] = []

    def add(self, row, weighted):
        if self.error is not None:
            return
        if isinstance(weighted, Exception):
            self.fail(weighted)
            return
        self._parts[row].append(weighted)
        # Tile rows complete in order (tiles are queued and run first in, first out).
        while self._next < len(self._order) and len(self._parts.get(self._order[self._next], ())) == len(self.g.cols):
            current = self._order[self._next]
            self._blend(current, self._parts.pop(current), self._valid.pop(current))
            self._next += 1
        if self._next == len(self._order):
            self._resolve_carry(None)

    def _blend(self, row, tiles, valid):
        import tensorflow as tf
        g = self.g
        stacked = tf.reshape(tf.stack(tiles), (-1, g.tile_height, self.num_classes))  # [k * tw, th, C]
        scores = tf.math.unsorted_segment_sum(stacked, self._ids, self._width)  # [width, th, C]
        weights = self._row_weights
        if self._carry is not None:
            first, carried, carried_weights, _ = self._carry
            self._resolve_carry(row)
            shared = first + carried.shape[1] - row  # rows of the previous tile row this one overlaps
            if shared > 0:
                scores = tf.concat([scores[:, :shared] + carried[:, -shared:], scores[:, shared:]], axis=1)
                weights = tf.concat([weights[:, :shared] + carried_weights[:, -shared:], weights[:, shared:]], axis=1)
        self._carry = (row, scores, weights, valid)

    def _resolve_carry(self, upto):
        """Resolves the carried rows above ``upto`` (all of them when None) inside the output."""
        first, scores, weights, valid = self._carry
        last = first + scores.shape[1] if upto is None else min(upto, first + scores.shape[1])
        a, b = max(first, self.g.r0), min(last, self.g.r1)
        if b <= a:
            return
        c0, c1 = self.g.c0 - self.g.x0, self.g.c1 - self.g.x0
        part_valid = None if valid is None else valid[a - first:b - first, self.g.c0 - self.g.x0:self.g.c1 - self.g.x0]
        mask, stats = resolve(scores[c0:c1, a - first:b - first], weights[c0:c1, a - first:b - first],
                              part_valid, self.num_classes)
        self._masks.append(mask)
        self._stats.append(stats)

    def result(self):
        mask = np.concatenate(self._masks, axis=0) if self._masks else np.zeros((0, self.g.c1 - self.g.c0), np.uint8)
        return mask, tiling.sum_stats(self._stats, self.num_classes)


def resolve(scores, weights, valid, num_classes: int):
    """Column-major blended scores [w, h, C] and weights [w, h] -> (uint8 mask [h, w], 255 where
    ``valid`` [h, w] is False; stats over the valid pixels). Every per-class step runs in
    TensorFlow, so on a GPU only the mask and the sums come back."""
    import tensorflow as tf
    probabilities = scores / tf.maximum(weights, 1e-12)[..., None]
    classes = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    confidence = tf.reduce_max(probabilities, axis=-1)
    entropy = -tf.reduce_sum(probabilities * tf.math.log(tf.clip_by_value(probabilities, 1e-12, 1.0)), axis=-1)
    if valid is not None:
        keep = tf.constant(np.ascontiguousarray(valid.T))
        classes = tf.where(keep, classes, 255)
        segments = tf.where(keep, classes, num_classes)  # invalid pixels go to an extra segment
        entropy = tf.where(keep, entropy, 0.0)
    else:
        segments = classes
    flat = tf.reshape(segments, [-1])
    pixels = tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.int64), flat, num_classes + 1)[:num_classes]
    confidence_sums = tf.math.unsorted_segment_sum(tf.cast(tf.reshape(confidence, [-1]), tf.float64), flat,
                                                   num_classes + 1)[:num_classes]
    mask = np.ascontiguousarray(tf.cast(classes, tf.uint8).numpy().T)
    stats = {"pixels": pixels.numpy(), "confidence": confidence_sums.numpy(),
             "entropy": float(tf.reduce_sum(tf.cast(entropy, tf.float64)).numpy())}
    return mask, stats


def expected_tiles(height: int, width: int, tile: int, overlap: int, core=None) -> int:
    """How many model tiles a job runs (for batching jobs by work, not by count)."""
    g = Geometry.of(height, width, tile, overlap, core)
    return len(g.rows) * len(g.cols)


def rough_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """An estimate for an image whose size is not read yet (a photo before it is decoded)."""
    stride = max(1, tile - overlap)
    return max(1, math.ceil(max(height - overlap, 1) / stride)) * max(1, math.ceil(max(width - overlap, 1) / stride))
