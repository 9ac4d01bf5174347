"""Image + mask pairs (KITTI road, satellite label rasters) -> sharded TFRecords.

    python -m pipelines.masks_to_tfrecord --images GLOB --masks GLOB --output_dir OUT \\
        --mask_colors COLORS.json [--split train] [--num_shards N] \\
        [--image_key_regex R] [--mask_key_regex R] [Beam options]

Pairing rule: each file's name without folder and extension (its stem) is matched against a
regular expression; the groups it captures, joined with "_", are the pair key (a named group
``key`` is used alone when present). The defaults take the whole stem, so ``a.jpg`` pairs with
``a.png``. KITTI road pairs ``um_000002.png`` with ``um_road_000002.png``:
``--image_key_regex '^(.+)_(\\d+)$' --mask_key_regex '^(.+)_road_(\\d+)$'``.
An image without a mask, a mask without an image, or two files with one key are error records.

COLORS.json: ``{"classes": ["not_road", "road"], "colors": [{"color": [255, 0, 255], "index": 1},
{"color": [255, 0, 0], "index": 0}, {"color": [0, 0, 0], "index": 255}]}``; a color is an RGB
triple or a single-channel value (grey or palette index); ``"default": 255`` maps every other
color, otherwise a mask with an unlisted color is rejected (a wrong mapping should fail loudly).
"""
from __future__ import annotations

import io
import logging
import re

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio

from pipelines.common import images as image_checks
from pipelines.dataset.job import checked_config, run_dataset_job
from pipelines.dataset.writer import ConvertFilesFn, RecordRef, WriteSegmentationDataset, pixel_stats, reject_image
from pipelines.common.runner import ERRORS, STATS, count
from pipelines.common.storage import READ_AHEAD
from pipelines.dataset.colors import ColorMap, load_color_map, pair_key
from segcli.masks import MasksConfig, make_parser
from segformat.masks import class_pixel_counts

LOG = logging.getLogger(__name__)
IMAGE, MASK = "image", "mask"


class KeyFileFn(beam.DoFn):
    def __init__(self, kind: str, regex: str):
        self.kind, self.regex = kind, regex

    def setup(self):
        self.pattern = re.compile(self.regex)

    def process(self, path):
        key = pair_key(path, self.pattern)
        if key is None:
            yield from reject_image(path, "no_pair_key", f"{self.kind} name does not match {self.regex!r}")
            return
        yield key, path


class PairExampleFn(ConvertFilesFn):
    """Batches of (key, {image: [path], mask: [path]}) -> (split, key, RecordRef) or error records."""
    progress_label = "masks_to_tfrecord pairs"

    def __init__(self, color_map: ColorMap, split: str, images_root: str,
                 max_pixels: int = image_checks.DEFAULT_MAX_PIXELS, masks_root: str | None = None):
        self.color_map, self.split, self.images_root, self.max_pixels = color_map, split, images_root, max_pixels
        self.masks_root = masks_root

    def process(self, batch):
        yield from self.convert_batch(batch)

    def locate(self, element):
        """-> (key, (image path, mask path) or None, outputs for a key without exactly one pair)."""
        key, grouped = element
        image_paths, mask_paths = sorted(grouped[IMAGE]), sorted(grouped[MASK])
        if len(image_paths) == 1 and len(mask_paths) == 1:
            try:  # a symbolic link in an input folder that leads out of it is not an input
                image_checks.ensure_inside(image_paths[0], self.images_root)
                if self.masks_root is not None:
                    image_checks.ensure_inside(mask_paths[0], self.masks_root)
            except image_checks.ImageError as e:
                return key, None, list(reject_image(f"{image_paths[0]} + {mask_paths[0]}", e.reason, e.detail))
            return key, (image_paths[0], mask_paths[0]), []
        if not image_paths:
            reason, source = "mask_without_image", mask_paths[0]
        elif not mask_paths:
            reason, source = "image_without_mask", image_paths[0]
        else:
            reason, source = "ambiguous_pair", image_paths[0]
        return key, None, list(reject_image(source, reason, f"key {key!r}: images {image_paths}, masks {mask_paths}"))

    def convert(self, key, paths, reads):
        (image_path, mask_path), ((data, image_error), (mask_data, mask_error)) = paths, reads
        read_error = image_error or mask_error
        if read_error is not None:
            yield from reject_image(f"{image_path} + {mask_path}", "unreadable_image", str(read_error)[:500])
            return
        try:
            fmt, height, width = image_checks.inspect_image(data, self.max_pixels)
            image_checks.inspect_image(mask_data, self.max_pixels)
            from PIL import Image
            with Image.open(io.BytesIO(mask_data)) as mask_image:
                if self.color_map.channels == 3:
                    mask_image = mask_image.convert("RGB")
                raw = np.asarray(mask_image)
            if raw.shape[:2] != (height, width):
                raise image_checks.ImageError(
                    "size_mismatch", f"mask {raw.shape[1]}x{raw.shape[0]} != image {width}x{height}")
            mask = self.color_map.apply(raw)
        except image_checks.ImageError as e:
            yield from reject_image(f"{image_path} + {mask_path}", e.reason, e.detail)
            return
        except OSError as e:
            yield from reject_image(f"{image_path} + {mask_path}", "unreadable_image", str(e)[:500])
            return
        stats = {"images_written": 1, f"images_written/{self.split}": 1}
        stats.update(pixel_stats(class_pixel_counts(mask)))
        count("images_written")
        yield beam.pvalue.TaggedOutput(STATS, stats)
        yield self.split, key, RecordRef.of(
            image_path, data, fmt=fmt, height=height, width=width,
            filename=image_checks.relative_to(image_path, self.images_root), source_id=key,
            mask_png=image_checks.encode_mask_png(mask))


def build_records(p, config: MasksConfig, color_map: ColorMap) -> dict:
    """The pairs job's records, error records, stats and class table (WriteSegmentationDataset's
    inputs): image and mask files keyed by their stems, paired, each pair a record."""
    def keyed(kind, glob, regex):
        return (p
                | f"Match{kind.title()}s" >> fileio.MatchFiles(glob)
                | f"{kind.title()}Paths" >> beam.Map(lambda m: m.path)
                | f"Key{kind.title()}s" >> beam.ParDo(KeyFileFn(kind, regex)).with_outputs(ERRORS, STATS, main="keyed"))

    images, masks = keyed(IMAGE, config.images, config.image_key_regex), keyed(MASK, config.masks, config.mask_key_regex)
    converted = ({IMAGE: images.keyed, MASK: masks.keyed}
                 | "PairByKey" >> beam.CoGroupByKey()
                 | "Batch" >> beam.BatchElements(min_batch_size=READ_AHEAD // 2, max_batch_size=READ_AHEAD // 2)
                 | "BuildExamples" >> beam.ParDo(
                     PairExampleFn(color_map, config.split, image_checks.glob_root(config.images),
                                   masks_root=image_checks.glob_root(config.masks))).with_outputs(
                         ERRORS, STATS, main="records"))
    errors = (images[ERRORS], masks[ERRORS], converted[ERRORS]) | "AllErrors" >> beam.Flatten()
    stats = (images[STATS], masks[STATS], converted[STATS]) | "AllStats" >> beam.Flatten()
    classes = p | "Classes" >> beam.Create([color_map.classes_json()])
    return {"records": converted.records, "errors": errors, "stats": stats, "classes": classes}


def build_pipeline(p, config: MasksConfig, color_map: ColorMap, description=None):
    return build_records(p, config, color_map) | WriteSegmentationDataset(config.output_dir, config.num_shards,
                                                                          description=description)


def run(argv=None, save_main_session=True, test_pipeline=None):
    known, beam_args = make_parser().parse_known_args(argv)
    config = checked_config("segpipe dataset masks", lambda: MasksConfig(**vars(known)))
    color_map = load_color_map(config.mask_colors)
    return run_dataset_job(
        "masks_to_tfrecord", "segpipe dataset masks", vars(known), beam_args, output_dir=config.output_dir,
        inputs=(config.images, config.masks), split=config.split, overwrite=config.overwrite,
        build=lambda p, description: build_pipeline(p, config, color_map, description),
        test_pipeline=test_pipeline, save_main_session=save_main_session)

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
