"""Fuzzing with Hypothesis: segmentations and whole COCO documents nobody listed.

Properties: nothing crashes; a segmentation is either rasterized to the image's size or refused
with a documented reason; a conversion job accounts for every image it is given (written +
rejected = listed) and every rejection is an error record with a reason. The CI budget is fixed
below; SEGPIPE_FUZZ_EXAMPLES=N runs N examples per test (e.g. 2000 for a long run)."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from segformat import masks as M

# CI: a fixed, derandomized set of examples (a failure there is reproducible); a larger budget draws new ones.
BUDGET = int(os.environ.get("SEGPIPE_FUZZ_EXAMPLES", "0"))
REASONS = {"malformed_segmentation", "non_finite_coordinates", "coordinates_out_of_range", "malformed_rle",
           "empty_segmentation", "polygon_under_3_points", "rle_size_mismatch", "rle_length_mismatch"}
H, W = 13, 17

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.floats(min_value=-5, max_value=25))
polygon = st.lists(numbers, max_size=14)
counts_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=130), max_size=12)
segmentation = st.one_of(
    st.lists(polygon, max_size=3),
    polygon,
    st.fixed_dictionaries({"size": st.one_of(st.just([H, W]), st.lists(st.integers(-3, 40), max_size=3)),
                           "counts": st.one_of(st.lists(st.integers(-5, H * W + 5), max_size=6), counts_text,
                                               st.integers(), st.none())}),
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.lists(st.text(max_size=2), max_size=3), max_size=2))


@settings(max_examples=BUDGET or 400, deadline=None, derandomize=not BUDGET)
@given(segmentation)
def test_a_segmentation_is_rasterized_to_the_image_or_refused_with_a_reason(seg):
    try:
        rle = M.annotation_rle(seg, H, W)
    except M.AnnotationError as error:
        assert error.reason in REASONS, error.reason
        return
    assert mask_utils.decode(rle).shape == (H, W)


def _image(path, h, w):
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


file_names = st.one_of(st.sampled_from(["a.png", "b.png", "sub/c.png", "missing.png", "../a.png", "/etc/passwd",
                                        "ü ñ.png", "", "a.png/"]), st.text(max_size=6))
image_entry = st.fixed_dictionaries({
    "id": st.one_of(st.integers(1, 4), st.integers(-2, 10**12), st.text(max_size=3)),
    "file_name": file_names,
    "height": st.one_of(st.just(20), st.integers(-1, 30), st.floats(allow_nan=True)),
    "width": st.one_of(st.just(24), st.integers(-1, 30)),
})
annotation_entry = st.fixed_dictionaries({
    "id": st.integers(1, 50), "image_id": st.integers(0, 5), "category_id": st.integers(0, 3),
    "iscrowd": st.sampled_from([0, 1, 2, "x"]), "segmentation": segmentation})


@pytest.mark.slow  # whole conversion jobs, a dozen of them
@settings(max_examples=BUDGET // 20 or 12, deadline=None, derandomize=not BUDGET,
          suppress_health_check=list(HealthCheck))
@given(images=st.lists(image_entry, max_size=4), annotations=st.lists(annotation_entry, max_size=5),
       extra_key=st.booleans())
# What fuzzing found (both fixed): two entries of one id counted as one rejection; a height of
# Infinity (JSON allows it in practice) killed the streaming pass instead of one record.
@example(images=[{"id": 1, "file_name": "a.png", "height": 20, "width": 24}] * 2, annotations=[], extra_key=False)
@example(images=[{"id": 1, "height": math.inf, "file_name": "a.png", "width": 24},
                 {"id": 2, "file_name": "b.png", "height": 20, "width": 24}], annotations=[], extra_key=False)
def test_a_coco_job_accounts_for_every_image(tmp_path_factory, images, annotations, extra_key):
    from pipelines import coco_to_tfrecord
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images/sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png", "ü ñ.png"):
        _image(root / "images" / name, 20, 24)
    document = {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "road"}, {"id": 2, "name": "car"}]}
    if extra_key:
        document["info"] = {"nested": [1, {"x": None}]}
    (root / "a.json").write_text(json.dumps(document, allow_nan=True))
    try:
        result = coco_to_tfrecord.run(["--annotations", str(root / "a.json"), "--images", str(root / "images"),
                                       "--output_dir", str(root / "out")])
        assert result is not None
    except SystemExit as stop:  # allowed only as the documented "nothing was written"
        assert "nothing was written" in str(stop.code), stop.code
    stats = json.loads((root / "out/stats.json").read_text()) if (root / "out/stats.json").exists() else None
    errors = [json.loads(line) for line in (root / "out/errors.jsonl").read_text().splitlines()] \
        if (root / "out/errors.jsonl").exists() else []
    assert all(e.get("reason") and e.get("source") is not None for e in errors)
    if stats is not None:
        written, rejected = stats["images_written"], stats["images_rejected"]
        image_errors = [e for e in errors if e["reason"] in stats["images_rejected_by_reason"]]
        assert written + rejected == len(images), (written, rejected, len(images), stats)
        assert rejected == sum(stats["images_rejected_by_reason"].values())
        assert len(image_errors) >= rejected
