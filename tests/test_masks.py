"""Pure mask functions: validation, rasterization rules, class tables."""
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segformat import masks as M
from tests.helpers import torchvision_rule


def square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def instance(ann_id, cls, seg, h=20, w=20, crowd=False):
    return M.Instance(ann_id, cls, M.annotation_rle(seg, h, w), crowd)


def test_rle_counts_decode_exactly_what_pycocotools_encodes():
    """The vectorised string decoder against pycocotools: run lengths and painted pixels, on
    random masks (long runs give multi-character and negative delta counts) and polygons."""
    rng = np.random.default_rng(0)
    strings = []
    for trial in range(300):
        h, w = rng.integers(1, 300 if trial % 3 == 0 else 50, 2)
        if trial % 2:
            m = np.asfortranarray((rng.random((h, w)) < rng.random()).astype(np.uint8))
            rle = mask_utils.encode(m)
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects([list(rng.uniform(-5, max(h, w) + 5, 16))], h, w))
            m = mask_utils.decode(rle)
        runs = M.rle_counts(rle["counts"])
        assert runs.sum() == h * w == M.compressed_rle_length(rle["counts"])
        uncompressed = mask_utils.frPyObjects({"size": [int(h), int(w)], "counts": runs.tolist()}, h, w)
        assert uncompressed["counts"] == rle["counts"]
        assert np.array_equal(M._foreground_pixels(runs), np.flatnonzero(m.ravel(order="F")))
        strings.append(rle["counts"])
    # several strings decoded in one pass (how an image's instances are painted) == one by one
    for group in (strings[:1], strings[:7], strings):
        assert all(np.array_equal(a, M.rle_counts(b)) for a, b in zip(M._runs_of_many(group), group, strict=True))


@pytest.mark.parametrize("counts", [b"0@", b"\x7f1", b"1" + b"o" * 13 + b"0", b"@0", b"1o"])
def test_malformed_rle_strings_are_rejected(counts):
    with pytest.raises(M.AnnotationError):
        M.rle_counts(counts)


def test_flat_polygon_equals_nested_polygon():
    flat = [2, 2, 10, 2, 10, 8, 2, 8]
    a = mask_utils.decode(M.annotation_rle(flat, 12, 14))
    b = mask_utils.decode(M.annotation_rle([flat], 12, 14))
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], 12, 14)))
    assert a.sum() > 0 and np.array_equal(a, b) and np.array_equal(a, expected)


@pytest.mark.parametrize("segmentation, reason", [
    ([], "empty_segmentation"),
    ({}, "empty_segmentation"),
    ([[1, 1, 5, 5]], "polygon_under_3_points"),
    ([[float("nan"), 1, 5, 5, 3, 3]], "non_finite_coordinates"),
    ([[float("inf"), 1, 5, 5, 3, 3]], "non_finite_coordinates"),
    ([[0, 0, 1e9, 0, 1e9, 1e9]], "coordinates_out_of_range"),
    ([[0, 0, 1, "a", 2, 2]], "malformed_segmentation"),
    ([[0, 0, 1, 1, 2]], "malformed_segmentation"),
    ({"size": [10, 10], "counts": [50, 10]}, "rle_length_mismatch"),
    ({"size": [10, 11], "counts": [110]}, "rle_size_mismatch"),
    ({"size": [10, 10], "counts": "0;"}, "rle_length_mismatch"),
    ({"size": [10, 10], "counts": "\x01\x02"}, "malformed_rle"),
    ({"size": [10, 10], "counts": [-5, 105]}, "malformed_rle"),
])
def test_bad_segmentations_are_rejected_with_a_reason(segmentation, reason):
    with pytest.raises(M.AnnotationError) as info:
        M.annotation_rle(segmentation, 10, 10)
    assert info.value.reason == reason


def test_degenerate_part_of_a_multipart_polygon_is_left_out():
    rle = M.annotation_rle([[1, 1, 4, 4], [0, 0, 6, 0, 6, 6, 0, 6]], 10, 10)
    expected = mask_utils.merge(mask_utils.frPyObjects([[0, 0, 6, 0, 6, 6, 0, 6]], 10, 10))
    assert np.array_equal(mask_utils.decode(rle), mask_utils.decode(expected))


def uncompressed_counts(mask):
    """COCO uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = np.asarray(mask).ravel(order="F")
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    return runs


def test_uncompressed_and_compressed_rle_agree():
    m = np.zeros((10, 10), np.uint8, order="F")
    m[2:7, 3:9] = 1
    compressed = mask_utils.encode(m)
    a = mask_utils.decode(M.annotation_rle({"size": [10, 10], "counts": uncompressed_counts(m)}, 10, 10))
    b = mask_utils.decode(M.annotation_rle({"size": [10, 10], "counts": compressed["counts"].decode()}, 10, 10))
    assert np.array_equal(a, m) and np.array_equal(b, m)


def test_smaller_objects_are_painted_on_top_and_ties_go_by_id():
    big = instance(1, 1, square(0, 0, 15, 15))
    small = instance(2, 2, square(5, 5, 10, 10))
    mask = M.paint_class_mask(20, 20, [small, big])
    assert mask[7, 7] == 2 and mask[2, 2] == 1 and mask[18, 18] == 0
    # Equal areas: the higher annotation id is painted last.
    a, b = instance(3, 3, square(0, 0, 10, 10)), instance(4, 4, square(0, 0, 10, 10))
    assert M.paint_class_mask(20, 20, [b, a])[5, 5] == 4


def test_pixel_counts_of_known_values_equal_a_full_histogram():
    person = instance(1, 7, square(0, 0, 8, 8))
    crowd = instance(2, 3, square(5, 5, 15, 15), crowd=True)
    mask = M.paint_class_mask(20, 20, [person, crowd], crowd="ignore")
    full = np.bincount(np.asarray(mask).ravel(), minlength=256)
    assert np.array_equal(M.class_pixel_counts(mask), full)
    assert np.array_equal(M.class_pixel_counts(mask, {7, M.IGNORE_INDEX}), full)
    assert full[7] and full[M.IGNORE_INDEX] and full[0]


def test_crowd_modes():
    person = instance(1, 1, square(0, 0, 8, 8))
    crowd = instance(2, 1, square(5, 5, 15, 15), crowd=True)
    ignore = M.paint_class_mask(20, 20, [person, crowd], crowd="ignore")
    assert ignore[6, 6] == 1 and ignore[12, 12] == M.IGNORE_INDEX and ignore[18, 18] == 0
    as_class = M.paint_class_mask(20, 20, [person, crowd], crowd="class")
    assert as_class[12, 12] == 1 and as_class[6, 6] == 1


def test_overlap_ignore():
    a, b = instance(1, 1, square(0, 0, 10, 10)), instance(2, 2, square(5, 5, 15, 15))
    mask = M.paint_class_mask(20, 20, [a, b], overlap="ignore")
    assert mask[7, 7] == M.IGNORE_INDEX and mask[2, 2] == 1 and mask[12, 12] == 2


def test_torchvision_compatible_mode_on_random_scenes():
    rng = np.random.default_rng(1)
    table = M.build_class_table([{"id": i, "name": str(i)} for i in range(1, 91)], "voc")
    for trial in range(30):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        anns = []
        for k in range(int(rng.integers(0, 6))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            pts = []
            for t in np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9)))):
                r = rng.uniform(3, 15)
                pts += [cx + r * np.cos(t), cy + r * np.sin(t)]
            seg = [pts]
            crowd = rng.random() < 0.2
            if crowd:  # COCO's crowds are uncompressed RLE, which torchvision's rule also reads
                seg = {"size": [h, w], "counts": uncompressed_counts(mask_utils.decode(
                    mask_utils.merge(mask_utils.frPyObjects(seg, h, w))))}
            anns.append({"id": k + 1, "category_id": int(rng.choice([1, 3, 5, 8, 44])), "segmentation": seg,
                         "iscrowd": int(crowd)})
        ours = M.paint_class_mask(h, w, [
            M.Instance(a["id"], table.category_to_index[a["category_id"]],
                       M.annotation_rle(a["segmentation"], h, w), bool(a["iscrowd"]))
            for a in anns if a["category_id"] in table.category_to_index], crowd="class", overlap="ignore")
        assert np.array_equal(ours, torchvision_rule(h, w, anns, table.category_to_index)), trial


def test_class_tables():
    cats = [{"id": 4, "name": "c"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    table = M.build_class_table(cats, "all")
    assert table.category_to_index == {1: 1, 2: 2, 4: 3}
    assert table.to_json()["classes"][3] == {"index": 3, "name": "c", "coco_id": 4}
    voc = M.build_class_table([{"id": 1, "name": "person"}], "voc")
    assert voc.category_to_index[1] == 15 and voc.names[15] == "person" and voc.names[1] == "aeroplane"
    user = M.build_class_table(cats, {"a": 1, "2": 1, "c": 255})
    assert user.category_to_index == {1: 1, 2: 1, 4: 255} and user.names == ("background", "a+b")
    with pytest.raises(ValueError):
        M.build_class_table(cats, {"zebra": 1})


def test_mask_png_reads_back_exactly_with_pillow_and_tensorflow():
    import io
    import tensorflow as tf
    from PIL import Image
    from pipelines.common.images import encode_mask_png
    rng = np.random.default_rng(7)
    for shape in [(1, 1), (5, 10), (480, 640), (37, 3)]:
        mask = rng.integers(0, 256, shape).astype(np.uint8)
        mask[: shape[0] // 2] = 3  # runs, as in real masks
        data = encode_mask_png(mask)
        image = Image.open(io.BytesIO(data))
        assert image.mode == "L" and np.array_equal(np.asarray(image), mask)
        assert np.array_equal(tf.io.decode_png(data, channels=1).numpy()[..., 0], mask)
