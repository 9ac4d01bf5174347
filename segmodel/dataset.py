"""TFRecord shards (docs/datasets.md) -> tf.data pipelines for training and evaluation."""
from __future__ import annotations

import json
import logging

import tensorflow as tf

from segmodel import preprocess
from segformat.records import MANIFEST
from segmodel.features import decode_record, decode_record_window

LOG = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


class DatasetError(ValueError):
    """A dataset that cannot be read as its manifest describes it."""


def _manifest(data: str):
    """The manifest of a dataset folder, or None when ``data`` is a glob of shards."""
    if any(char in data for char in "*?[") or not tf.io.gfile.isdir(data):
        return None
    path = f"{data.rstrip('/')}/{MANIFEST}"
    if not tf.io.gfile.exists(path):
        raise DatasetError(f"{data} has no {MANIFEST}: not a finished dataset (an interrupted run, or one made "
                           "before manifests: pass a glob of its shards instead)")
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


def list_shards(data: str, split: str = "train") -> list:
    """The shard files of ``data``: a dataset folder (exactly the shards of ``split`` its manifest
    lists, each checked to be there with the size the manifest gives) or a glob of shards."""
    manifest = _manifest(data)
    if manifest is None:
        files = sorted(tf.io.gfile.glob(data))
        if not files:
            raise FileNotFoundError(f"no TFRecord shards match {data!r}")
        return files
    if split not in manifest["splits"]:
        raise DatasetError(f"{data} has no split {split!r} (it has {', '.join(sorted(manifest['splits']))})")
    files = []
    for shard in manifest["splits"][split]["shards"]:
        path = f"{data.rstrip('/')}/{shard['file']}"
        if not tf.io.gfile.exists(path):
            raise DatasetError(f"{path} is missing (listed in {MANIFEST})")
        size = tf.io.gfile.stat(path).length
        if size != shard["bytes"]:
            raise DatasetError(f"{path} has {size} bytes where {MANIFEST} says {shard['bytes']}: a damaged "
                               "or partial shard")
        files.append(path)
    return files


def _records(pattern: str, shuffle: bool, seed=None, deterministic=True, split: str = "train"):
    files = list_shards(pattern, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Read several shards at once: on GCS each stream is latency-bound, and mixing shards also
    # mixes the examples before the shuffle buffer.
    return ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16), num_parallel_calls=AUTOTUNE,
                         deterministic=deterministic)


def training_dataset(pattern: str, batch_size: int, crop_size=(512, 512), min_scale=0.5, max_scale=2.0,
                     jitter=1.0, shuffle_buffer=256, seed=None, deterministic=False,
                     split: str = "train") -> tf.data.Dataset:
    """Endless, shuffled, augmented batches: (float images [B, h, w, 3] 0..255, uint8 masks [B, h, w, 1]).

    Each example's augmentation draws from its own stateless seed, (``seed``, its position in the
    stream), so the random draws do not depend on which thread runs it. With
    ``deterministic=True`` the stream's order is fixed too (shards and records are read in the
    seeded shuffle order, maps return in order): the same seed gives the same batches, at the
    cost of waiting on the slowest example of each batch. ``seed=None`` draws one.
    """
    if seed is None:
        seed = int(tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int64))
    ds = _records(pattern, shuffle=True, seed=seed, deterministic=deterministic, split=split)
    ds = ds.shuffle(shuffle_buffer, seed=seed).repeat().enumerate()

    # Decode and augment in one map (one function call per example), decoding only the part of
    # each JPEG the random crop needs.
    def augmented(position, record):
        uniform = preprocess.draws(preprocess.WINDOW_DRAWS + preprocess.RESAMPLE_DRAWS,
                                   tf.stack([tf.constant(seed, tf.int64), position]))
        image, mask, window = decode_record_window(
            record, lambda size: preprocess.crop_window(size, crop_size[0], crop_size[1], min_scale, max_scale,
                                                        uniform[:preprocess.WINDOW_DRAWS]))
        return preprocess.resample_window(image, mask, window, crop_size[0], crop_size[1], jitter=jitter,
                                          uniform=uniform[preprocess.WINDOW_DRAWS:])

    ds = ds.map(augmented, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_dataset(pattern: str, split: str = "val") -> tf.data.Dataset:
    """Every image once, at full size, in file order: batches of one (uint8 image, uint8 mask)."""
    ds = _records(pattern, shuffle=False, split=split)
    return ds.map(decode_record, num_parallel_calls=AUTOTUNE).batch(1).prefetch(AUTOTUNE)


def dataset_dir(pattern: str) -> str:
    """The dataset folder: ``pattern`` itself when it is one, else the folder of the glob."""
    if not any(char in pattern for char in "*?[") and tf.io.gfile.isdir(pattern):
        return pattern.rstrip("/")
    return pattern.rsplit("/", 1)[0] if "/" in pattern else "."


def read_json_beside(pattern: str, name: str):
    path = f"{dataset_dir(pattern)}/{name}"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


def count_examples(pattern: str, split: str = "train") -> int:
    """Images in the shards: from the manifest of a dataset folder, from stats.json beside a glob
    when it covers this split (free), else by reading every record once."""
    manifest = _manifest(pattern)
    if manifest is not None:
        list_shards(pattern, split)  # present and whole
        return int(manifest["splits"][split]["examples"])
    stats = read_json_beside(pattern, "stats.json")
    split = pattern.rsplit("/", 1)[-1].split("-")[0]
    if stats and split in stats.get("images_written_by_split", {}):
        return int(stats["images_written_by_split"][split])
    LOG.info("counting the records of %s (no stats.json for split %r)", pattern, split)
    return int(_records(pattern, shuffle=False).reduce(0, lambda n, _: n + 1))
