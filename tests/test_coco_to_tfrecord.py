"""coco_to_tfrecord end to end on real COCO data: pixel-exact masks, records, bad inputs, runners, GCS."""
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from pipelines import coco_to_tfrecord
from segmodel import features as F
from segformat.masks import IGNORE_INDEX, VOC_COCO_IDS
from tests.helpers import dataflow_args, read_records, staged_pipeline_transforms, torchvision_rule, upload_tree
from pipelines.dataset.coco import build_pipeline
from pipelines.dataset.splits import split_for
from segcli.coco import CocoConfig

PERSON = "coco_person_val2017"


def convert(tmp_path, annotations, images, *extra, name="out"):
    out = tmp_path / name
    coco_to_tfrecord.run(["--annotations", str(annotations), "--images", str(images), "--output_dir", str(out),
                          *extra])
    return out


def independent_masks(annotations_file, crowd="ignore"):
    """The contract's rules computed with pycocotools' own COCO API (annToMask), per image id."""
    coco = COCO(str(annotations_file))
    index = {cid: k + 1 for k, cid in enumerate(sorted(coco.getCatIds()))}
    expected = {}
    for image_id, info in coco.imgs.items():
        h, w = info["height"], info["width"]
        mask = np.zeros((h, w), np.uint8)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if a["segmentation"]]
        painted = [(coco.annToMask(a).astype(bool), a) for a in anns if not a["iscrowd"]]
        painted.sort(key=lambda ma: (-int(ma[0].sum()), ma[1]["id"]))
        covered = np.zeros((h, w), bool)
        for m, a in painted:
            mask[m] = index[a["category_id"]]
            covered |= m
        for a in anns:
            if a["iscrowd"]:
                mask[coco.annToMask(a).astype(bool) & ~covered] = IGNORE_INDEX
        expected[str(image_id)] = mask
    return expected


def test_person_val2017_pixel_exact_and_model_garden_keys(tmp_path, testdata):
    root = testdata / PERSON
    out = convert(tmp_path, root / "annotations/test_coco.json", root / "images")
    records = read_records(str(out / "train-*.tfrecord"))
    expected = independent_masks(root / "annotations/test_coco.json")
    assert set(records) == set(expected) and len(records) == 4
    for source_id, record in records.items():
        assert np.array_equal(record["mask"], expected[source_id]), source_id
        filename = record[F.IMAGE_FILENAME].decode()
        assert record[F.IMAGE_ENCODED] == (root / "images" / filename).read_bytes()
        assert record[F.IMAGE_FORMAT] == b"jpeg" and record[F.MASK_FORMAT] == b"png"
        assert record["mask"].shape == (record[F.IMAGE_HEIGHT], record[F.IMAGE_WIDTH])
        assert Image.open(io.BytesIO(record[F.MASK_ENCODED])).mode == "L"
    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"ignore_index": 255, "classes": [{"index": 0, "name": "background"},
                                                        {"index": 1, "name": "person", "coco_id": 1}]}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images_written"] == 4 and stats["annotations_used"] == 14 and stats["images_rejected"] == 0
    assert stats["pixels_per_class"]["person"] == sum(int((m == 1).sum()) for m in expected.values())
    assert (out / "errors.jsonl").read_text() == ""


@pytest.mark.parametrize("case, split", [("coco_instances", "train"), ("coco_instances", "val"),
                                         ("coco_stuff", "train"), ("coco_stuff", "val")])
def test_format_cases_pixel_exact(tmp_path, testdata, case, split):
    root = testdata / "coco_format_cases" / case
    prefix = "instances" if case == "coco_instances" else "stuff"
    annotations = root / "annotations" / f"{prefix}_{split}.json"
    out = convert(tmp_path, annotations, root / "images" / split)
    records = read_records(str(out / "train-*.tfrecord"))
    expected = independent_masks(annotations)
    assert set(records) == set(expected)
    for source_id in expected:
        assert np.array_equal(records[source_id]["mask"], expected[source_id])
    raw = json.loads(annotations.read_text())
    empty = [a for a in raw["annotations"] if not a["segmentation"]]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in errors] == ["empty_segmentation"] * len(empty)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["annotations_skipped"].get("empty_segmentation", 0) == len(empty)


def test_category_id_gap_and_crowd_modes(tmp_path, testdata):
    root = testdata / "coco_format_cases/coco_instances"
    annotations = root / "annotations/instances_val.json"
    ids = [c["index"] for c in json.loads(
        (convert(tmp_path, annotations, root / "images/val", name="ignore") / "classes.json").read_text())["classes"]]
    assert ids == [0, 1, 2, 3]  # COCO ids 1, 2, 4 -> 1, 2, 3
    as_class = read_records(str(convert(tmp_path, annotations, root / "images/val", "--crowd", "class",
                                        name="class") / "train-*.tfrecord"))["40"]["mask"]
    dropped = read_records(str(convert(tmp_path, annotations, root / "images/val", "--crowd", "drop",
                                       name="drop") / "train-*.tfrecord"))["40"]["mask"]
    assert (as_class == 2).sum() > 0 and IGNORE_INDEX not in as_class
    assert set(np.unique(dropped)) <= {0, 1}


def test_torchvision_compatible_mode(tmp_path, testdata):
    root = testdata / PERSON
    annotations = root / "annotations/test_coco.json"
    out = convert(tmp_path, annotations, root / "images", "--classes", "voc", "--crowd", "class",
                  "--overlap", "ignore")
    records = read_records(str(out / "train-*.tfrecord"))
    coco = COCO(str(annotations))
    index = {cid: k + 1 for k, cid in enumerate(VOC_COCO_IDS)}
    overlapping = 0
    for image_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        expected = torchvision_rule(info["height"], info["width"], anns, index)
        assert np.array_equal(records[str(image_id)]["mask"], expected)
        overlapping += int((expected == 255).sum())
    assert overlapping > 0  # the real photos do have overlapping people
    assert json.loads((out / "classes.json").read_text())["classes"][15]["name"] == "person"


def test_val_split_is_a_deterministic_hash(tmp_path, testdata):
    root = testdata / PERSON
    args = ("--val_fraction", "0.5", "--num_shards", "2")
    first = convert(tmp_path, root / "annotations/test_coco.json", root / "images", *args, name="a")
    second = convert(tmp_path, root / "annotations/test_coco.json", root / "images", *args, name="b")
    train, val = read_records(str(first / "train-*")), read_records(str(first / "val-*"))
    assert len(train) + len(val) == 4
    for source_id in train:
        assert split_for(int(source_id), 0.5, "train") == "train"
    for source_id in val:
        assert split_for(int(source_id), 0.5, "train") == "val"
    names = sorted(p.name for p in first.glob("*.tfrecord"))
    assert names == sorted(p.name for p in second.glob("*.tfrecord"))
    assert all(n.endswith("-of-00002.tfrecord") for n in names)
    for name in names:  # byte-identical re-runs
        assert (first / name).read_bytes() == (second / name).read_bytes()
    stats = json.loads((first / "stats.json").read_text())
    assert stats["images_written_by_split"] == {k: v for k, v in (("train", len(train)), ("val", len(val))) if v}


def make_bad_dataset(tmp_path, testdata):
    """Real COCO photos plus one of each bad input kind; returns (annotations path, images dir)."""
    src = testdata / PERSON
    images = tmp_path / "images"
    images.mkdir()
    good = json.loads((src / "annotations/test_coco.json").read_text())
    for info in good["images"]:
        shutil.copy(src / "images" / info["file_name"], images / info["file_name"])
    jpeg = (src / "images/000000000785.jpg").read_bytes()
    (images / "zero.jpg").write_bytes(b"")
    (images / "corrupt.jpg").write_bytes(b"this is not a jpeg" * 10)
    (images / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (images / "resized.jpg").write_bytes(jpeg)  # JSON will claim another size
    bomb = io.BytesIO()
    Image.new("L", (10000, 9500)).save(bomb, format="PNG")  # 95 Mpx in ~100 KB: over Pillow's limit
    (images / "bomb.png").write_bytes(bomb.getvalue())
    (tmp_path / "outside.jpg").write_bytes(jpeg)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    (images / "anim.gif").write_bytes(gif.getvalue())
    bad_images = {
        9001: ("missing.jpg", 10, 10), 9002: ("zero.jpg", 10, 10), 9003: ("corrupt.jpg", 10, 10),
        9004: ("truncated.jpg", 425, 640), 9005: ("resized.jpg", 100, 100), 9006: ("bomb.png", 9500, 10000),
        9007: ("../outside.jpg", 425, 640), 9008: (str(tmp_path / "outside.jpg"), 425, 640),
        9009: ("anim.gif", 8, 8),
    }
    for image_id, (name, h, w) in bad_images.items():
        good["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
    poly = [[10, 10, 100, 10, 100, 100, 10, 100]]
    bad_annotations = [
        (1, 785, 1, [[float("nan"), 10, 50, 10, 50, 50]], "non_finite_coordinates"),
        (2, 785, 1, [[0, 0, 1e9, 0, 1e9, 1e9]], "coordinates_out_of_range"),
        (3, 785, 1, [[10, 10, 20, 20]], "polygon_under_3_points"),
        (4, 785, 1, [], "empty_segmentation"),
        (5, 785, 1, {"size": [425, 640], "counts": "PPYo0"}, "rle_length_mismatch"),
        (6, 785, 77, poly, "unknown_category_id"),
        (7, 123456, 1, poly, "unknown_image_id"),
    ]
    for ann_id, image_id, cat, seg, _ in bad_annotations:
        good["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": seg,
                                    "iscrowd": 0, "area": 1.0, "bbox": [0, 0, 1, 1]})
    path = tmp_path / "annotations.json"
    # NaN is not JSON, but Python's and ijson's readers accept it, and broken exporters write it.
    path.write_text(json.dumps(good))
    expected_image_errors = {"missing.jpg": "missing_image", "zero.jpg": "empty_file",
                             "corrupt.jpg": "corrupt_image", "truncated.jpg": "truncated_image",
                             "resized.jpg": "size_mismatch", "bomb.png": "decompression_bomb",
                             "../outside.jpg": "path_escapes_root", str(tmp_path / "outside.jpg"): "path_escapes_root",
                             "anim.gif": "unsupported_format"}
    return path, images, expected_image_errors, {a[0]: a[4] for a in bad_annotations}


def test_bad_inputs_are_reported_and_good_images_still_written(tmp_path, testdata):
    annotations, images, image_errors, annotation_errors = make_bad_dataset(tmp_path, testdata)
    out = convert(tmp_path, annotations, images)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    by_source = {e["source"]: e["reason"] for e in errors}
    for name, reason in image_errors.items():
        matches = [r for s, r in by_source.items() if s in (name, f"{images}/{name}")]
        assert matches == [reason], (name, matches, by_source)
    for ann_id, reason in annotation_errors.items():
        assert by_source[f"annotation {ann_id}"] == reason
    assert len(errors) == len(image_errors) + len(annotation_errors)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images_written"] == 4 and stats["images_rejected"] == len(image_errors)
    assert stats["images_rejected_by_reason"]["path_escapes_root"] == 2
    for reason in annotation_errors.values():
        assert stats["annotations_skipped"][reason] == 1
    records = read_records(str(out / "train-*.tfrecord"))
    expected = independent_masks(testdata / PERSON / "annotations/test_coco.json")
    assert set(records) == set(expected)
    for source_id, mask in expected.items():
        assert np.array_equal(records[source_id]["mask"], mask)


def test_multi_processing_runner_gives_the_same_shards(tmp_path, testdata):
    root = testdata / PERSON
    single = convert(tmp_path, root / "annotations/test_coco.json", root / "images", name="single")
    multi = convert(tmp_path, root / "annotations/test_coco.json", root / "images", "--direct_num_workers", "2",
                    "--direct_running_mode", "multi_processing", name="multi")
    assert (single / "train-00000-of-00001.tfrecord").read_bytes() == \
        (multi / "train-00000-of-00001.tfrecord").read_bytes()
    assert json.loads((multi / "stats.json").read_text())["images_written"] == 4


def test_gcs_input_and_output_through_the_emulator(tmp_path, testdata, gcs_bucket):
    from apache_beam.io.filesystems import FileSystems
    root = testdata / PERSON
    prefix = f"gs://{gcs_bucket}/coco"
    upload_tree(root, prefix)
    coco_to_tfrecord.run(["--annotations", f"{prefix}/annotations/test_coco.json", "--images", f"{prefix}/images",
                          "--output_dir", f"{prefix}/out"])
    names = sorted(m.path for m in FileSystems.match([f"{prefix}/out/*"])[0].metadata_list)
    assert names == [f"{prefix}/out/{n}" for n in
                     ("classes.json", "dataset.json", "errors.jsonl", "stats.json", "train-00000-of-00001.tfrecord")]
    local = tmp_path / "from_gcs"
    local.mkdir()
    with FileSystems.open(f"{prefix}/out/train-00000-of-00001.tfrecord") as handle:
        (local / "train-00000-of-00001.tfrecord").write_bytes(handle.read())
    records = read_records(str(local / "*.tfrecord"))
    expected = independent_masks(root / "annotations/test_coco.json")
    for source_id, mask in expected.items():
        assert np.array_equal(records[source_id]["mask"], mask)


def test_dataflow_job_builds_offline(tmp_path, gcs_bucket):
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(f"gs://{gcs_bucket}/coco/a.json") as handle:  # the job checks it exists
        handle.write(b'{"images": [], "annotations": [], "categories": []}')
    coco_to_tfrecord.run(["--annotations", f"gs://{gcs_bucket}/coco/a.json", "--images", f"gs://{gcs_bucket}/i",
                          "--output_dir", f"gs://{gcs_bucket}/dataflow-out", *dataflow_args(gcs_bucket, tmp_path)])
    names = staged_pipeline_transforms(tmp_path / "template.json")
    for step in ("StreamCoco", "GroupByImage", "BuildExamples", "WriteSegmentationDataset/WriteShards"):
        assert step in names


def test_truncated_annotation_file_keeps_what_was_read_and_reports_the_cut(tmp_path, testdata):
    """A JSON cut off inside its annotations: the error is reported and counted, and the images
    (whose section was complete) are still written."""
    root = testdata / PERSON
    text = (root / "annotations/test_coco.json").read_text()
    document = json.loads(text)
    cut = text.index('"segmentation"', text.index('"annotations"') + 1) + 5  # inside the first annotation
    broken = tmp_path / "broken.json"
    broken.write_text(text[:cut])
    out = convert(tmp_path, broken, root / "images")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    cuts = [e for e in errors if e["reason"] == "malformed_annotation_file"]
    assert cuts and all(e["source"] == str(broken) for e in cuts)
    stats = json.loads((out / "stats.json").read_text())
    # each section's streaming pass reads to the end of the file, so each one meets the cut
    assert stats["annotation_file_errors"] == {"annotations": 1, "categories": 1, "images": 1}
    assert sorted(e["section"] for e in cuts) == ["annotations", "categories", "images"]
    # the images section was complete: every image is written (with no annotation: background)
    assert stats["images_written"] == len(document["images"])


def test_a_rerun_refuses_or_replaces_the_dataset_as_a_whole(tmp_path, testdata):
    """Re-running into a folder that holds a dataset refuses (no silent mix of old and new
    shards); --overwrite replaces it as a whole: no stale shard is left, and the manifest lists
    exactly the shards there, which training reads (not a glob that would catch leftovers)."""
    from segmodel import dataset
    root = testdata / PERSON
    annotations, images = root / "annotations/test_coco.json", root / "images"
    out = convert(tmp_path, annotations, images, "--num_shards", "4")
    assert len(list(out.glob("train-*-of-00004.tfrecord"))) == 4
    with pytest.raises(SystemExit, match="already holds a dataset.*--overwrite"):
        coco_to_tfrecord.run(["--annotations", str(annotations), "--images", str(images), "--output_dir", str(out),
                              "--num_shards", "2"])
    (out / "train-00003-of-00004.tfrecord.tmp-0123").write_bytes(b"partial shard of a killed run")
    coco_to_tfrecord.run(["--annotations", str(annotations), "--images", str(images), "--output_dir", str(out),
                          "--num_shards", "2", "--overwrite"])
    shards = sorted(p.name for p in out.iterdir() if ".tfrecord" in p.name)
    assert shards == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert not list((out / ".staging").glob("*"))
    manifest = json.loads((out / "dataset.json").read_text())
    listed = manifest["splits"]["train"]
    assert [s["file"] for s in listed["shards"]] == shards
    assert listed["examples"] == len(read_records(str(out / "train-*.tfrecord"))) == 4
    assert manifest["options"]["num_shards"] == 2 and [c["name"] for c in manifest["classes"]][0] == "background"
    import google_crc32c
    for shard in listed["shards"]:
        data = (out / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["crc32c"] == google_crc32c.Checksum(data).hexdigest().decode()
    assert dataset.count_examples(str(out), "train") == 4
    assert dataset.list_shards(str(out), "train") == [str(out / s) for s in shards]
    (out / shards[1]).write_bytes((out / shards[1]).read_bytes()[:-10])  # a truncated shard
    with pytest.raises(dataset.DatasetError, match="damaged or partial"):
        dataset.list_shards(str(out), "train")
    (out / shards[1]).unlink()
    with pytest.raises(dataset.DatasetError, match="missing"):
        dataset.count_examples(str(out), "train")


def test_an_annotations_file_that_is_not_a_coco_dataset_fails_clearly(tmp_path):
    for name, content in (("results.json", [{"image_id": 1, "category_id": 1, "score": 0.9}]),
                          ("other.json", {"hello": "world"})):
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(SystemExit, match="nothing was written"):
            coco_to_tfrecord.run(["--annotations", str(tmp_path / name), "--images", str(tmp_path),
                                  "--output_dir", str(tmp_path / f"out_{name}")])
    with pytest.raises(SystemExit, match="does not exist"):
        coco_to_tfrecord.run(["--annotations", str(tmp_path / "missing.json"), "--images", str(tmp_path),
                              "--output_dir", str(tmp_path / "out_missing")])


def test_the_coco_job_on_beams_test_pipeline(tmp_path, testdata):
    """build_pipeline on Beam's TestPipeline with assert_that on the shard entries it yields, and
    run() given a test_pipeline (Beam's testing convention for entry points)."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    root = testdata / PERSON
    annotations, images = str(root / "annotations/test_coco.json"), str(root / "images")
    with TestPipeline(runner=fn_runner.FnApiRunner()) as p:
        shards = build_pipeline(p, annotations, CocoConfig(images_root=images), "all",
                                                 str(tmp_path / "tp"), num_shards=2)
        assert_that(shards | beam.Map(lambda s: s["file"]),
                    equal_to(["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]), label="Files")
        assert_that(shards | beam.Map(lambda s: s["examples"]) | beam.CombineGlobally(sum), equal_to([4]),
                    label="Examples")
    result = coco_to_tfrecord.run(["--annotations", annotations, "--images", images, "--output_dir",
                                   str(tmp_path / "run")], test_pipeline=TestPipeline(runner=fn_runner.FnApiRunner()))
    assert result.state == "DONE" and json.loads((tmp_path / "run/dataset.json").read_text())["splits"]["train"][
        "examples"] == 4


def test_links_out_of_the_images_folder_and_an_output_in_it_are_refused(tmp_path, testdata):
    root = testdata / PERSON
    images = tmp_path / "images"
    shutil.copytree(root / "images", images)
    document = json.loads((root / "annotations/test_coco.json").read_text())
    outside = tmp_path / "secret.jpg"
    shutil.copy(images / document["images"][0]["file_name"], outside)
    (images / "link.jpg").symlink_to(outside)
    document["images"][0]["file_name"] = "link.jpg"
    (tmp_path / "a.json").write_text(json.dumps(document))
    out = convert(tmp_path, tmp_path / "a.json", images)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["reason"], "outside" in e["detail"]) for e in errors] == [("path_escapes_root", True)]
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["examples"] == len(document["images"]) - 1
    with pytest.raises(SystemExit, match="lies where .* matches"):
        coco_to_tfrecord.run(["--annotations", str(tmp_path / "a.json"), "--images", str(images),
                              "--output_dir", f"{images}/"])
