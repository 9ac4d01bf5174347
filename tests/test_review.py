"""segpipe review: which images a labeling batch holds, and the batch in Label Studio's and
CVAT's import formats, checked with Label Studio's own decoder (label-studio-sdk) and pycocotools."""
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pipelines import batch_segment, review
from segcli.review import ReviewConfig
from tests.helpers import COLOR_NAMES as NAMES, make_color_model as color_model

def record(name, priority, **fractions):
    return {"input": f"/in/{name}.png", "file_name": f"{name}.png", "review_priority": priority,
            "class_fraction": {"background": 0.5, **fractions}}


RECORDS = [record("a", 0.9, road=0.5), record("b", 0.8, road=0.5), record("c", 0.7, road=0.4),
           record("d", 0.2, water=0.01, road=0.4), record("e", 0.1, building=0.3)]


def pick(**kwargs):
    return [r["file_name"][0] for r in review.select(RECORDS, ReviewConfig(segmentation="s", output_dir="o", **kwargs),
                                                     NAMES, kwargs.pop("excluded", frozenset()))]


def test_the_most_uncertain_first_rare_classes_in_a_stratified_batch_and_exclusions_respected():
    assert pick(count=2) == ["a", "b"]
    # stratified: water and building (one image each) get their images before road's third
    assert sorted(pick(count=3, strategy="stratified")) == ["a", "d", "e"]
    chosen = review.select(RECORDS, ReviewConfig(segmentation="s", output_dir="o", count=2), NAMES,
                           {"/in/a.png", "b.png"})
    assert [r["file_name"] for r in chosen] == ["c.png", "d.png"]
    assert pick(count=3, strategy="random", seed=1) == pick(count=3, strategy="random", seed=1)
    assert len(set(pick(count=5, strategy="random"))) == 5


def test_random_draws_do_not_depend_on_the_uncertainty_ranking():
    import random
    pool = [record(f"p{k:03d}", random.Random(k).random(), road=0.5) for k in range(200)]
    reversed_ranking = [dict(r, review_priority=1 - r["review_priority"]) for r in pool]
    config = ReviewConfig(segmentation="s", output_dir="o", count=20, strategy="random", seed=7)
    drawn = [r["input"] for r in review.select(pool, config, NAMES)]
    assert drawn == [r["input"] for r in review.select(reversed_ranking, config, NAMES)]
    assert drawn == [r["input"] for r in review.select(pool[::-1], config, NAMES)]  # nor on the records' order
    # over many seeds, the random batch shares with the uncertain one what chance gives: 20 * 20 / 200 = 2
    uncertain = {r["input"] for r in review.select(pool, ReviewConfig(segmentation="s", output_dir="o", count=20),
                                                   NAMES)}
    shared = [len(uncertain & {r["input"] for r in review.select(
        pool, ReviewConfig(segmentation="s", output_dir="o", count=20, strategy="random", seed=s), NAMES)})
        for s in range(300)]
    assert 1.7 < np.mean(shared) < 2.3


def test_a_class_table_without_background_has_every_class_reviewed_and_stratified():
    names = ["sky", "road", "pole"]  # CamVid-like: class 0 is a real class
    records = [{"input": f"/in/{n}.png", "file_name": f"{n}.png", "review_priority": p,
                "class_fraction": fractions} for n, p, fractions in
               (("a", 0.9, {"road": 1.0}), ("b", 0.8, {"road": 1.0}), ("c", 0.1, {"sky": 0.9, "road": 0.1}))]
    config = ReviewConfig(segmentation="s", output_dir="o", count=2, strategy="stratified")
    # sky is a class here, seen in one image only: it picks first
    assert [r["file_name"] for r in review.select(records, config, names)] == ["c.png", "a.png"]
    # with a background first, the same fractions under that name are not a class to stratify by
    renamed = [dict(r, class_fraction={("background" if k == "sky" else k): v for k, v in r["class_fraction"].items()})
               for r in records]
    assert [r["file_name"] for r in review.select(renamed, config, ["background", "road", "pole"])] == ["a.png", "b.png"]


def test_a_batch_decodes_in_label_studio_and_cvat_formats_to_the_masks(tmp_path):
    from label_studio_sdk.converter.brush import decode_rle
    (tmp_path / "model").mkdir()
    model_dir = color_model(tmp_path / "model")
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    colors = np.array([[40, 40, 40], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)
    for i in range(5):
        coarse = colors[rng.integers(0, 4 - (i == 4), (7, 9))]  # p4 has no water
        Image.fromarray(coarse.repeat(8, 0).repeat(8, 1)[:50, :70]).save(inputs / f"p{i}.png")
    seg = tmp_path / "seg"
    batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.png", "--output_dir", str(seg),
                       "--tile_size", "32"])
    (tmp_path / "done.txt").write_text(f"{inputs}/p0.png\n")
    summary = review.main(["--segmentation", str(seg), "--output_dir", str(tmp_path / "batch"), "--count", "3",
                           "--exclude", str(tmp_path / "done.txt"), "--model_version", "fcn-test"])
    assert summary["chosen"] == 3
    queue = [json.loads(line) for line in (seg / "summary.jsonl").read_text().splitlines()]
    expected = [r["input"] for r in queue if not r["input"].endswith("p0.png")][:3]  # most uncertain first
    assert (tmp_path / "batch/batch.txt").read_text().split() == expected
    tasks = json.loads((tmp_path / "batch/tasks.json").read_text())
    config = ET.fromstring((tmp_path / "batch/labeling_config.xml").read_text())
    assert [label.get("value") for label in config.iter("Label")] == NAMES[1:]
    coco = json.loads((tmp_path / "batch/labels_coco.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(p.split("/")[-1] for p in expected)
    for task, path in zip(tasks, expected):
        assert task["data"]["image"] == "/data/local-files/?d=" + path.lstrip("/")
        prediction = task["predictions"][0]
        assert prediction["model_version"] == "fcn-test" and 0 < prediction["score"] <= 1
        mask = np.asarray(Image.open(seg / "masks" / (path.split("/")[-1])))
        decoded = np.zeros_like(mask)
        for result in prediction["result"]:
            region = decode_rle(result["value"]["rle"]).reshape(result["original_height"], result["original_width"], 4)
            decoded[region[..., 3] > 0] = NAMES.index(result["value"]["brushlabels"][0])
        assert len(np.unique(mask)) >= 3 and np.array_equal(decoded, mask), path  # Label Studio's decoder
        image_id = next(i["id"] for i in coco["images"] if i["file_name"] == path.split("/")[-1])
        from_coco = np.zeros_like(mask)
        for ann in (a for a in coco["annotations"] if a["image_id"] == image_id):
            from_coco[mask_utils.decode(ann["segmentation"]) > 0] = ann["category_id"]
        assert np.array_equal(from_coco, mask)


def test_a_label_studio_export_becomes_a_dataset_and_skipped_tasks_are_reported(tmp_path):
    """An export as Label Studio writes it, its brush masks encoded by label-studio-sdk's own
    encoder, plus a polygon, a skipped task and a task nobody annotated: the corrected masks are
    the records' masks, and the two unused tasks are listed, not written as background."""
    from label_studio_sdk.converter.brush import mask2rle
    from PIL import ImageDraw

    from pipelines import labelstudio_to_tfrecord
    from segformat.label_studio import labeling_config
    from tests.helpers import read_records
    images = tmp_path / "images"
    images.mkdir()
    h, w = 40, 60
    rng = np.random.default_rng(7)
    truths, items = {}, []
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"img{k}.png")
        road = np.zeros((h, w), bool)
        road[20:, :] = True
        building = np.zeros((h, w), bool)
        building[2:12, 5 + 10 * k:25 + 10 * k] = True
        truth = np.zeros((h, w), np.uint8)
        truth[road], truth[building] = 1, 2
        results = [{"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
                    "original_height": h, "value": {"format": "rle", "brushlabels": [name],
                                                     "rle": mask2rle(region.astype(np.uint8) * 255)}}
                   for name, region in (("road", road), ("building", building))]
        if k == 1:  # a water polygon, in percent of the image, as Label Studio stores points
            corners = [(40, 2), (58, 2), (58, 18), (40, 18)]
            results.append({"type": "polygonlabels", "original_width": w, "original_height": h,
                            "value": {"points": [[100 * x / w, 100 * y / h] for x, y in corners],
                                      "polygonlabels": ["water"]}})
            drawn = Image.new("L", (w, h))
            ImageDraw.Draw(drawn).polygon(corners, fill=1)
            truth[np.asarray(drawn) > 0] = 3
        annotations = [{"id": 10 + k, "result": results, "was_cancelled": k == 2, "updated_at": "2026-11-29T09:00"}]
        items.append({"id": k + 1, "data": {"image": f"/data/local-files/?d={images.as_posix().lstrip('/')}/img{k}.png"},
                      "annotations": annotations if k != 3 else []})
        truths[k] = truth
    (tmp_path / "export.json").write_text(json.dumps(items))
    (tmp_path / "config.xml").write_text(labeling_config(NAMES, [(0, 0, 0)] * 4))
    labelstudio_to_tfrecord.run(["--export", str(tmp_path / "export.json"), "--images", str(images),
                                 "--classes", str(tmp_path / "config.xml"), "--output_dir", str(tmp_path / "out")])
    records = read_records(str(tmp_path / "out/*.tfrecord"))
    by_file = {r[b"image/filename"].decode() if b"image/filename" in r else r["image/filename"].decode(): r
               for r in records.values()}
    assert sorted(by_file) == ["img0.png", "img1.png"]
    assert np.array_equal(by_file["img0.png"]["mask"], truths[0])
    got = by_file["img1.png"]["mask"]
    water, want_water = got == 3, truths[1] == 3
    assert (water & want_water).sum() / (water | want_water).sum() > 0.8  # polygon edges: rasterizers differ
    assert np.array_equal(got[~(water | want_water)], truths[1][~(water | want_water)])
    unused = json.loads((tmp_path / "out/labelstudio_unused.json").read_text())
    assert unused == [{"task": 3, "reason": "skipped"}, {"task": 4, "reason": "not_annotated"}]
    errors = [json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()]
    assert sorted((e["source"].rsplit("#", 1)[1], e["reason"]) for e in errors) == [
        ("task=3", "skipped"), ("task=4", "not_annotated")]
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert stats["tasks_unused"] == {"not_annotated": 1, "skipped": 1} and stats["images_written"] == 2
    classes = json.loads((tmp_path / "out/classes.json").read_text())
    assert [c["name"] for c in sorted(classes["classes"], key=lambda c: c["index"])] == NAMES


def test_in_a_label_studio_correction_the_later_region_lies_on_top(tmp_path):
    """A person extends the road over a car with a new, larger road region: the road wins there
    (the COCO rule alone, smaller on top, would keep the car); the car stays elsewhere."""
    from label_studio_sdk.converter.brush import mask2rle

    from pipelines import labelstudio_to_tfrecord
    from segformat.label_studio import labeling_config
    from tests.helpers import read_records
    h, w = 30, 40
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(images / "a.png")
    road, car, stroke, water = (np.zeros((h, w), bool) for _ in range(4))
    road[10:30] = True
    car[12:20, 5:15] = True  # 80 pixels
    stroke[8:22, 0:12] = True  # 168 pixels, over most of the car
    water[0:4, 30:40] = True
    order = [("road", road), ("building", car), ("road", stroke), ("water", water)]
    truth = np.zeros((h, w), np.uint8)
    for name, region in order:  # painted in the annotation's order: the later on top
        truth[region] = NAMES.index(name)
    assert (truth == NAMES.index("building")).sum() == 24  # the car keeps its columns 12-14
    results = [{"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
                "original_height": h, "value": {"format": "rle", "brushlabels": [name],
                                                 "rle": mask2rle(region.astype(np.uint8) * 255)}}
               for name, region in order]
    items = [{"id": 1, "data": {"image": f"/data/local-files/?d={images.as_posix().lstrip('/')}/a.png"},
              "annotations": [{"id": 7, "result": results, "was_cancelled": False}]}]
    (tmp_path / "export.json").write_text(json.dumps(items))
    (tmp_path / "config.xml").write_text(labeling_config(NAMES, [(0, 0, 0)] * 4))
    labelstudio_to_tfrecord.run(["--export", str(tmp_path / "export.json"), "--images", str(images),
                                 "--classes", str(tmp_path / "config.xml"), "--output_dir", str(tmp_path / "out")])
    (record,) = read_records(str(tmp_path / "out/*.tfrecord")).values()
    assert np.array_equal(record["mask"], truth)


def test_bad_items_of_a_label_studio_export_are_listed_with_reasons_and_the_rest_converted():
    from label_studio_sdk.converter.brush import mask2rle

    from segformat.label_studio import export_to_coco
    region = np.zeros((4, 6), np.uint8)
    region[1:3, 2:5] = 255

    def item(k, image, results, cancelled=False):
        return {"id": k, "data": {"image": image}, "annotations": [{"id": k, "result": results,
                                                                      "was_cancelled": cancelled}]}

    def brush(label, rle, h=4, w=6):
        return {"type": "brushlabels", "original_height": h, "original_width": w,
                "value": {"format": "rle", "rle": rle, "brushlabels": [label]}}
    good = mask2rle(region)
    items = [item(1, "a.png", [brush("road", good)]),
             item(2, "b.png", [brush("lava", good)]),                    # a label not in the class table
             item(3, "c.png", [brush("road", good[:5])]),                # RLE cut short
             item(4, "d.png", [brush("road", mask2rle(np.zeros((5, 6), np.uint8)))]),  # a mask of another size
             item(5, "a.png", [brush("road", good)]),                    # the same image again
             item(6, "e.png", [brush("road", good)], cancelled=True)]
    coco, unused = export_to_coco(items, NAMES, lambda url: url)
    assert [i["file_name"] for i in coco["images"]] == ["a.png"] and len(coco["annotations"]) == 1
    reasons = {task: reason.split(":")[0] for task, reason in unused}
    assert reasons == {2: "unknown_label", 3: "malformed_rle", 4: "malformed_rle", 5: "duplicate_image", 6: "skipped"}


def test_cvat_formats_round_trip_through_datumaro(tmp_path):
    """CVAT's import engine (Datumaro) reads the batch's COCO 1.0 file and its Segmentation mask
    1.1 folder back to our masks, class names kept; and a Segmentation mask 1.1 export that
    Datumaro writes from known masks (as CVAT exports corrections) becomes those masks through
    segpipe dataset masks --mask_colors labelmap.txt."""
    import datumaro as dm
    from datumaro.components.annotation import AnnotationType, LabelCategories, Mask
    from datumaro.components.media import Image as DmImage

    from pipelines import masks_to_tfrecord
    from tests.helpers import read_records
    (tmp_path / "model").mkdir()
    model_dir = color_model(tmp_path / "model")
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(4)
    colors = np.array([[40, 40, 40], [220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)
    for i in range(3):
        Image.fromarray(colors[rng.integers(0, 4, (6, 8))].repeat(8, 0).repeat(8, 1)).save(inputs / f"p{i}.png")
    seg = tmp_path / "seg"
    batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.png", "--output_dir", str(seg),
                       "--tile_size", "32"])
    review.main(["--segmentation", str(seg), "--output_dir", str(tmp_path / "batch"), "--count", "3"])
    ours = {p.stem: np.asarray(Image.open(p)) for p in (seg / "masks").glob("*.png")}
    for folder, fmt in ((tmp_path / "batch/cvat_segmentation_mask", "voc_segmentation"),
                        (tmp_path / "batch/labels_coco.json", "coco_instances")):
        if fmt == "coco_instances":  # Datumaro's COCO importer wants its folder layout
            (tmp_path / "coco/annotations").mkdir(parents=True)
            (tmp_path / "coco/annotations/instances_default.json").write_text(folder.read_text())
            shutil.copytree(inputs, tmp_path / "coco/images/default")
            folder = tmp_path / "coco"
        imported = dm.Dataset.import_from(str(folder), fmt)
        labels = imported.categories()[AnnotationType.label]
        assert len(imported) == 3
        for item in imported:
            stem = item.id.split("/")[-1].rsplit(".", 1)[0]
            rebuilt = np.zeros_like(ours[stem])
            for ann in item.annotations:
                if ann.type == AnnotationType.mask and labels[ann.label].name != "background":
                    rebuilt[ann.image.astype(bool)] = NAMES.index(labels[ann.label].name)
            assert np.array_equal(rebuilt, ours[stem]), (fmt, stem)
    # corrections back: Datumaro writes Segmentation mask 1.1 from known masks
    truth = {f"p{i}": rng.integers(0, 4, (48, 64)).astype(np.uint8) for i in range(3)}
    items = [dm.DatasetItem(id=stem, media=DmImage.from_numpy(np.zeros((48, 64, 3), np.uint8)),
                            annotations=[Mask(image=(mask == k), label=k) for k in range(4) if (mask == k).any()])
             for stem, mask in truth.items()]
    export = tmp_path / "cvat_export"
    dm.Dataset.from_iterable(items, categories={AnnotationType.label: LabelCategories.from_iterable(NAMES)}).export(
        str(export), "voc_segmentation", save_media=False, apply_colormap=True)
    masks_to_tfrecord.run(["--images", f"{inputs}/*.png", "--masks", f"{export}/SegmentationClass/*.png",
                           "--mask_colors", str(export / "labelmap.txt"), "--output_dir", str(tmp_path / "ds")])
    records = read_records(str(tmp_path / "ds/*.tfrecord"))
    assert sorted(records) == sorted(truth)
    for stem, mask in truth.items():
        assert np.array_equal(records[stem]["mask"], mask), stem
    classes = json.loads((tmp_path / "ds/classes.json").read_text())["classes"]
    assert [c["name"] for c in classes] == NAMES


def test_a_cvat_coco_export_of_corrected_masks_comes_back_with_crowd_class(tmp_path):
    """CVAT's COCO 1.0 export (written here by Datumaro, its engine) stores each mask as an RLE
    with iscrowd 1, and numbers the labels from 1 with background among them: with
    `--crowd class` and a by-name class table the masks come back exactly (with the default
    `--crowd ignore` they would all be 255, which is why the README says so)."""
    import datumaro as dm
    from datumaro.components.annotation import AnnotationType, LabelCategories, Mask
    from datumaro.components.media import Image as DmImage

    from pipelines import coco_to_tfrecord
    from tests.helpers import read_records
    rng = np.random.default_rng(9)
    truth = {f"p{i}": rng.integers(0, 4, (6, 8)).repeat(4, 0).repeat(4, 1).astype(np.uint8) for i in range(3)}
    (tmp_path / "images").mkdir()
    for stem in truth:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    items = [dm.DatasetItem(id=stem, media=DmImage.from_numpy(np.zeros((24, 32, 3), np.uint8)),
                            annotations=[Mask(image=(mask == k), label=k) for k in range(1, 4) if (mask == k).any()])
             for stem, mask in truth.items()]
    dm.Dataset.from_iterable(items, categories={AnnotationType.label: LabelCategories.from_iterable(NAMES)}).export(
        str(tmp_path / "cvat"), "coco_instances", save_media=False)
    annotations = tmp_path / "cvat/annotations/instances_default.json"
    doc = json.loads(annotations.read_text())
    assert {a["iscrowd"] for a in doc["annotations"]} == {1}
    for image in doc["images"]:  # CVAT names the images it was given; Datumaro writes .jpg when it has none
        image["file_name"] = image["file_name"].rsplit(".", 1)[0] + ".png"
    annotations.write_text(json.dumps(doc))
    (tmp_path / "classes.json").write_text(json.dumps({name: k for k, name in enumerate(NAMES) if k}))
    coco_to_tfrecord.run(["--annotations", str(annotations), "--images", str(tmp_path / "images"),
                          "--output_dir", str(tmp_path / "ds"), "--crowd", "class",
                          "--classes", str(tmp_path / "classes.json")])
    records = read_records(str(tmp_path / "ds/*.tfrecord"))
    by_name = {r["image/filename"].decode().rsplit(".", 1)[0]: r["mask"] for r in records.values()}
    assert sorted(by_name) == sorted(truth)
    for stem, mask in truth.items():
        assert np.array_equal(by_name[stem], mask), stem


def _small_export(tmp_path, image_prefix):
    """Two tasks on two real photos: one annotated (a road brush region), one skipped."""
    from label_studio_sdk.converter.brush import mask2rle
    images = tmp_path / "images"
    images.mkdir()
    road = np.zeros((30, 40), bool)
    road[15:, :] = True
    for k in range(2):
        Image.fromarray(np.full((30, 40, 3), 60 + 50 * k, np.uint8)).save(images / f"p{k}.png")
    results = [{"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": 40,
                "original_height": 30, "value": {"format": "rle", "brushlabels": ["road"],
                                                 "rle": mask2rle(road.astype(np.uint8) * 255)}}]
    items = [{"id": 1, "data": {"image": f"{image_prefix}/p0.png"}, "annotations": [{"id": 1, "result": results}]},
             {"id": 2, "data": {"image": f"{image_prefix}/p1.png"}, "annotations": [{"id": 2, "result": [],
                                                                                     "was_cancelled": True}]}]
    (tmp_path / "export.json").write_text(json.dumps(items))
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [{"index": i, "name": n} for i, n in enumerate(NAMES)]}))
    return images, road


def test_a_label_studio_export_on_gcs_becomes_a_dataset_there(tmp_path, gcs_bucket):
    """Export, images and output on gs:// (the emulator): the converted document is staged beside
    the dataset for the workers, the skipped task is an error record and a count of the job."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines import labelstudio_to_tfrecord
    from tests.helpers import read_records, upload_tree
    prefix = f"gs://{gcs_bucket}/labelstudio"
    images, road = _small_export(tmp_path, f"{prefix}/images")
    upload_tree(tmp_path, prefix)
    labelstudio_to_tfrecord.run(["--export", f"{prefix}/export.json", "--images", f"{prefix}/images",
                                 "--classes", f"{prefix}/classes.json", "--output_dir", f"{prefix}/out"])
    names = sorted(m.path.rsplit("/", 1)[1] for m in FileSystems.match([f"{prefix}/out/*"])[0].metadata_list)
    assert names == ["classes.json", "dataset.json", "errors.jsonl", "labelstudio_coco.json",
                     "labelstudio_unused.json", "stats.json", "train-00000-of-00001.tfrecord"]
    with FileSystems.open(f"{prefix}/out/errors.jsonl") as handle:
        errors = [json.loads(line) for line in handle.read().decode().splitlines()]
    assert [(e["source"], e["reason"]) for e in errors] == [(f"{prefix}/export.json#task=2", "skipped")]
    with FileSystems.open(f"{prefix}/out/stats.json") as handle:
        stats = json.loads(handle.read())
    assert stats["tasks_unused"] == {"skipped": 1} and stats["images_written"] == 1
    local = tmp_path / "from_gcs"
    local.mkdir()
    with FileSystems.open(f"{prefix}/out/train-00000-of-00001.tfrecord") as handle:
        (local / "train-00000-of-00001.tfrecord").write_bytes(handle.read())
    (record,) = read_records(str(local / "*.tfrecord")).values()
    assert np.array_equal(record["mask"], road.astype(np.uint8))


def test_the_label_studio_job_builds_as_a_dataflow_template(tmp_path, gcs_bucket):
    from pipelines import labelstudio_to_tfrecord
    from tests.helpers import dataflow_args, staged_pipeline_transforms, upload_tree
    prefix = f"gs://{gcs_bucket}/labelstudio-template"
    _small_export(tmp_path, f"{prefix}/images")
    upload_tree(tmp_path, prefix)
    labelstudio_to_tfrecord.run(["--export", f"{prefix}/export.json", "--images", f"{prefix}/images",
                                 "--classes", f"{prefix}/classes.json", "--output_dir", f"{prefix}/out",
                                 *dataflow_args(gcs_bucket, tmp_path)])
    names = staged_pipeline_transforms(tmp_path / "template.json")
    assert {"StreamCoco", "BuildExamples", "UnusedTasks", "WriteSegmentationDataset/WriteShards"} <= names


def test_the_label_studio_job_on_beams_test_pipeline(tmp_path):
    """build_pipeline on Beam's TestPipeline with assert_that on the shards it writes and on the
    error records (the cancelled task among them), and run() given a test_pipeline."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines import labelstudio_to_tfrecord
    from segcli.coco import CocoConfig
    from segformat.label_studio import export_to_coco, image_file_name
    from tests.helpers import read_records
    images, road = _small_export(tmp_path, "/data/local-files/?d=x")
    items = json.loads((tmp_path / "export.json").read_text())
    coco, unused = export_to_coco(items, list(NAMES), image_file_name)
    (tmp_path / "converted.json").write_text(json.dumps(coco))
    with TestPipeline(runner=fn_runner.FnApiRunner()) as p:
        shards = labelstudio_to_tfrecord.build_pipeline(
            p, str(tmp_path / "converted.json"), "export.json", unused, CocoConfig(images_root=str(images)),
            list(NAMES), str(tmp_path / "tp"), num_shards=1)
        assert_that(shards | beam.Map(lambda s: (s["file"], s["examples"])),
                    equal_to([("train-00000-of-00001.tfrecord", 1)]))
    errors = [json.loads(line) for line in (tmp_path / "tp/errors.jsonl").read_text().splitlines()]
    assert [(e["source"], e["reason"]) for e in errors] == [("export.json#task=2", "skipped")]
    result = labelstudio_to_tfrecord.run(["--export", str(tmp_path / "export.json"), "--images", str(images),
                                          "--classes", str(tmp_path / "classes.json"), "--output_dir",
                                          str(tmp_path / "run")],
                                         test_pipeline=TestPipeline(runner=fn_runner.FnApiRunner()))
    assert result.state == "DONE"
    (record,) = read_records(str(tmp_path / "run/*.tfrecord")).values()
    assert np.array_equal(record["mask"], road.astype(np.uint8))


def test_the_labeling_palette_contrasts_with_grey_ground_and_keeps_classes_apart():
    """The colours a labeller sees in Label Studio and CVAT (and in the overlays and the report):
    every class but background saturated (HSV saturation >= 0.5, not grey like a road), and any
    two of the first twelve at least 80 apart in RGB."""
    import colorsys
    import itertools

    from pipelines.common.palette import palette
    colors = palette()[1:12].astype(float)
    saturation = [colorsys.rgb_to_hsv(*(c / 255))[1] for c in colors]
    assert min(saturation) >= 0.5, saturation
    distance = min(np.linalg.norm(a - b) for a, b in itertools.combinations(colors, 2))
    assert distance >= 80, distance


def test_pre_labels_carry_a_model_version_a_person_can_read(tmp_path):
    """Without --model_version the pre-labels name the model as NAME@DATE-HASH: the model folder's
    name, the day model.keras was written and its SHA-256 (both taken here with the standard
    library), never the segmentation folder's path."""
    import datetime
    import hashlib
    import os
    (tmp_path / "roads-v2").mkdir()
    model_dir = color_model(tmp_path / "roads-v2")
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(inputs / "a.png")
    seg = tmp_path / "seg"
    batch_segment.run(["--model", str(model_dir), "--input", f"{inputs}/*.png", "--output_dir", str(seg),
                       "--tile_size", "32"])
    keras_file = model_dir / "model.keras"
    day = datetime.datetime.fromtimestamp(os.path.getmtime(keras_file), datetime.timezone.utc).strftime("%Y-%m-%d")
    expected = f"roads-v2@{day}-{hashlib.sha256(keras_file.read_bytes()).hexdigest()[:8]}"
    assert json.loads((seg / "classes.json").read_text())["model_version"] == expected
    review.main(["--segmentation", str(seg), "--output_dir", str(tmp_path / "batch"), "--count", "1"])
    (task,) = json.loads((tmp_path / "batch/tasks.json").read_text())
    assert task["predictions"][0]["model_version"] == expected
