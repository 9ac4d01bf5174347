"""The dataset pipelines' shared pieces that are not covered through a whole pipeline."""
import threading

from pipelines.common import storage


def test_read_ahead_keeps_order_reports_errors_and_bounds_reads_in_flight(tmp_path, monkeypatch):
    paths = []
    for i in range(40):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]) * (i + 1))
        paths.append(str(tmp_path / f"{i}.bin"))
    paths.insert(5, str(tmp_path / "missing.bin"))
    active, peak, lock = 0, 0, threading.Lock()
    window_full = threading.Event()  # no sleeps: each read waits until the window has filled once
    read_file = storage.read_file

    def slow_read(path):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            if active == 4:
                window_full.set()
        window_full.wait(timeout=10)
        try:
            return read_file(path)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(storage, "read_file", slow_read)
    results = list(storage.ReadAhead(in_flight=4).read(paths))
    missing = results.pop(5)
    assert missing[0] is None and isinstance(missing[1], OSError)
    assert [data for data, _ in results] == [bytes([i]) * (i + 1) for i in range(40)]
    assert all(error is None for _, error in results)
    assert peak == 4  # the window fills (reads overlap), and never overflows


def test_readers_share_one_bounded_pool_per_process(tmp_path):
    """Every DoFn instance in a worker process reads on the same pool (a Dataflow harness runs
    many bundles at once; a pool per instance would be hundreds of threads)."""
    (tmp_path / "x").write_bytes(b"x")
    readers = [storage.ReadAhead() for _ in range(8)]
    for reader in readers:
        assert list(reader.read([str(tmp_path / "x")] * 20)) == [(b"x", None)] * 20
    assert storage.shared_read_pool() is storage.shared_read_pool()
    threads = [t for t in threading.enumerate() if t.name.startswith("read-ahead")]
    assert 0 < len(threads) <= storage.READ_THREADS


def test_a_killed_runs_temporaries_are_removed_and_nothing_else(tmp_path):
    from pipelines.common.storage import remove_stale_temporaries
    (tmp_path / "masks/a").mkdir(parents=True)
    stale = [tmp_path / "summary.jsonl.tmp-0123abcd", tmp_path / "masks/p1.png.tmp-4567", tmp_path / "masks/a/s.tif.tmp-89"]
    kept = [tmp_path / "summary.jsonl", tmp_path / "masks/p1.png", tmp_path / "masks/a/s.tif", tmp_path / "masks/a/s.json"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert remove_stale_temporaries(str(tmp_path)) == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert remove_stale_temporaries(str(tmp_path / "missing")) == 0


class Failing(OSError):
    pass


def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    import json
    path = tmp_path / "out" / "stats.json"
    path.parent.mkdir()
    path.write_text("old")
    storage.write_json(str(path), {"name": "a", "images": 3})
    assert json.loads(path.read_text()) == {"images": 3, "name": "a"} and path.read_text().endswith("}\n")
    assert path.read_text() == '{\n  "name": "a",\n  "images": 3\n}\n'  # indented, keys in the given order
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.json"]
    source = tmp_path / "local.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    storage.upload_atomic(str(source), str(tmp_path / "out" / "copy.bin"))
    assert (tmp_path / "out" / "copy.bin").read_bytes() == b"\x00\x01" * 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["copy.bin", "stats.json"]


def test_temporary_names_are_unique_siblings_that_the_stale_sweep_finds(tmp_path):
    path = str(tmp_path / "a.png")
    first, second = storage.temp_name(path), storage.temp_name(path)
    assert first != second and first.startswith(path + ".tmp-") and len(first) == len(path) + 5 + 32
    (tmp_path / first.rsplit("/", 1)[1]).write_bytes(b"x")
    assert storage.remove_stale_temporaries(str(tmp_path)) == 1


def test_a_write_that_fails_names_the_object_and_removes_its_temporary(tmp_path, monkeypatch):
    import pytest
    from apache_beam.io.filesystems import FileSystems
    path = str(tmp_path / "mask.png")

    def failing_rename(sources, targets):
        raise Failing("disk gone")
    monkeypatch.setattr(FileSystems, "rename", failing_rename)
    with pytest.raises(storage.StorageError, match=rf"^could not write {path}: Failing: disk gone$") as raised:
        storage.write_atomic(path, b"png bytes")
    assert isinstance(raised.value.__cause__, Failing)
    assert list(tmp_path.iterdir()) == []  # the temporary was written, then deleted


def test_a_domain_error_inside_a_write_is_not_a_storage_error(tmp_path):
    import pytest
    temp = tmp_path / "x.tmp-1"
    temp.write_bytes(b"half")
    with pytest.raises(KeyError):
        with storage.writing(str(tmp_path / "x"), str(temp)):
            raise KeyError("a bug, not storage")
    assert not temp.exists()  # still cleaned up
    with pytest.raises(storage.StorageError, match="could not write .*/y: Failing: full"):
        with storage.writing(str(tmp_path / "y")):
            raise Failing("full")
    first = storage.StorageError("could not write z: first")
    with pytest.raises(storage.StorageError) as raised:  # already named: passed on unchanged
        with storage.writing(str(tmp_path / "w")):
            raise first
    assert raised.value is first


def test_a_read_that_fails_names_the_object(tmp_path):
    import pytest
    assert storage.exists(str(tmp_path)) and not storage.exists(str(tmp_path / "missing"))
    with pytest.raises(storage.StorageError, match=r"^could not read gs://b/a.json: Failing: reset$"):
        with storage.reading("gs://b/a.json"):
            raise Failing("reset")
    with pytest.raises(ValueError, match="^not storage$"):
        with storage.reading("gs://b/a.json"):
            raise ValueError("not storage")
    data, error = storage.read_file(str(tmp_path / "missing"))
    assert data is None and isinstance(error, OSError)


def test_storage_failures_are_oserrors_google_errors_and_crashes_inside_the_storage_clients():
    from google.api_core import exceptions as google_errors
    assert storage.is_storage_failure(OSError("x")) and storage.is_storage_failure(google_errors.ServiceUnavailable("x"))
    assert not storage.is_storage_failure(ValueError("x")) and not storage.is_storage_failure(AttributeError("x"))

    def raise_inside(module_name):
        namespace = {"__name__": module_name}
        exec("def crash():\n    return None.status_code\n", namespace)
        try:
            namespace["crash"]()
        except AttributeError as error:
            return error
    assert storage.is_storage_failure(raise_inside("apache_beam.io.gcp.gcsio"))
    assert storage.is_storage_failure(raise_inside("google.cloud.storage.batch"))
    assert not storage.is_storage_failure(raise_inside("pipelines.segment.outputs"))
    assert not storage.is_storage_failure(raise_inside("apache_beam.io.gcp.gcsiox"))
    assert not storage.is_storage_failure(raise_inside("googlex"))


def test_a_storage_failure_is_found_down_the_chain_of_causes():
    try:
        try:
            raise Failing("gone")
        except Failing as inner:
            raise RuntimeError("a Beam runner's wrapper") from inner
    except RuntimeError as wrapped:
        assert storage.caused_by_storage(wrapped)
    try:
        try:
            raise Failing("gone")
        except Failing:
            raise RuntimeError("raised while handling it")
    except RuntimeError as handled:
        assert storage.caused_by_storage(handled)
    assert not storage.caused_by_storage(RuntimeError("no cause")) and not storage.caused_by_storage(None)


def test_a_write_that_fails_while_writing_names_the_object_and_removes_its_temporary(tmp_path, monkeypatch):
    import pytest
    from apache_beam.io.filesystems import FileSystems
    real_create = FileSystems.create

    class Breaking:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:3])
            raise Failing("disk full")
    monkeypatch.setattr(FileSystems, "create", lambda path, **kw: Breaking(real_create(path, **kw)))
    for write in (lambda p: storage.write_atomic(p, b"0123456789"), lambda p: storage.write_json(p, {"a": 1}),
                  lambda p: storage.upload_atomic(__file__, p)):
        path = str(tmp_path / "x.bin")
        with pytest.raises(storage.StorageError, match=rf"^could not write {path}: Failing: disk full$"):
            write(path)
        assert list(tmp_path.iterdir()) == []


def test_a_read_check_that_fails_names_the_object(monkeypatch):
    import pytest
    from apache_beam.io.filesystems import FileSystems

    def failing_exists(path):
        raise Failing("reset")
    monkeypatch.setattr(FileSystems, "exists", failing_exists)
    with pytest.raises(storage.StorageError, match=r"^could not read gs://b/c.json: Failing: reset$"):
        storage.exists("gs://b/c.json")


def test_the_read_pool_is_made_again_in_a_forked_child_and_is_large(monkeypatch):
    pool = storage.shared_read_pool()
    assert pool._max_workers == storage.READ_THREADS
    monkeypatch.setattr(storage, "_read_pool", (-1, pool))  # as a forked child sees its parent's pool
    fresh = storage.shared_read_pool()
    assert fresh is not pool and storage.shared_read_pool() is fresh


def test_stale_temporaries_are_found_with_or_without_a_trailing_slash(tmp_path):
    (tmp_path / "a.json.tmp-1").write_text("x")
    assert storage.remove_stale_temporaries(str(tmp_path) + "/") == 1
    assert list(tmp_path.iterdir()) == []


def test_objects_on_gcs_get_their_content_types(tmp_path, gcs_bucket):
    """Read back with google-cloud-storage from the emulator: what a browser or the console shows."""
    from google.cloud import storage as gcs
    prefix = f"gs://{gcs_bucket}/content-types"
    storage.write_json(f"{prefix}/a.json", {"a": 1})
    storage.write_atomic(f"{prefix}/m.png", b"png", "image/png")
    local = tmp_path / "cog.tif"
    local.write_bytes(b"tif")
    storage.upload_atomic(str(local), f"{prefix}/c.tif", "image/tiff")
    storage.write_atomic(f"{prefix}/raw.bin", b"raw")
    bucket = gcs.Client(project="test").bucket(gcs_bucket)
    types = {b.name.rsplit("/", 1)[1]: b.content_type for b in bucket.list_blobs(prefix="content-types/")}
    assert types == {"a.json": "application/json", "m.png": "image/png", "c.tif": "image/tiff",
                     "raw.bin": "application/octet-stream"}
