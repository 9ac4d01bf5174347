"""--classes all | voc | mapping: the class table and classes.json, written out literally
(docs/datasets.md's rules) for small category lists, including the edges."""
import numpy as np
import pytest

from segformat import masks as M

CATS = [{"id": 7, "name": "car"}, {"id": 3, "name": "road"}, {"id": 12}]


def test_all_sorts_categories_by_id_and_names_unnamed_ones_by_id():
    table = M.build_class_table(CATS, "all")
    assert table.category_to_index == {3: 1, 7: 2, 12: 3}
    assert table.names == ("background", "road", "car", "12")
    assert table.coco_ids == (None, 3, 7, 12)
    assert table.known_category_ids == frozenset({3, 7, 12})
    assert table.to_json() == {"ignore_index": 255, "classes": [
        {"index": 0, "name": "background"}, {"index": 1, "name": "road", "coco_id": 3},
        {"index": 2, "name": "car", "coco_id": 7}, {"index": 3, "name": "12", "coco_id": 12}]}


def test_all_takes_254_categories_and_refuses_255():
    assert len(M.build_class_table([{"id": i, "name": f"c{i}"} for i in range(1, 255)], "all").names) == 255
    with pytest.raises(ValueError, match="255 categories do not fit an 8-bit mask; pass --classes FILE"):
        M.build_class_table([{"id": i} for i in range(1, 256)], "all")


def test_voc_uses_the_twenty_voc_ids_and_the_datasets_names_where_it_has_them():
    table = M.build_class_table([{"id": 5, "name": "airplane"}, {"id": 90, "name": "toothbrush"}], "voc")
    assert table.category_to_index[5] == 1 and table.category_to_index[72] == 20 and 90 not in table.category_to_index
    assert table.names[:3] == ("background", "airplane", "bicycle") and table.names[-1] == "tvmonitor"
    assert table.coco_ids == (None, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
    assert table.known_category_ids == frozenset({5, 90})


def test_a_mapping_by_name_or_id_merges_classes_and_allows_ignore():
    table = M.build_class_table(CATS, {"car": 2, "3": 2, "12": 255, "-4": 1})
    assert table.category_to_index == {7: 2, 3: 2, 12: 255, -4: 1}
    assert table.names == ("background", "-4", "road+car")  # index 2 holds two categories, sorted by id
    assert table.coco_ids == (None, -4, None)
    assert table.known_category_ids == frozenset({3, 7, 12})
    empty = M.build_class_table(CATS, {"car": 0})
    assert empty.names == ("background",) and empty.coco_ids == (None,)
    top = M.build_class_table(CATS, {"car": 254})
    assert len(top.names) == 255 and top.names[254] == "car" and top.names[1] == "class_1"


@pytest.mark.parametrize("spec,message", [({"car": 256}, "class index 256 for 'car' must be 0..254 or 255"),
                                          ({"car": -1}, "class index -1 for 'car' must be 0..254 or 255"),
                                          ({"zebra": 1}, "--classes mapping names unknown category 'zebra'"),
                                          ("some", "--classes must be all, voc or a mapping, got 'some'")])
def test_bad_class_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError) as info:
        M.build_class_table(CATS, spec)
    assert str(info.value) == message


def test_a_whole_table_in_classes_json_form_keeps_its_names_and_ignores_255():
    doc = {"classes": [{"index": 1, "name": "road", "coco_id": 2}, {"index": 0, "name": "sky", "coco_id": 1},
                       {"index": 255, "name": "unlabeled", "coco_id": 3}]}
    table = M.build_class_table([{"id": 1}, {"id": 2}, {"id": 3}], doc)
    assert table.names == ("sky", "road") and table.coco_ids == (1, 2)
    assert table.category_to_index == {1: 0, 2: 1, 3: 255}
    with pytest.raises(ValueError, match="indices 0..N-1"):
        M.build_class_table([], {"classes": [{"index": 1, "name": "road", "coco_id": 2}]})


def test_background_is_the_class_named_so_at_index_0():
    assert M.background_index(["background", "road"]) == 0
    assert M.background_index(["sky", "background"]) is None and M.background_index([]) is None


def test_label_studio_tables_without_background_label_every_class_and_void_the_rest():
    from pycocotools import mask as mask_utils

    from segformat import label_studio
    names = ["sky", "road"]
    mask = np.array([[0, 0, 1], [255, 1, 1]], np.uint8)
    results = label_studio.brush_results(mask, names)
    assert [r["value"]["brushlabels"] for r in results] == [["sky"], ["road"]]
    assert 'value="sky"' in label_studio.labeling_config(names, [(1, 2, 3), (4, 5, 6)])
    items = [{"id": 1, "data": {"image": "/data/local-files/?d=x/a.png"},
              "annotations": [{"id": 1, "result": results}]}]
    coco, unused = label_studio.export_to_coco(items, names, lambda url: url.rsplit("/", 1)[-1])
    assert unused == [] and label_studio.category_indices(names) == {1: 0, 2: 1, 3: 255}
    by_category = {a["category_id"]: a for a in coco["annotations"]}
    assert {c["id"]: c["name"] for c in coco["categories"]} == {1: "sky", 2: "road", 3: "unlabeled"}
    assert by_category[3]["iscrowd"] == 1  # the whole frame, left to --crowd ignore
    whole = mask_utils.frPyObjects(by_category[3]["segmentation"], 2, 3)
    assert mask_utils.decode(whole).all()
    sky = by_category[1]["segmentation"]
    assert np.array_equal(mask_utils.decode({"size": sky["size"], "counts": sky["counts"].encode()}), mask == 0)
    # with a background first: classes 1..N, nothing for what no region covers
    assert label_studio.category_indices(["background", "road"]) == {1: 1}
