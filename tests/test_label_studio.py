"""Label Studio's formats against references independent of segformat: brush RLE written by the
encoder of Label Studio's own editor (@thi.ng/rle-pack, literal blocks included), and which
annotation of a task is the one to train on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segformat import label_studio

FIXTURE = json.loads((Path(__file__).parent / "data" / "label_studio_rle_pack.json").read_text())


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["name"])
def test_brush_rle_from_label_studios_editor_encoder_decodes_to_its_alpha_region(case):
    region = np.array([[c == "1" for c in row] for row in case["region_rows"]])
    assert np.array_equal(label_studio.decode_brush_rle(case["rle"], case["height"], case["width"]), region)


def test_the_fixture_holds_literal_blocks_of_several_values():
    """The stroke and the noise are coded mostly in literal blocks (first bit 0) longer than one value."""
    bits = np.unpackbits(np.asarray(FIXTURE["cases"][1]["rle"], np.uint8))
    sizes = [int("".join(map(str, bits[37 + 4 * k:41 + 4 * k])), 2) + 1 for k in range(4)]
    # walk the blocks and count literal blocks with more than one word
    position, total, longer_literals, i = 53, int("".join(map(str, bits[:32])), 2), 0, 0
    while i < total:
        repeat = bits[position]
        field = int("".join(map(str, bits[position + 1:position + 3])), 2)
        length = int("".join(map(str, bits[position + 3:position + 3 + sizes[field]])), 2) + 1
        position += 3 + sizes[field] + (8 if repeat else 8 * length)
        longer_literals += (not repeat) and length > 1
        i += length
    assert longer_literals > 10


def brush(region, label):
    return {"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_height": region.shape[0],
            "original_width": region.shape[1],
            "value": {"format": "rle", "rle": label_studio.encode_brush_rle(region), "brushlabels": [label]}}


def test_the_latest_annotation_not_cancelled_is_the_one_converted():
    regions = {name: np.zeros((4, 5), bool) for name in ("first", "latest", "cancelled")}
    regions["first"][0, :] = True
    regions["latest"][:, 0] = True
    regions["cancelled"][3, 3] = True
    annotations = [
        {"id": 7, "was_cancelled": False, "updated_at": "2026-03-01T10:00:00Z", "result": [brush(regions["latest"], "road")]},
        {"id": 9, "was_cancelled": True, "updated_at": "2026-04-01T10:00:00Z", "result": [brush(regions["cancelled"], "road")]},
        {"id": 3, "was_cancelled": False, "updated_at": "2026-01-01T10:00:00Z", "result": [brush(regions["first"], "road")]},
    ]
    item = {"id": 1, "data": {"image": "/data/local-files/?d=a.png"}, "annotations": annotations}
    coco, unused = label_studio.export_to_coco([item], ["background", "road"], lambda url: "a.png")
    assert unused == []
    (annotation,) = coco["annotations"]
    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    assert np.array_equal(mask_utils.decode(rle).astype(bool), regions["latest"])


# ---- the rest of segformat.label_studio, each against Label Studio's own SDK or a literal ----

def sdk_region(rle, height, width):
    """label-studio-sdk's own decoder: the alpha channel of the RGBA values, as a region."""
    from label_studio_sdk.converter.brush import decode_rle
    return decode_rle(rle).reshape(height, width, 4)[..., 3] > 0


@pytest.mark.parametrize("shape, fill", [((3, 4), "empty"), ((3, 4), "full"), ((5, 7), "random"),
                                         ((1, 1), "full"), ((300, 300), "stripes")])
def test_the_brush_encoder_writes_what_label_studio_decodes(shape, fill):
    rng = np.random.default_rng(7)
    region = {"empty": np.zeros(shape, bool), "full": np.ones(shape, bool),
              "random": rng.random(shape) > 0.5, "stripes": (np.arange(shape[0])[:, None] // 50 % 2 == 1)
              & np.ones(shape, bool)}[fill]
    rle = label_studio.encode_brush_rle(region)
    assert np.array_equal(sdk_region(rle, *shape), region)
    assert np.array_equal(label_studio.decode_brush_rle(rle, *shape), region)
    bits = np.unpackbits(np.asarray(rle, np.uint8))
    header = "".join(map(str, bits[:53]))
    # Label Studio's header: 4 values per pixel (RGBA), word size 8, run fields of 3, 4, 8, 16 bits
    assert int(header[:32], 2) == shape[0] * shape[1] * 4 and header[32:37] == "00111"
    assert header[37:53] == "0010" "0011" "0111" "1111"
    assert len(rle) == (len(bits) + 7) // 8 and all(0 <= b < 256 for b in rle)


def test_a_region_longer_than_one_block_is_split_into_blocks():
    region = np.ones((300, 300), bool)  # 360,000 values: more than one 65,536-value block
    rle = label_studio.encode_brush_rle(region)
    assert np.array_equal(sdk_region(rle, 300, 300), region)
    assert np.array_equal(label_studio.encode_brush_rle(region), rle)


def test_decoding_refuses_a_size_that_is_not_the_images_and_a_stream_cut_short():
    rle = label_studio.encode_brush_rle(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="holds 64 values, not 4x5x4"):
        label_studio.decode_brush_rle(rle, 4, 5)
    with pytest.raises(ValueError, match="ends inside a block"):
        label_studio.decode_brush_rle(rle[:8], 4, 4)


def test_brush_results_are_one_region_per_class_present():
    mask = np.array([[0, 1, 1], [2, 255, 0]], np.uint8)
    results = label_studio.brush_results(mask, ["background", "road", "car"])
    assert [r["id"] for r in results] == ["road-1", "car-2"]
    for r, index in zip(results, (1, 2)):
        assert {k: v for k, v in r.items() if k != "value"} == {
            "id": r["id"], "from_name": "tag", "to_name": "image", "type": "brushlabels",
            "original_width": 3, "original_height": 2, "image_rotation": 0}
        assert r["value"]["format"] == "rle" and r["value"]["brushlabels"] == [["background", "road", "car"][index]]
        assert np.array_equal(sdk_region(r["value"]["rle"], 2, 3), mask == index)
    # a table without a background: class 0 is a label too; 255 and indices past the table never are
    camvid = label_studio.brush_results(np.array([[0, 1, 7, 255]], np.uint8), ["sky", "road"], from_name="f",
                                        to_name="t")
    assert [(r["id"], r["from_name"], r["to_name"]) for r in camvid] == [("sky-0", "f", "t"), ("road-1", "f", "t")]
    assert label_studio.brush_results(np.zeros((2, 2), np.uint8), ["background", "road"]) == []


def test_a_task_holds_the_image_and_the_masks_as_one_prediction():
    mask = np.array([[0, 1]], np.uint8)
    task = label_studio.task("/img/a.png", mask, ["background", "road"], np.float32(0.75), "m@1", meta={"p": 0.2})
    assert task == {"data": {"image": "/img/a.png", "p": 0.2},
                    "predictions": [{"model_version": "m@1", "score": 0.75,
                                     "result": label_studio.brush_results(mask, ["background", "road"])}]}
    assert type(task["predictions"][0]["score"]) is float
    assert label_studio.task("u", mask, ["background", "road"], 0.5, "v")["data"] == {"image": "u"}


def test_the_labeling_config_is_one_brush_label_per_class_in_its_colour():
    import xml.etree.ElementTree as ET
    text = label_studio.labeling_config(["background", 'a "b" & c', "road"], [(0, 0, 0), (255, 0, 16), (1, 2, 3)])
    root = ET.fromstring(text)
    (image,) = root.iter("Image")
    assert image.attrib == {"name": "image", "value": "$image", "zoom": "true"}
    (brush,) = root.iter("BrushLabels")
    assert brush.attrib == {"name": "tag", "toName": "image"}
    assert [(label.get("value"), label.get("background")) for label in brush.iter("Label")] == [
        ('a "b" & c', "#ff0010"), ("road", "#010203")]
    camvid = ET.fromstring(label_studio.labeling_config(["sky", "road"], [(10, 20, 30), (0, 0, 0)]))
    assert [label.get("value") for label in camvid.iter("Label")] == ["sky", "road"]
    skipped = ET.fromstring(label_studio.labeling_config(["sky", "road"], [(10, 20, 30), (0, 0, 0)], skip=(1,)))
    assert [label.get("value") for label in skipped.iter("Label")] == ["sky"]


def test_image_urls_and_the_file_names_read_back_from_them():
    assert label_studio.image_url("/data/photos/a.png") == "/data/local-files/?d=data/photos/a.png"
    assert label_studio.image_url("gs://b/x/a.png") == "gs://b/x/a.png"
    assert label_studio.image_url("/data/photos/a.png", "https://h/img/") == "https://h/img/a.png"
    assert label_studio.image_file_name("/data/local-files/?d=data/photos/a%20b.png") == "a b.png"
    assert label_studio.image_file_name("gs://b/x/a.png") == "a.png"
    assert label_studio.image_file_name("https://h/img/c.jpg?token=1") == "c.jpg"
    assert label_studio.image_file_name("/data/upload/3/5f-d.png") == "5f-d.png"


def test_which_annotation_when_none_all_cancelled_ties_and_creation_times():
    pick = label_studio.chosen_annotation
    assert pick({"id": 1}) is None and pick({"annotations": []}) is None
    assert pick({"annotations": [{"id": 1, "was_cancelled": True}]}) is None
    same = [{"id": 4, "updated_at": "2026-01-01"}, {"id": 9, "updated_at": "2026-01-01"}, {"id": 2, "updated_at": "2026-01-01"}]
    assert pick({"annotations": same})["id"] == 9  # the same time: the higher id
    created = [{"id": 1, "created_at": "2026-05-01"}, {"id": 2, "created_at": "2026-02-01"}]
    assert pick({"annotations": created})["id"] == 1
    mixed = [{"id": 1, "created_at": "2026-05-01", "updated_at": "2026-06-01"}, {"id": 2, "created_at": "2026-05-15"}]
    assert pick({"annotations": mixed})["id"] == 1  # updated_at before created_at
    assert pick({"annotations": [{"id": 1, "was_cancelled": False}, {"id": 5}]})["id"] == 5


def rle_region(segmentation):
    return mask_utils.decode(dict(segmentation, counts=segmentation["counts"].encode())).astype(bool)


def export_item(task_id, results, image="/data/local-files/?d=x/a.png", cancelled=False, data=None):
    return {"id": task_id, "data": dict({"image": image}, **(data or {})),
            "annotations": [{"id": 10 + task_id, "was_cancelled": cancelled, "result": results}]}


def test_an_export_with_a_background_becomes_categories_1_to_n_and_pixel_regions():
    road, car = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    road[3:, :] = True
    car[1:3, 2:5] = True
    polygon = {"type": "polygonlabels", "from_name": "p", "to_name": "image", "original_height": 6,
               "original_width": 8, "value": {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["car"]}}
    items = [export_item(5, [brush(road, "road"), brush(car, "car"), polygon,
                             {"type": "choices", "value": {"choices": ["x"]}}])]
    coco, unused = label_studio.export_to_coco(items, ["background", "road", "car"], lambda url: url.rsplit("/", 1)[1])
    assert unused == []
    assert coco["categories"] == [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}]
    assert coco["images"] == [{"id": 1, "file_name": "a.png", "height": 6, "width": 8, "label_studio_task": 5}]
    first, second, third = coco["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"], a["iscrowd"]) for a in coco["annotations"]] == [
        (1, 1, 1, 0), (2, 1, 2, 0), (3, 1, 2, 0)]
    # percent of 8 x 6 -> pixels, rasterized as COCO does; the later region on top: the polygon
    # takes its pixels from the car drawn before it
    triangle = mask_utils.decode(mask_utils.frPyObjects([[0.0, 0.0, 4.0, 0.0, 4.0, 3.0]], 6, 8))[..., 0] > 0
    assert (triangle & car).any() and (car & ~triangle).any()
    assert np.array_equal(rle_region(first["segmentation"]), road)
    assert np.array_equal(rle_region(second["segmentation"]), car & ~triangle)
    assert np.array_equal(rle_region(third["segmentation"]), triangle)


def test_an_export_without_a_background_covers_each_image_with_an_unlabeled_crowd():
    sky = np.zeros((2, 3), bool)
    sky[0] = True
    items = [export_item(1, [brush(sky, "sky")]), export_item(2, [brush(sky, "road")], image="/d/?d=b.png")]
    coco, unused = label_studio.export_to_coco(items, ["sky", "road"], lambda url: url[-5:])
    assert unused == []
    assert coco["categories"] == [{"id": 1, "name": "sky"}, {"id": 2, "name": "road"}, {"id": 3, "name": "unlabeled"}]
    assert [(a["id"], a["image_id"], a["category_id"], a["iscrowd"]) for a in coco["annotations"]] == [
        (1, 1, 1, 0), (2, 1, 3, 1), (3, 2, 2, 0), (4, 2, 3, 1)]
    assert coco["annotations"][1]["segmentation"] == {"size": [2, 3], "counts": [0, 6]}
    assert [i["id"] for i in coco["images"]] == [1, 2]


def test_tasks_an_export_cannot_use_are_listed_with_their_reason():
    region = np.ones((2, 2), bool)
    odd = brush(np.ones((3, 2), bool), "road")
    broken = brush(region, "road")
    broken["value"]["rle"] = broken["value"]["rle"][:7]  # cut inside its one block
    items = [
        {"id": 1, "data": {"image": "a.png"}, "annotations": [{"id": 1, "was_cancelled": True, "result": []}]},
        {"id": 2, "data": {"image": "b.png"}},
        export_item(3, [brush(region, "road"), odd], image="c.png"),
        export_item(4, [brush(region, "tree")], image="d.png"),
        export_item(5, [brush(region, "road")], image="e.png"),
        export_item(6, [brush(region, "road")], image="e.png"),
        export_item(7, [broken], image="f.png"),
        export_item(8, [], image="g.png", data={"height": 5, "width": 4}),
    ]
    coco, unused = label_studio.export_to_coco(items, ["background", "road"], lambda url: url)
    assert [(task, reason.split(":")[0]) for task, reason in unused] == [
        (1, "skipped"), (2, "not_annotated"), (3, "inconsistent_image_size"), (4, "unknown_label"),
        (6, "duplicate_image"), (7, "malformed_rle")]
    assert dict(unused)[4] == "unknown_label:tree"
    assert [(i["file_name"], i["height"], i["width"], i["label_studio_task"]) for i in coco["images"]] == [
        ("e.png", 2, 2, 5), ("g.png", 5, 4, 8)]
    assert [a["image_id"] for a in coco["annotations"]] == [1]
