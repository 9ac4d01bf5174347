"""--classes all | voc | mapping: the class table and classes.json, written out literally
(docs/datasets.md's rules) for small category lists, including the edges."""
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
