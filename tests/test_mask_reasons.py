"""Every way segformat.masks refuses a segmentation has its documented reason key (the keys
stats.json counts by and errors.jsonl reports) and a detail saying what was wrong. The keys
are written here literally, as docs/datasets.md's readers see them."""
import pytest

from segformat import masks as M

H, W = 20, 30
CASES = [
    ([[1, 2, "a", 4, 5, 6]], "malformed_segmentation", "list of numbers"),
    ([[1, 2, [3], 4, 5, 6]], "malformed_segmentation", "list of numbers"),
    ([[1, 2, float("nan"), 4, 5, 6]], "non_finite_coordinates", "NaN or infinite"),
    ([[1, 2, 3, 4, float("inf"), 6]], "non_finite_coordinates", "NaN or infinite"),
    ([[1, 2, 3, 4, 5, 6, 7]], "malformed_segmentation", "odd number"),
    ([[1, 2, 1e9, 4, 5, 6]], "coordinates_out_of_range", ""),
    ([], "empty_segmentation", None),
    ([[1, 2, 3, 4]], "polygon_under_3_points", None),
    ({"size": [3, 3], "counts": [9]}, "rle_size_mismatch", "RLE size"),
    ({"size": [H, W], "counts": [-1, H * W + 1]}, "malformed_rle", "non-negative"),
    ({"size": [H, W], "counts": [3]}, "rle_length_mismatch", f"covers 3 pixels, image has {H * W}"),
    ({"size": [H, W], "counts": 5}, "malformed_rle", "list of ints or a string"),
    ({"size": [H, W], "counts": "\x01"}, "malformed_rle", "invalid character"),
    ({"size": [H, W], "counts": "`"}, "malformed_rle", "ends inside a count"),
    (42, "malformed_segmentation", "unsupported segmentation type int"),
]


@pytest.mark.parametrize("segmentation,reason,detail", CASES)
def test_each_refusal_has_its_reason_and_detail(segmentation, reason, detail):
    with pytest.raises(M.AnnotationError) as info:
        M.annotation_rle(segmentation, H, W)
    assert info.value.reason == reason
    if detail is None:
        assert info.value.detail == "" and str(info.value) == reason
    else:
        assert detail in info.value.detail and str(info.value) == f"{reason}: {info.value.detail}"
