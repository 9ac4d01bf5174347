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
