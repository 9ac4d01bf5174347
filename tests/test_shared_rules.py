"""Rules every dataset job and the trainer share, each with one home: the split rule, the guard
against an output folder among the inputs, the record keys, the normalisation the backbone
weights expect."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("config", ["coco", "raster"])
def test_the_split_rule_is_the_same_for_every_job(config):
    from segcli.coco import CocoConfig
    from segcli.raster import RasterConfig
    make = {"coco": lambda **kw: CocoConfig(images_root="i", **kw),
            "raster": lambda **kw: RasterConfig(scenes="s", mask_colors="c", output_dir="o", labels="l", **kw)}[config]
    make(split="train", val_fraction=0.1)
    make(split="val", val_fraction=0.0)
    for split, fraction in (("val", 0.1), ("a/b", 0.0), ("", 0.0), ("train", 1.0)):
        with pytest.raises(ValueError):
            make(split=split, val_fraction=fraction)


@pytest.mark.parametrize("config", ["pairs", "raster"])
def test_the_pairing_rule_is_the_same_for_both_pairing_jobs(config):
    """Both pair by the whole file stem unless told otherwise, and refuse a key rule that is not
    a regular expression when the configuration is made, not at the first file."""
    from segcli.masks import MasksConfig
    from segcli.raster import RasterConfig
    make, fields = {
        "pairs": (lambda **kw: MasksConfig(images="i", masks="m", output_dir="o", mask_colors="c", **kw),
                  ("image_key_regex", "mask_key_regex")),
        "raster": (lambda **kw: RasterConfig(scenes="s", mask_colors="c", output_dir="o", labels="l", **kw),
                   ("scene_key_regex", "label_key_regex"))}[config]
    default = make()
    for field in fields:
        assert re.fullmatch(getattr(default, field), "um_000012").group("key") == "um_000012"
        with pytest.raises(ValueError, match="not a regular expression"):
            make(**{field: "^(unclosed"})


def test_the_pairs_job_refuses_a_split_that_is_not_a_plain_name(tmp_path):
    from pipelines import masks_to_tfrecord
    (tmp_path / "colors.json").write_text(json.dumps({"colors": [{"color": [0], "index": 0}]}))
    with pytest.raises(SystemExit, match="plain name"):
        masks_to_tfrecord.run(["--images", f"{tmp_path}/i/*.png", "--masks", f"{tmp_path}/m/*.png", "--mask_colors",
                               str(tmp_path / "colors.json"), "--output_dir", str(tmp_path / "out"), "--split", "a/b"])


def test_every_dataset_job_refuses_an_output_its_inputs_would_read(tmp_path):
    from pipelines import coco_to_tfrecord, masks_to_tfrecord, raster_to_tfrecord
    (tmp_path / "colors.json").write_text(json.dumps({"colors": [{"color": [0], "index": 0}]}))
    (tmp_path / "a.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    colors = str(tmp_path / "colors.json")
    runs = {
        # the test shard this --split writes would match the glob (a fixed train-... name would not)
        "pairs": lambda: masks_to_tfrecord.run(["--images", f"{tmp_path}/**/test-*", "--masks", f"{tmp_path}/m/*.png",
                                                "--mask_colors", colors, "--output_dir", str(tmp_path / "out"),
                                                "--split", "test"]),
        "raster": lambda: raster_to_tfrecord.run(["--scenes", f"{tmp_path}/**", "--labels", f"{tmp_path}/l/*.tif",
                                                  "--mask_colors", colors, "--output_dir", str(tmp_path / "out")]),
        "coco": lambda: coco_to_tfrecord.run(["--annotations", str(tmp_path / "a.json"), "--images",
                                              str(tmp_path / "images"), "--output_dir", str(tmp_path / "images")]),
    }
    for job, run in runs.items():
        with pytest.raises(SystemExit, match="lies where .* matches"):
            run()
    assert not (tmp_path / "out").exists()


def test_no_module_but_segformat_records_spells_a_record_key():
    key = re.compile(r"""["']image/(encoded|format|height|width|filename|source_id|segmentation|geo)""")
    offenders = [str(p.relative_to(ROOT)) for folder in ("pipelines", "segmodel", "segformat", "segcli")
                 for p in (ROOT / folder).glob("*.py") if p.name != "records.py" and key.search(p.read_text())]
    assert offenders == []


def test_a_normalisation_that_contradicts_the_backbone_weights_is_refused():
    from segcli.train import TrainConfig
    TrainConfig(backbone_weights="imagenet", normalization="caffe")
    TrainConfig(backbone_weights="none", normalization="imagenet")
    with pytest.raises(ValueError, match="contradicts the backbone weights"):
        TrainConfig(backbone_weights="imagenet", normalization="imagenet")
    with pytest.raises(ValueError, match="normalization must be one of"):
        TrainConfig(backbone_weights="none", normalization="bgr")


def test_build_fcn_refuses_a_normalisation_the_loaded_weights_do_not_expect(tmp_path):
    from segmodel import fcn
    assert fcn.build_fcn("fcn32s", 3, width=0.125, fc_units=16).get_layer("normalize").mode == "imagenet"
    with pytest.raises(ValueError, match="contradicts the backbone weights"):
        fcn.build_fcn("fcn32s", 3, width=0.125, fc_units=16, normalization="imagenet",
                      backbone_weights=str(tmp_path / "vgg16.weights.h5"))


def test_importing_segmodel_s_light_modules_loads_neither_tensorflow_nor_keras():
    """The modules segmodel's docstring names as light (the dataset jobs, the command line and a
    batch job's launcher import them)."""
    import subprocess
    import sys
    code = ("import sys, segmodel.tiling, segmodel.architectures, segmodel.preprocess, segmodel.predict; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_every_python_file_compiles_on_the_interpreter_running_the_tests():
    """Benchmarks and scripts that no test imports still parse (setup.py's python_requires is
    older than some syntax: an f-string nesting its own quotes parses on 3.12 only)."""
    folders = [p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "__init__.py").exists()]
    files = [f for folder in folders for f in folder.rglob("*.py")] + list(ROOT.glob("*.py"))
    assert any(f.parent.name == "bench" for f in files)
    for path in files:
        compile(path.read_text(), str(path), "exec")
