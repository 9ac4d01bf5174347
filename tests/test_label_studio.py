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
