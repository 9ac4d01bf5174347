"""``segpipe``: one command line for every stage.

    segpipe dataset coco  ...   COCO JSON + images -> TFRecords     (pipelines.coco_to_tfrecord)
    segpipe dataset masks ...   image + mask pairs -> TFRecords     (pipelines.masks_to_tfrecord)
    segpipe dataset labelstudio ...  Label Studio export -> TFRecords  (pipelines.labelstudio_to_tfrecord)
    segpipe dataset raster ...  GeoTIFF scenes + label rasters -> chips -> TFRecords  (pipelines.raster_to_tfrecord)
    segpipe train ...           train an FCN                        (segmodel.train)
    segpipe evaluate ...        metrics.json at full image size     (segmodel.evaluate)
    segpipe export ...          the model as a SavedModel or TFLite (segmodel.formats)
    segpipe vertex-train ... -- TRAIN_FLAGS   training on Vertex AI (pipelines.vertex_train)
    segpipe segment ...         batch segmentation with Beam        (pipelines.batch_segment)
    segpipe review ...          a labeling batch from the review queue  (pipelines.review)
    segpipe report ...          static HTML report                  (pipelines.report)
    segpipe serve labelstudio ...  a Label Studio ML backend: live pre-labels  (pipelines.labeling.backend)
    segpipe demo ...            everything on built-in data         (pipelines.demo)

``segpipe <command> --help`` shows each command's flags; flags a Beam job does not know go to
Beam (``--runner DataflowRunner --project ...``). ``segpipe --verbose <command> ...`` also shows
TensorFlow's C++ log lines (hidden by default: start-up chatter about CPU instructions and CUDA)
and the traceback of an error (by default: one line on stderr and exit status 1).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import typing
import urllib.parse

class Command(typing.NamedTuple):
    flags: str  # the module in segcli with make_parser(): checked before the job loads
    job: str  # the job's module
    entry: str  # its entry point, called with the rest of the command line
    beam_flags: bool  # unknown flags go on to Beam (--runner, --project, ...)
    uses_tf: bool  # the job loads TensorFlow (imported first, its start-up notices hidden)


COMMANDS = {
    ("dataset", "coco"): Command("segcli.coco", "pipelines.coco_to_tfrecord", "run", beam_flags=True, uses_tf=False),
    ("dataset", "masks"): Command("segcli.masks", "pipelines.masks_to_tfrecord", "run", beam_flags=True, uses_tf=False),
    ("dataset", "labelstudio"): Command("segcli.labelstudio", "pipelines.labelstudio_to_tfrecord", "run",
                                        beam_flags=True, uses_tf=False),
    ("dataset", "raster"): Command("segcli.raster", "pipelines.raster_to_tfrecord", "run", beam_flags=True,
                                   uses_tf=False),
    ("train",): Command("segcli.train", "segmodel.train", "main", beam_flags=False, uses_tf=True),
    ("evaluate",): Command("segcli.evaluate", "segmodel.evaluate", "main", beam_flags=False, uses_tf=True),
    ("vertex-train",): Command("segcli.vertex", "pipelines.vertex_train", "main", beam_flags=False, uses_tf=False),
    ("export",): Command("segcli.export", "segmodel.formats", "main", beam_flags=False, uses_tf=True),
    ("segment",): Command("segcli.segment", "pipelines.batch_segment", "run", beam_flags=True, uses_tf=True),
    ("review",): Command("segcli.review", "pipelines.review", "main", beam_flags=False, uses_tf=False),
    ("serve", "labelstudio"): Command("segcli.serve", "pipelines.labeling.backend", "main", beam_flags=False,
                                      uses_tf=True),
    ("report",): Command("segcli.report", "pipelines.report", "main", beam_flags=False, uses_tf=True),
    ("demo",): Command("segcli.demo", "pipelines.demo", "main", beam_flags=False, uses_tf=True),
}


USER_ERROR_MODULES = (
    "google.",  # the Google API clients: what gs:// raises once its retries are spent
    "tensorflow.python.framework.errors_impl",  # TensorFlow's file and data errors (NotFound, ...)
)


def is_user_error(error: BaseException) -> bool:
    """Errors a user fixes (a path, a document, a bucket that keeps failing), told in one line:
    OSError (Beam's BeamIOError is one), ValueError, KeyError, the Google API clients' and
    TensorFlow's errors, also when a Beam runner re-raised one of them as a RuntimeError."""
    return any(isinstance(e, (OSError, ValueError, KeyError)) or any(
        cls.__module__.startswith(USER_ERROR_MODULES) for cls in type(e).__mro__[:-2]) for e in exception_chain(error))


def exception_chain(error: BaseException | None):
    """The error, then what caused it (``raise ... from``) or was being handled when it rose, and so on."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def readable(message: str) -> str:
    """The JSON API's object URLs in a client error written as the gs:// paths a user knows."""
    return re.sub(r"\S*/storage/v1/b/([^/\s]+)/o/([^?\s:]+)\S*",
                  lambda m: f"gs://{m[1]}/{urllib.parse.unquote(m[2])}", message)


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool):
    """File descriptor 2 pointed at /dev/null while TensorFlow's shared libraries load.

    TensorFlow logs through Abseil, and Abseil writes every message logged before
    ``absl::InitializeLog()`` to stderr whatever TF_CPP_MIN_LOG_LEVEL says (abseil-cpp PR #1957,
    open), so the oneDNN/CUDA notices can only be hidden at the file descriptor. Python
    exceptions are unaffected: they are printed after the descriptor is restored.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] == "--verbose"
    if verbose:
        argv = argv[1:]
    # Read by TensorFlow's C++ logging once it is initialised: 3 hides its INFO/WARNING/ERROR
    # lines, 0 shows them all.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")
    for words, command_spec in COMMANDS.items():
        if tuple(argv[:len(words)]) != words:
            continue
        rest = argv[len(words):]
        # The flags are checked (and --help answered) before TensorFlow or Beam load: a typo
        # costs a fraction of a second, not five.
        parser = importlib.import_module(command_spec.flags).make_parser()
        (parser.parse_known_args if command_spec.beam_flags else parser.parse_args)(rest)
        import logging
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        command = "segpipe " + " ".join(words)
        sys.argv[0] = command
        try:
            with quiet_native_stderr(not verbose):
                if command_spec.uses_tf:  # loaded here so that its start-up notices stay hidden
                    importlib.import_module("tensorflow")
                entry = getattr(importlib.import_module(command_spec.job), command_spec.entry)
            entry(rest)
        except Exception as error:
            # A missing file, an unreadable model folder, a malformed document, storage that keeps
            # failing: one line, no traceback (--verbose shows it). Bad flags already exited
            # through argparse.
            if verbose or not is_user_error(error):
                raise
            print(f"{command}: {type(error).__name__}: {readable(str(error))}", file=sys.stderr)
            return 1
        return 0
    print(__doc__.strip())
    if argv and argv[0] not in ("-h", "--help", "help"):
        print(f"\nsegpipe: unknown command {' '.join(argv[:2])!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
