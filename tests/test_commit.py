"""The dataset commit on its own (pipelines/dataset/commit.py), on a local folder: the output
folder prepared at a job's start and the staged shards swapped in at its end, the manifest
written last. File names and the manifest's form are written out here from docs/datasets.md."""
import json
import re

import pytest

from pipelines.dataset import commit


def entry(split, index, total, data: bytes, examples: int) -> dict:
    """A shard as the manifest lists it."""
    import google_crc32c
    return {"file": f"{split}-{index:05d}-of-{total:05d}.tfrecord", "examples": examples, "bytes": len(data),
            "crc32c": f"{google_crc32c.value(data):08x}"}


def shard(split, index, total, data: bytes, examples: int) -> dict:
    """A shard as the shard writer reports it to the commit (its split too)."""
    return dict(entry(split, index, total, data, examples), split=split)


def old_dataset(out):
    """A finished dataset of 3 train shards and 1 val shard, with its side files."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord",
                 "val-00000-of-00001.tfrecord"):
        (out / name).write_bytes(b"old " + name.encode())
    (out / "dataset.json").write_text(json.dumps({"format": "segpipe-dataset/1", "splits": {}}))
    (out / "errors.jsonl").write_text("")


def stage(out, files: dict) -> list:
    (out / ".staging").mkdir(parents=True, exist_ok=True)
    shards = []
    for (split, index, total, examples), data in files.items():
        entry = shard(split, index, total, data, examples)
        (out / ".staging" / entry["file"]).write_bytes(data)
        shards.append(entry)
    return shards


NEW = {("train", 0, 2, 3): b"new train 0", ("train", 1, 2, 4): b"new train one", ("val", 0, 1, 2): b"new val"}


def test_a_commit_replaces_the_old_dataset_by_the_staged_one_and_writes_the_manifest_last(tmp_path):
    out = tmp_path / "out"
    old_dataset(out)
    shards = stage(out, NEW)
    commit.commit_dataset(None, list(reversed(shards)), ["errors.jsonl"], str(out), {"command": "segpipe dataset x"})
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "errors.jsonl", "train-00000-of-00002.tfrecord",
                                                     "train-00001-of-00002.tfrecord", "val-00000-of-00001.tfrecord"]
    assert (out / "train-00001-of-00002.tfrecord").read_bytes() == b"new train one"
    assert (out / "val-00000-of-00001.tfrecord").read_bytes() == b"new val"
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest == {
        "command": "segpipe dataset x", "format": "segpipe-dataset/1",
        "splits": {"train": {"examples": 7, "shards": [entry("train", 0, 2, b"new train 0", 3),
                                                       entry("train", 1, 2, b"new train one", 4)]},
                   "val": {"examples": 2, "shards": [entry("val", 0, 1, b"new val", 2)]}}}
    assert list(manifest) == ["command", "format", "splits"]


def test_a_commit_keeps_what_is_left_in_staging_that_is_not_its_own(tmp_path):
    out = tmp_path / "out"
    shards = stage(out, {("train", 0, 1, 1): b"x"})
    (out / ".staging" / "chips").mkdir()
    (out / ".staging" / "chips" / "a.png").write_bytes(b"png")
    commit.commit_dataset(None, shards, [], str(out), {})
    assert (out / ".staging" / "chips" / "a.png").exists() and not (out / ".staging" / "committing").exists()


class Killed(Exception):
    pass


def test_a_commit_killed_half_way_leaves_no_manifest_and_the_next_start_removes_the_mixture(tmp_path, monkeypatch,
                                                                                             caplog):
    """Killed after the first shard moved in: no manifest (a reader stops), the marker says the
    folder is half swapped, and the next run's start removes every dataset file there."""
    out = tmp_path / "out"
    old_dataset(out)
    shards = stage(out, NEW)
    real = commit.commit_temp
    moved = []

    def move_then_die(source, target):
        if moved:
            raise Killed()
        moved.append(target)
        real(source, target)
    monkeypatch.setattr(commit, "commit_temp", move_then_die)
    with pytest.raises(Killed):
        commit.commit_dataset(None, shards, [], str(out), {})
    monkeypatch.setattr(commit, "commit_temp", real)
    assert not (out / "dataset.json").exists()
    assert (out / ".staging" / "committing").exists()
    assert not (out / "train-00002-of-00003.tfrecord").exists()  # the old shards go before the new move in
    assert (out / "train-00000-of-00002.tfrecord").exists()
    import logging
    with caplog.at_level(logging.WARNING, logger="pipelines.dataset.commit"):
        commit.prepare_output_dir(str(out), overwrite=False)  # nothing whole is there to protect
    assert caplog.messages == [f"{out}: a previous run was interrupted while committing its dataset; removing it"]
    assert sorted(p.name for p in out.iterdir()) == [".staging", "errors.jsonl"]
    assert list((out / ".staging").iterdir()) == []


def test_preparing_refuses_a_dataset_unless_overwrite_and_keeps_it_until_the_commit(tmp_path):
    out = tmp_path / "out"
    old_dataset(out)
    with pytest.raises(SystemExit) as refused:
        commit.prepare_output_dir(str(out), overwrite=False)
    assert str(refused.value) == (f"{out} already holds a dataset (dataset.json, train-00000-of-00003.tfrecord, "
                                  "train-00001-of-00003.tfrecord, ...); pass --overwrite to replace it as a whole, "
                                  "or choose another --output_dir")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    commit.prepare_output_dir(str(out), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_preparing_a_folder_with_one_shard_names_it_without_an_ellipsis(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"x")
    with pytest.raises(SystemExit, match=r"\(train-00000-of-00001.tfrecord\); pass"):
        commit.prepare_output_dir(str(out), overwrite=False)


def test_preparing_removes_a_killed_runs_staging_partial_shards_and_writer_folders(tmp_path):
    out = tmp_path / "out"
    (out / ".staging").mkdir(parents=True)
    (out / ".staging" / "train-00000-of-00001.tfrecord.tmp-abc").write_bytes(b"half")
    (out / ".staging" / "train-00001-of-00002.tfrecord").write_bytes(b"whole but uncommitted")
    (out / "beam-temp-errors-1234").mkdir()
    (out / "beam-temp-errors-1234" / "part-0").write_text("{}")
    (out / "beam-temp-stats-99").mkdir()  # a killed writer's empty folder
    (out / "train-00000-of-00001.tfrecord.tmp-def").write_bytes(b"partial")
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(SystemExit):  # a partial shard in OUT is part of a dataset: refused without overwrite
        commit.prepare_output_dir(str(out), overwrite=False)
    commit.prepare_output_dir(str(out), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [".staging", "notes.txt", "train-00000-of-00001.tfrecord.tmp-def"]
    assert list((out / ".staging").iterdir()) == []


def test_preparing_a_folder_that_does_not_exist_is_nothing(tmp_path):
    commit.prepare_output_dir(str(tmp_path / "new"), overwrite=False)
    assert not (tmp_path / "new").exists() or list((tmp_path / "new").iterdir()) == []


def test_dataset_files_are_the_shards_partial_shards_and_the_manifest(tmp_path):
    for name in ("a.tfrecord", "a.tfrecord.tmp-1", "dataset.json", "errors.jsonl", "stats.json", "classes.json",
                 "b.tfrecords", "dataset.json.tmp-2"):
        (tmp_path / name).write_text("")
    assert [p.rsplit("/", 1)[1] for p in commit.dataset_files(str(tmp_path))] == [
        "a.tfrecord", "a.tfrecord.tmp-1", "dataset.json"]


@pytest.mark.parametrize("files, shown", [(3, "a-0.tfrecord, a-1.tfrecord, a-2.tfrecord"),
                                          (4, "a-0.tfrecord, a-1.tfrecord, a-2.tfrecord, ...")])
def test_a_refusal_names_three_files_and_says_when_there_are_more(tmp_path, files, shown):
    for k in range(files):
        (tmp_path / f"a-{k}.tfrecord").write_bytes(b"x")
    with pytest.raises(SystemExit, match=rf"already holds a dataset \({re.escape(shown)}\); pass"):
        commit.prepare_output_dir(str(tmp_path), overwrite=False)
