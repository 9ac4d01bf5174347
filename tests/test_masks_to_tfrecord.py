"""masks_to_tfrecord on the real KITTI road photos and ground truth."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines import masks_to_tfrecord
from pipelines.common.images import ImageError
from segmodel import features as F
from tests.helpers import dataflow_args, read_records, staged_pipeline_transforms
from pipelines.dataset.colors import ColorMap

COLORS = {"classes": ["not_road", "road"],
          "colors": [{"color": [255, 0, 255], "index": 1}, {"color": [255, 0, 0], "index": 0},
                     {"color": [0, 0, 0], "index": 255}]}
KITTI_KEYS = ["--image_key_regex", r"^(.+)_(\d+)$", "--mask_key_regex", r"^(.+)_road_(\d+)$"]


def kitti_expected(gt_path):
    """The KITTI devkit convention in NumPy: blue channel > 0 road, red channel 0 don't-care."""
    gt = np.asarray(Image.open(gt_path).convert("RGB"))
    expected = np.where(gt[..., 2] > 0, 1, 0).astype(np.uint8)
    expected[gt[..., 0] == 0] = 255
    return expected


def run_kitti(tmp_path, images, masks, *extra):
    colors = tmp_path / "colors.json"
    colors.write_text(json.dumps(COLORS))
    out = tmp_path / "out"
    masks_to_tfrecord.run(["--images", f"{images}/*.png", "--masks", f"{masks}/*.png", "--output_dir", str(out),
                           "--mask_colors", str(colors), *KITTI_KEYS, *extra])
    return out


def test_kitti_road_pairs_pixel_exact(tmp_path, testdata):
    root = testdata / "kitti_road"
    out = run_kitti(tmp_path, root / "image_2", root / "gt_image_2")
    records = read_records(str(out / "train-*.tfrecord"))
    assert sorted(records) == ["um_000002", "umm_000035", "uu_000081"]
    for key, record in records.items():
        prefix, number = key.rsplit("_", 1)
        assert np.array_equal(record["mask"], kitti_expected(root / "gt_image_2" / f"{prefix}_road_{number}.png"))
        assert record[F.IMAGE_ENCODED] == (root / "image_2" / f"{key}.png").read_bytes()
        assert record[F.IMAGE_FORMAT] == b"png" and record[F.IMAGE_FILENAME] == f"{key}.png".encode()
    assert json.loads((out / "classes.json").read_text())["classes"][1] == {"index": 1, "name": "road"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images_written"] == 3 and set(stats["pixels_per_class"]) == {"not_road", "road", "ignore"}


def test_unpaired_and_bad_masks_are_error_records(tmp_path, testdata):
    root = testdata / "kitti_road"
    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(root / "image_2", images)
    shutil.copytree(root / "gt_image_2", masks)
    (masks / "uu_road_000081.png").unlink()  # image without its mask
    shutil.copy(root / "gt_image_2/um_road_000002.png", masks / "zz_road_000009.png")  # mask without image
    odd = np.asarray(Image.open(root / "gt_image_2/umm_road_000035.png").convert("RGB")).copy()
    odd[0, 0] = (1, 2, 3)  # a color COLORS.json does not list
    Image.fromarray(odd).save(masks / "umm_road_000035.png")
    out = run_kitti(tmp_path, images, masks)
    errors = {json.loads(line)["reason"] for line in (out / "errors.jsonl").read_text().splitlines()}
    assert errors == {"image_without_mask", "mask_without_image", "unmapped_mask_color"}
    assert list(read_records(str(out / "train-*.tfrecord"))) == ["um_000002"]


def test_color_map_single_channel_and_default():
    cmap = ColorMap.from_json({"colors": [{"color": 7, "index": 2}], "default": 255})
    assert cmap.names == ("background", "class_1", "class_2")
    out = cmap.apply(np.array([[7, 3], [7, 7]], np.uint8))
    assert out.tolist() == [[2, 255], [2, 2]]
    strict = ColorMap.from_json({"7": 1})
    with pytest.raises(ImageError):
        strict.apply(np.array([[7, 3]], np.uint8))


def test_masks_dataflow_job_builds_offline(tmp_path, gcs_bucket):
    colors = tmp_path / "colors.json"
    colors.write_text(json.dumps(COLORS))
    masks_to_tfrecord.run(["--images", f"gs://{gcs_bucket}/kitti/image_2/*.png",
                           "--masks", f"gs://{gcs_bucket}/kitti/gt_image_2/*.png", "--mask_colors", str(colors),
                           "--output_dir", f"gs://{gcs_bucket}/kitti-out", *KITTI_KEYS,
                           *dataflow_args(gcs_bucket, tmp_path)])
    names = staged_pipeline_transforms(tmp_path / "template.json")
    assert {"PairByKey", "BuildExamples", "WriteSegmentationDataset/WriteShards"} <= names


def test_pair_fn_reads_a_batch_ahead_and_rejects_an_unreadable_pair(tmp_path):
    """The DoFn alone: a batch with a good pair, a pair whose image vanished and a lone mask ->
    one record and two error records, in the batch's order."""
    Image.fromarray(np.full((6, 5, 3), 90, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((6, 5), 7, np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.full((6, 5), 7, np.uint8)).save(tmp_path / "b_mask.png")
    fn = masks_to_tfrecord.PairExampleFn(ColorMap.from_json({"7": 1}), "train", str(tmp_path))
    fn.setup()
    batch = [("a", {"image": [str(tmp_path / "a.png")], "mask": [str(tmp_path / "a_mask.png")]}),
             ("b", {"image": [str(tmp_path / "gone.png")], "mask": [str(tmp_path / "b_mask.png")]}),
             ("c", {"image": [], "mask": [str(tmp_path / "b_mask.png")]})]
    outputs = list(fn.process(batch))
    fn.teardown()
    records = [o for o in outputs if isinstance(o, tuple)]
    errors = [o.value for o in outputs if getattr(o, "tag", None) == "errors"]
    assert [r[1] for r in records] == ["a"] and records[0][2].height == 6
    assert [e["reason"] for e in errors] == ["unreadable_image", "mask_without_image"]


def test_the_pairs_job_on_beams_test_pipeline(tmp_path, testdata):
    """build_pipeline on Beam's TestPipeline, checked with assert_that."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from pipelines.masks_to_tfrecord import ColorMap
    from segcli.masks import MasksConfig
    root = testdata / "kitti_road"
    pairs = len(list((root / "image_2").glob("*.png")))
    with TestPipeline(runner=fn_runner.FnApiRunner()) as p:
        config = MasksConfig(images=f"{root}/image_2/*.png", masks=f"{root}/gt_image_2/*.png", mask_colors="",
                             output_dir=str(tmp_path / "tp"), num_shards=1, image_key_regex=KITTI_KEYS[1],
                             mask_key_regex=KITTI_KEYS[3])
        shards = masks_to_tfrecord.build_pipeline(p, config, ColorMap.from_json(COLORS))
        assert_that(shards | beam.Map(lambda s: (s["file"], s["split"])),
                    equal_to([("train-00000-of-00001.tfrecord", "train")]), label="Files")
        assert_that(shards | beam.Map(lambda s: s["examples"]), equal_to([pairs]), label="Examples")


def test_an_output_folder_the_input_globs_would_read_is_refused(tmp_path):
    colors = tmp_path / "colors.json"
    colors.write_text(json.dumps(COLORS))
    with pytest.raises(SystemExit, match="lies where .* matches"):
        masks_to_tfrecord.run(["--images", f"{tmp_path}/**", "--masks", f"{tmp_path}/gt/*.png",
                               "--output_dir", str(tmp_path / "dataset"), "--mask_colors", str(colors)])


def test_a_pair_whose_file_is_a_link_out_of_its_folder_is_refused(tmp_path, testdata):
    """A symbolic link in the images or masks folder that leads outside it: an error record
    (path_escapes_root) and the other pairs written."""
    images, masks, outside = tmp_path / "image_2", tmp_path / "gt_image_2", tmp_path / "elsewhere"
    shutil.copytree(testdata / "kitti_road/image_2", images)
    shutil.copytree(testdata / "kitti_road/gt_image_2", masks)
    outside.mkdir()
    victim = sorted(masks.iterdir())[0]
    shutil.move(victim, outside / victim.name)
    victim.symlink_to(outside / victim.name)  # masks/um_road_000002.png -> ../elsewhere/...
    out = run_kitti(tmp_path, images, masks)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in errors] == ["path_escapes_root"] and victim.name in errors[0]["source"]
    assert len(read_records(str(out / "*.tfrecord"))) == 2
