"""What every dataset job does around its own pipeline, in one place: the settings checked into
one line, the output folder refused when the inputs would read it back, prepared (a stale run's
leftovers removed, an existing dataset kept unless --overwrite), the pipeline built and run,
and the run's one-line summary, failing when no image was written."""
from __future__ import annotations

import time

from pipelines.common.runner import make_pipeline, run_and_summarize
from pipelines.dataset.commit import prepare_output_dir
from pipelines.dataset.writer import refuse_output_among_inputs


def checked_config(command: str, make):
    """``make()``, the job's settings; their problems as one line naming the command."""
    try:
        return make()
    except ValueError as e:
        raise SystemExit(f"{command}: {e}") from None


def run_dataset_job(job: str, command: str, options: dict, beam_args, *, output_dir: str, inputs, split: str,
                    overwrite: bool, build, before_run=None, test_pipeline=None, save_main_session=True):
    """Guards and prepares ``output_dir``, calls ``before_run()`` (files the pipeline reads that
    belong in the output folder), builds the pipeline with ``build(p, description)`` (the
    manifest's description: the command and its options) and runs it to its summary."""
    refuse_output_among_inputs(job, output_dir, inputs, split)
    prepare_output_dir(output_dir, overwrite)
    if before_run is not None:
        before_run()
    started = time.time()
    p = make_pipeline(beam_args, test_pipeline, save_main_session)
    build(p, {"command": command, "options": options})
    return run_and_summarize(p, job, started, require=("images_written",), output_dir=output_dir)
