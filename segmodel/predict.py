"""Segmenting images of any size tile by tile, with the blend and every per-class step on the
accelerator: only uint8 class ids and a few statistics come back to the host.

``TiledSegmenter.segment(jobs)`` takes a list of jobs (a photo, or one chunk of a large raster;
see ``segmodel.tiling``) and for each returns the class mask of its output rectangle and its
statistics. In between:

* reading runs ahead on threads: each job's ``open()`` (a photo's decode, a raster's header) and
  its tile-row reads are submitted before the model needs them, so the model call rarely waits;
* the tiles of all jobs are pooled into model calls of ``batch_size`` equal-shaped tiles (a call
  can hold the end of one photo and the start of the next);
* one compiled step per call: the model, softmax and the blend weight, in TensorFlow (on the
  GPU when there is one);
* each tile row is blended into a one-tile-high buffer as wide as the job (interval by interval
  between tile borders), finished rows are resolved (normalise, argmax, confidence, entropy, per-class
  sums) in TensorFlow too; the buffer never grows with the image's height, and a job's width is
  bounded by its chunk;
* a finished job is handed to ``on_done`` on a background thread (mask encoding and writing
  overlap the next model calls).

The result equals a whole-image blend of the image's global tile grid (up to float32 rounding
in the order of the additions), whichever chunks the image is cut into.

TensorFlow is imported inside the methods that compute: a batch job's launcher plans its chunks
with ``Geometry`` and ``expected_tiles`` (NumPy) before any model is loaded.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging

import numpy as np

from segformat.masks import IGNORE_INDEX
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

    def __init__(self, model, num_classes: int, tile: int = 512, overlap: int = 64, batch_size: int = 8,
                 confidence_map: bool = False, probability_map: bool = False):
        import tensorflow as tf
        self.model, self.num_classes = model, num_classes
        self.confidence_map, self.probability_map = confidence_map, probability_map
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self._pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS, thread_name_prefix="segment-read")
        self._post = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="segment-post")
        self._weights = {}

        def scores_of(tiles):
            scores = self.model(tf.cast(tiles, tf.float32), training=False)
            if isinstance(scores, dict):  # the torchvision-style export: [N, C, H, W]
                scores = tf.transpose(scores["out"], (0, 2, 3, 1))
            return tf.cast(scores, tf.float32)

        self._scores = tf.function(scores_of, reduce_retracing=True)

    def _step(self, tiles, weights):
        """The model, then softmax times the blend weights in one fused XLA kernel."""
        return _weigh(self._scores(tiles), weights)

    def geometry(self, job, height: int, width: int) -> Geometry:
        return Geometry.of(height, width, self.tile, self.overlap, getattr(job, "core", None))

    def _tile_weights(self, th: int, tw: int):
        if (th, tw) not in self._weights:
            self._weights[(th, tw)] = tiling.blend_weights(th, tw, self.overlap)
        return self._weights[(th, tw)]

    def segment(self, jobs, on_done=None) -> list:
        """[on_done(job, mask, stats, error)] per job, in order (the default returns
        (mask, stats, error)): ``mask`` uint8 [r1 - r0, c1 - c0] class ids (255 where the input
        is not valid), ``stats`` {"pixels", "confidence", "entropy"} over the valid pixels (and,
        with ``confidence_map``, "confidence_map": the top class's probability x 255 as uint8
        [r1 - r0, c1 - c0], 0 where the input is not valid; with ``probability_map``,
        "probability_map": every class's probability x 255 as uint8 [r1 - r0, c1 - c0, C], 0 where
        the input is not valid);
        ``error`` the exception that stopped this job (the others go on)."""
        on_done = on_done or (lambda job, mask, stats, error: (mask, stats, error))
        finished = {}  # job index -> future of on_done's result (jobs of other shapes finish out of order)
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
            finished[index] = self._post.submit(self._finish, on_done, job, blender)

        for index, job, geometry, rows, error in self._read_ahead(jobs):
            if error is not None:
                finished[index] = self._post.submit(self._finish, on_done, job, None, error)
                continue
            shape = (geometry.tile_height, geometry.tile_width)
            blenders[index] = _RowBlender(job, geometry, self.num_classes, self.overlap, self._tile_weights(*shape),
                                          self.confidence_map, self.probability_map)
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
        return [finished[index].result() for index in range(len(finished))]

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

    def __init__(self, job, geometry: Geometry, num_classes: int, overlap: int, tile_weights: np.ndarray,
                 confidence_map: bool = False, probability_map: bool = False):
        import tensorflow as tf
        self.job, self.g, self.num_classes = job, geometry, num_classes
        self.confidence_map, self.probability_map = confidence_map, probability_map
        g = geometry
        width = g.x1 - g.x0
        offsets = [col - g.x0 for col in g.cols]
        # A tile row is assembled interval by interval between tile borders: each interval is the
        # sum of the (one to three) tiles covering it, so the cost is the row's size, not k times it.
        borders = sorted({0, width, *offsets, *(x + g.tile_width for x in offsets)})
        self._intervals = [(a, b, [(k, a - x) for k, x in enumerate(offsets) if x <= a and b <= x + g.tile_width])
                           for a, b in zip(borders, borders[1:])]
        # The weights of a tile row, summed over its tiles (the same for every tile row): [th, width].
        row_weights = np.zeros((g.tile_height, width), np.float32)
        for x in offsets:
            row_weights[:, x:x + g.tile_width] += tile_weights
        self._row_weights = tf.constant(row_weights)
        self._parts = {}  # tile row -> its tiles' weighted probabilities [th, tw, C], in column order
        self._valid = {}
        self._order = list(g.rows)
        self._next = 0  # index into _order of the next tile row to blend
        self._carry = None  # (first row, scores [th, width, C], weights [th, width], valid [th, width] or None)
        self._masks, self._stats = [], []
        self._maps = {"confidence_map": [], "probability_map": []}  # the uint8 maps asked for, row blocks
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
        pieces = []
        for a, b, covering in self._intervals:
            piece = None
            for k, start in covering:
                part = tiles[k][:, start:start + b - a]
                piece = part if piece is None else piece + part
            pieces.append(piece)
        scores = tf.concat(pieces, axis=1) if len(pieces) > 1 else pieces[0]  # [th, width, C]
        weights = self._row_weights
        if self._carry is not None:
            first, carried, carried_weights, _ = self._carry
            self._resolve_carry(row)
            shared = first + carried.shape[0] - row  # rows of the previous tile row this one overlaps
            if shared > 0:
                scores = tf.concat([scores[:shared] + carried[-shared:], scores[shared:]], axis=0)
                weights = tf.concat([weights[:shared] + carried_weights[-shared:], weights[shared:]], axis=0)
        self._carry = (row, scores, weights, valid)

    def _resolve_carry(self, upto):
        """Resolves the carried rows above ``upto`` (all of them when None) inside the output."""
        first, scores, weights, valid = self._carry
        last = first + scores.shape[0] if upto is None else min(upto, first + scores.shape[0])
        a, b = max(first, self.g.r0), min(last, self.g.r1)
        if b <= a:
            return
        c0, c1 = self.g.c0 - self.g.x0, self.g.c1 - self.g.x0
        part_valid = None if valid is None else valid[a - first:b - first, c0:c1]
        mask, stats = resolve(scores[a - first:b - first, c0:c1], weights[a - first:b - first, c0:c1],
                              part_valid, self.num_classes, self.confidence_map, self.probability_map)
        self._masks.append(mask)
        for key, blocks in self._maps.items():
            if key in stats:
                blocks.append(stats.pop(key))
        self._stats.append(stats)

    def result(self):
        empty = np.zeros((0, self.g.c1 - self.g.c0), np.uint8)
        mask = np.concatenate(self._masks, axis=0) if self._masks else empty
        stats = tiling.sum_stats(self._stats, self.num_classes)
        if self.confidence_map:
            blocks = self._maps["confidence_map"]
            stats["confidence_map"] = np.concatenate(blocks, axis=0) if blocks else empty
        if self.probability_map:
            blocks = self._maps["probability_map"]
            stats["probability_map"] = np.concatenate(blocks, axis=0) if blocks else \
                np.zeros((0, self.g.c1 - self.g.c0, self.num_classes), np.uint8)
        return mask, stats


# The per-class steps are compiled with XLA (fused: ~3x faster on a CPU than TensorFlow's
# kernels one by one, measured on 512x1024x4 rows), which compiles once per shape; shapes are
# padded up to these multiples so a bucket of photos of many sizes compiles a handful of times.
PAD_ROWS, PAD_COLS = 64, 128


def segmenter_for(model: str, num_classes: int, tile: int, overlap: int, batch_size: int, *, opener=None,
                  precision: str = "float32", tta_scales=(1.0,), tta_flip: bool = False,
                  confidence_map: bool = False, probability_map: bool = False) -> TiledSegmenter:
    """A TiledSegmenter over the exported model at ``model`` (a MODEL folder or .keras file, its
    files opened with ``opener``: Beam's FileSystems.open reads any filesystem), computing in
    ``precision`` (segmodel.fcn.with_precision) and seen through the test-time views
    ``tta_scales``/``tta_flip`` (segmodel.tta): what batch segmentation, the Label Studio backend
    and the CVAT function each run."""
    from segmodel.exported import load_exported
    from segmodel.fcn import with_precision
    from segmodel.tta import with_test_time_augmentation
    network = with_test_time_augmentation(with_precision(load_exported(model, opener), precision),
                                          tta_scales, tta_flip)
    return TiledSegmenter(network, num_classes, tile, overlap, batch_size, confidence_map=confidence_map,
                          probability_map=probability_map)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@functools.cache
def _compiled():
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def weigh(scores, weights):
        return tf.nn.softmax(scores, axis=-1) * weights[None, :, :, None]

    @tf.function(jit_compile=True)
    def resolve_rows(scores, weights, valid):
        num_classes = scores.shape[-1]
        probabilities = scores / tf.maximum(weights, 1e-12)[..., None]
        classes = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        confidence = tf.reduce_max(probabilities, axis=-1)
        entropy = -tf.reduce_sum(probabilities * tf.math.log(tf.clip_by_value(probabilities, 1e-12, 1.0)), axis=-1)
        segments = tf.reshape(tf.where(valid, classes, num_classes), [-1])  # invalid: an extra segment
        pixels = tf.math.unsorted_segment_sum(tf.ones_like(segments, tf.int64), segments, num_classes + 1)
        confidence_sums = tf.math.unsorted_segment_sum(tf.cast(tf.reshape(confidence, [-1]), tf.float64),
                                                       segments, num_classes + 1)
        entropy_sum = tf.reduce_sum(tf.cast(tf.where(valid, entropy, 0.0), tf.float64))
        confidence_map = tf.cast(tf.where(valid, tf.round(confidence * 255.0), 0.0), tf.uint8)
        return (tf.cast(tf.where(valid, classes, IGNORE_INDEX), tf.uint8), pixels[:num_classes],
                confidence_sums[:num_classes], entropy_sum, confidence_map)

    @tf.function(jit_compile=True)
    def probability_bytes(scores, weights, valid):
        probabilities = scores / tf.maximum(weights, 1e-12)[..., None]
        return tf.cast(tf.where(valid[..., None], tf.round(probabilities * 255.0), 0.0), tf.uint8)

    return weigh, resolve_rows, probability_bytes


def _weigh(scores, weights):
    """softmax(scores) * weights for tiles [n, th, tw, C], through the padded compiled kernel."""
    import tensorflow as tf
    n, th, tw = scores.shape[:3]
    padded = (1 << (n - 1).bit_length(), _round_up(th, PAD_ROWS), _round_up(tw, PAD_ROWS))
    if padded != (n, th, tw):
        scores = tf.pad(scores, [[0, padded[0] - n], [0, padded[1] - th], [0, padded[2] - tw], [0, 0]])
        weights = np.pad(weights, [[0, padded[1] - th], [0, padded[2] - tw]])
        return _compiled()[0](scores, weights)[:n, :th, :tw]
    return _compiled()[0](scores, weights)


def resolve(scores, weights, valid, num_classes: int, confidence_map: bool = False, probability_map: bool = False):
    """Blended scores [h, w, C] and weights [h, w] -> (uint8 mask [h, w], 255 where ``valid``
    [h, w] is False; stats over the valid pixels, with ``confidence_map`` also the top class's
    probability x 255 as uint8 [h, w], with ``probability_map`` every class's as uint8 [h, w, C]).
    Every per-class step runs in TensorFlow, so on a GPU only the mask, the sums (and the uint8
    maps when asked) come back."""
    import tensorflow as tf
    h, w = scores.shape[:2]
    ph, pw = _round_up(h, PAD_ROWS), _round_up(w, PAD_COLS)
    keep = np.ones((ph, pw), bool)
    keep[h:] = keep[:, w:] = False  # padding is invalid: out of the statistics
    if valid is not None:
        keep[:h, :w] = valid
    if (ph, pw) != (h, w):
        scores = tf.pad(scores, [[0, ph - h], [0, pw - w], [0, 0]])
        weights = tf.pad(weights, [[0, ph - h], [0, pw - w]], constant_values=1.0)
    mask, pixels, confidence, entropy, top = _compiled()[1](scores, weights, keep)
    stats = {"pixels": pixels.numpy(), "confidence": confidence.numpy(), "entropy": float(entropy.numpy())}
    if confidence_map:
        stats["confidence_map"] = top.numpy()[:h, :w]
    if probability_map:
        stats["probability_map"] = _compiled()[2](scores, weights, keep).numpy()[:h, :w]
    return mask.numpy()[:h, :w], stats


def expected_tiles(height: int, width: int, tile: int, overlap: int, core=None) -> int:
    """How many model tiles a job runs (for batching jobs by work, not by count)."""
    g = Geometry.of(height, width, tile, overlap, core)
    return len(g.rows) * len(g.cols)
