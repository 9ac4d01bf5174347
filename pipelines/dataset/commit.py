"""Making a dataset visible as a whole (docs/reliability.md): the output folder prepared at a
job's start (a dataset there refused unless --overwrite, what a killed run left removed) and the
commit at its end (the staged shards swapped in, the manifest written last)."""
from __future__ import annotations

import logging
import posixpath

from apache_beam.io.filesystems import FileSystems

from pipelines.common.storage import commit_temp, write_json
from segformat.records import MANIFEST, MANIFEST_FORMAT

LOG = logging.getLogger(__name__)

STAGING = ".staging"
# Present from the start of a commit to its end: a run killed in between left OUT half swapped.
COMMITTING = "committing"


def dataset_files(output_dir: str) -> list:
    """What in ``output_dir`` belongs to a dataset (shards, partial shards, the manifest)."""
    patterns = ("*.tfrecord", "*.tfrecord.tmp-*", MANIFEST)
    found = []
    for pattern in patterns:
        for match in FileSystems.match([FileSystems.join(output_dir, pattern)])[0].metadata_list:
            found.append(match.path)
    return sorted(found)


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuses a folder that already holds a dataset unless ``overwrite`` (the new dataset then
    replaces it as a whole when it is complete); clears a killed run's staging folder."""
    staging = FileSystems.join(output_dir, STAGING)
    if FileSystems.exists(FileSystems.join(staging, COMMITTING)):
        # A run killed while it swapped its dataset in: neither the old nor the new one is whole.
        LOG.warning("%s: a previous run was interrupted while committing its dataset; removing it", output_dir)
        interrupted = dataset_files(output_dir)
        if interrupted:
            FileSystems.delete(interrupted)
    existing = dataset_files(output_dir)
    if existing and not overwrite:
        shown = ", ".join(p.rsplit("/", 1)[-1] for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise SystemExit(f"{output_dir} already holds a dataset ({shown}); pass --overwrite to replace it "
                         "as a whole, or choose another --output_dir")
    leftovers = [m.path for m in FileSystems.match([FileSystems.join(staging, "*")])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)
    remove_writer_temporaries(output_dir)


def remove_writer_temporaries(output_dir: str) -> None:
    """Removes what a killed run's Beam writers left in OUT: their ``beam-temp-*`` folders (a
    finished WriteToText removes its own; a killed one cannot): the files, then the (local) folders."""
    files = [m.path for m in FileSystems.match([FileSystems.join(output_dir, "beam-temp-*/*")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    folders = {posixpath.dirname(path) for path in files}
    if "://" not in output_dir:  # on a local disk a killed writer may leave its folder empty
        import glob
        folders |= set(glob.glob(FileSystems.join(output_dir, "beam-temp-*")))
    for folder in sorted(folders):
        if FileSystems.exists(folder):  # a folder on a local disk; on an object store there is none
            FileSystems.delete([folder])


def commit_dataset(_, shards, side_files, output_dir: str, description: dict) -> None:
    """Makes the staged dataset visible as a whole: the old manifest goes first (no reader
    trusts the folder during the swap), then every shard not in the new set, then the new
    shards move in, and the new manifest, written last, says the dataset is complete."""
    del side_files  # a side input only so that this runs after errors.jsonl, stats.json, classes.json
    marker = FileSystems.join(output_dir, STAGING, COMMITTING)
    write_json(marker, {"shards": sorted(shard["file"] for shard in shards)})
    manifest_path = FileSystems.join(output_dir, MANIFEST)
    if FileSystems.exists(manifest_path):
        FileSystems.delete([manifest_path])
    names = {shard["file"] for shard in shards}
    stale = [p for p in dataset_files(output_dir) if p.rsplit("/", 1)[-1] not in names]
    if stale:
        FileSystems.delete(stale)
    staged = [FileSystems.join(output_dir, STAGING, name) for name in sorted(names)]
    final = [FileSystems.join(output_dir, name) for name in sorted(names)]
    for source, target in zip(staged, final):
        commit_temp(source, target)
    splits = {}
    for shard in sorted(shards, key=lambda s: s["file"]):
        entry = splits.setdefault(shard["split"], {"examples": 0, "shards": []})
        entry["examples"] += shard["examples"]
        entry["shards"].append({k: shard[k] for k in ("file", "examples", "bytes", "crc32c")})
    write_json(manifest_path, dict(description, format=MANIFEST_FORMAT, splits=splits))
    FileSystems.delete([marker])
    remove_empty_staging(output_dir)  # the folder holds the dataset and nothing else


def remove_empty_staging(output_dir: str) -> None:
    """Removes ``OUT/.staging`` once no file is left under it (a local folder; on an object
    store there is none)."""
    staging = FileSystems.join(output_dir, STAGING)
    if FileSystems.exists(staging) and not FileSystems.match([FileSystems.join(staging, "**")])[0].metadata_list:
        FileSystems.delete([staging])
