"""Reading and writing files on any Beam filesystem (local, gs://): reads ahead on a shared
thread pool, and writes that no reader ever sees half done (a temporary name, then a rename)."""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import threading
import uuid

from apache_beam.io.filesystems import FileSystems

# Files read at once per worker. Reads release the GIL: locally they overlap with the CPU work
# of the other images (a cold page cache costs ~1 ms per COCO JPEG), on GCS with its ~30 ms
# per-object latency they are what keeps a worker busy.
READ_AHEAD = 16


def read_file(path: str):
    """(bytes, None), or (None, the exception) when the file cannot be read."""
    try:
        with FileSystems.open(path) as handle:
            return handle.read(), None
    except Exception as e:  # missing, permission, transient storage error after the client's retries
        return None, e


# Reading threads per worker process, shared by all its DoFn instances: a Dataflow SDK harness
# runs a dozen or more bundles at once, and a pool per instance would mean hundreds of threads.
READ_THREADS = 32
_read_pool = (None, None)  # (pid, executor)
_read_pool_lock = threading.Lock()


def shared_read_pool():
    """This process's reading thread pool (made on first use, and again after a fork: a forked
    child does not inherit the parent's threads)."""
    global _read_pool
    with _read_pool_lock:
        pid, pool = _read_pool
        if pool is None or pid != os.getpid():
            import concurrent.futures
            pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read-ahead")
            _read_pool = (os.getpid(), pool)
        return pool


class ReadAhead:
    """Reads files on the process's shared thread pool, in the order asked, keeping at most
    ``in_flight`` reads of this reader pending."""

    def __init__(self, in_flight: int = READ_AHEAD):
        self.in_flight = in_flight

    def read(self, paths):
        """Yields read_file(path) for each path, in order."""
        pool = shared_read_pool()
        paths = iter(paths)
        pending = collections.deque(pool.submit(read_file, path) for path in itertools.islice(paths, self.in_flight))
        while pending:
            result = pending.popleft().result()
            for path in itertools.islice(paths, 1):
                pending.append(pool.submit(read_file, path))
            yield result


class StorageError(OSError):
    """A read or write that failed for good (the storage client's own retries spent), naming the object."""


# Modules whose own crashes are storage failures: Beam's gs:// client turns a batch request that
# failed for good as a whole (every retry answered 503) into an AttributeError on the missing
# response (apache-beam 2.77, gcsio.copy_batch: ``responses[i]`` stays None) instead of an error.
STORAGE_CLIENT_MODULES = ("apache_beam.io.gcp.gcsio", "apache_beam.io.gcp.gcsfilesystem", "google")


def is_storage_failure(error: BaseException) -> bool:
    """OSError (local files, Beam's BeamIOError), an error of Google's storage clients, or any
    exception raised inside a storage client's own code (see STORAGE_CLIENT_MODULES)."""
    if isinstance(error, OSError) or type(error).__module__.split(".")[0] == "google":
        return True
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""
    return any(module == name or module.startswith(name + ".") for name in STORAGE_CLIENT_MODULES)


def caused_by_storage(error: BaseException | None) -> bool:
    """Whether ``error``, or what caused it (``raise ... from``) or was being handled when it
    rose, and so on, is a storage failure (a Beam runner re-raises a worker's error wrapped)."""
    while error is not None:
        if is_storage_failure(error):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def writing(path: str, temp: str | None = None):
    """Names ``path`` in a storage failure of the block, and removes the block's temporary file
    ``temp`` (best effort) so that no partial file stays behind."""
    try:
        yield
    except Exception as error:
        if temp is not None:
            with contextlib.suppress(Exception):
                if FileSystems.exists(temp):
                    FileSystems.delete([temp])
        _raise_named(error, "write", path)


def _raise_named(error: Exception, verb: str, path: str):
    """Re-raises ``error`` (being handled) as a StorageError naming ``path`` when it is a storage
    failure not yet named; any other error unchanged."""
    if isinstance(error, StorageError) or not is_storage_failure(error):
        raise error
    raise StorageError(f"could not {verb} {path}: {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def reading(path: str):
    """Names ``path`` in a storage failure of the block: an input that cannot be read (the
    client's errors, a reset connection above all, often name no object)."""
    try:
        yield
    except Exception as error:
        _raise_named(error, "read", path)


def exists(path: str) -> bool:
    """FileSystems.exists, naming ``path`` when storage fails for good."""
    with reading(path):
        return FileSystems.exists(path)


def remove_stale_temporaries(folder: str) -> int:
    """Deletes the temporary files (``NAME.tmp-<uuid>``, see temp_name) that a killed run left
    anywhere under ``folder``; returns how many. For a job's start: two runs must not write into
    one output folder at once, so every temporary there is a dead run's."""
    try:
        stale = [m.path for m in FileSystems.match([f"{folder.rstrip('/')}/**.tmp-*"])[0].metadata_list]
    except Exception:  # no such folder yet
        return 0
    if stale:
        FileSystems.delete(stale)
    return len(stale)


def temp_name(path: str) -> str:
    """A unique sibling of ``path`` to write before ``commit_temp`` moves it into place."""
    return f"{path}.tmp-{uuid.uuid4().hex}"


def commit_temp(temp: str, path: str) -> None:
    """Moves a fully written temporary file over ``path`` (replacing it): no reader sees half a file."""
    with writing(path, temp):
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([temp], [path])


def write_atomic(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    temp = temp_name(path)
    with writing(path, temp), FileSystems.create(temp, mime_type=mime_type) as handle:
        handle.write(data)
    commit_temp(temp, path)


def write_json(path: str, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), "application/json")


def upload_atomic(local: str, path: str, mime_type: str = "application/octet-stream") -> None:
    """Copies a finished local file to ``path`` (any filesystem) atomically."""
    temp = temp_name(path)
    with writing(path, temp), open(local, "rb") as src, FileSystems.create(temp, mime_type=mime_type) as dst:
        shutil.copyfileobj(src, dst, 16 << 20)
    commit_temp(temp, path)
