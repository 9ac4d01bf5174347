"""``segpipe``: one command line for every stage.

    segpipe dataset coco  ...   COCO JSON + images -> TFRecords     (pipelines.coco_to_tfrecord)
    segpipe dataset masks ...   image + mask pairs -> TFRecords     (pipelines.masks_to_tfrecord)
    segpipe train ...           train an FCN                        (segmodel.train)
    segpipe evaluate ...        metrics.json at full image size     (segmodel.evaluate)
    segpipe segment ...         batch segmentation with Beam        (pipelines.batch_segment)
    segpipe report ...          static HTML report                  (pipelines.report)
    segpipe demo ...            everything on built-in data         (pipelines.demo)

``segpipe <command> --help`` shows each command's flags; flags a Beam job does not know go to
Beam (``--runner DataflowRunner --project ...``). ``segpipe --verbose <command> ...`` also shows
TensorFlow's C++ log lines (hidden by default: start-up chatter about CPU instructions and CUDA)
and the traceback of an error (by default: one line on stderr and exit status 1).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    ("dataset", "coco"): ("pipelines.coco_to_tfrecord", "run"),
    ("dataset", "masks"): ("pipelines.masks_to_tfrecord", "run"),
    ("train",): ("segmodel.train", "main"),
    ("evaluate",): ("segmodel.evaluate", "main"),
    ("segment",): ("pipelines.batch_segment", "run"),
    ("report",): ("pipelines.report", "main"),
    ("demo",): ("pipelines.demo", "main"),
}


def main(argv=None) -> int:
    import os
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] == "--verbose"
    if verbose:
        argv = argv[1:]
    # Read by TensorFlow's C++ logging when TensorFlow loads: 3 hides its INFO/WARNING/ERROR lines
    # (CPU-instruction and CUDA start-up notices), 0 shows them all.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")
    for words, (module, function) in COMMANDS.items():
        if tuple(argv[:len(words)]) == words:
            import logging
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
            command = "segpipe " + " ".join(words)
            sys.argv[0] = command  # so --help names the command as typed
            try:
                getattr(importlib.import_module(module), function)(argv[len(words):])
            except (OSError, ValueError, KeyError) as error:
                # A missing file, an unreadable model folder, a malformed document: one line, no
                # traceback (--verbose shows it). Bad flags already exit through argparse.
                if verbose:
                    raise
                print(f"{command}: {type(error).__name__}: {error}", file=sys.stderr)
                return 1
            return 0
    print(__doc__.strip())
    if argv and argv[0] not in ("-h", "--help", "help"):
        print(f"\nsegpipe: unknown command {' '.join(argv[:2])!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
