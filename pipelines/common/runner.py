"""The plumbing every Beam job shares: making the pipeline (the runner choice), error records
and counters, progress lines, running to the end with a one-line summary."""
from __future__ import annotations

import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

LOG = logging.getLogger(__name__)
NAMESPACE = "segpipe"
ERRORS = "errors"
STATS = "stats"


def make_pipeline(beam_args, test_pipeline=None, save_main_session=True) -> beam.Pipeline:
    """A Pipeline from the flags the entry point did not know (or ``test_pipeline``, as given).

    The runner is chosen explicitly: without ``--runner`` (or with ``--runner FnApiRunner``) the
    job runs on Beam's in-process FnApiRunner, which honours ``--direct_num_workers`` and
    ``--direct_running_mode``. Beam's own default, the DirectRunner, first tries to download the
    Prism runner binary from GitHub, which on an offline machine costs a failed request and an
    error in the log; ``--runner DirectRunner`` still asks for it. Any other ``--runner``
    (``DataflowRunner``, ...) goes to Beam unchanged.
    """
    if test_pipeline is not None:
        return test_pipeline
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "FnApiRunner"):
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        options.view_as(StandardOptions).runner = None
        return beam.Pipeline(runner=fn_runner.FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def error_record(source: str, reason: str, detail: str = "", **extra) -> dict:
    record = {"source": source, "reason": reason}
    if detail:
        record["detail"] = detail
    record.update(extra)
    return record


def count(name: str, value: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(value)


class Progress:
    """Logs a line every ``every_s`` seconds of work in a worker: how many items it has done and
    at what rate (the job-wide totals are the Beam counters, shown by Dataflow's UI and in the
    summary line each job prints at the end)."""

    def __init__(self, what: str, every_s: float = 30.0):
        self.what, self.every_s = what, every_s
        self.done, self.started, self.last = 0, None, None

    def tick(self, n: int = 1) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = self.last = now
        self.done += n
        if now - self.last >= self.every_s:
            self.last = now
            LOG.info("%s: %d done in this worker (%.1f/s)", self.what, self.done,
                     self.done / max(now - self.started, 1e-9))


def run_and_summarize(p: beam.Pipeline, job: str, started: float, require=(), output_dir: str = ""):
    """Runs the pipeline to the end and prints the job's one-line summary; returns the result.

    ``require``: counters of which at least one must be above zero when the run finished (a run
    that wrote nothing, because every input was rejected or none matched, is a failure with one
    clear line, not an empty output that looks like a success). Not checked for runs that only
    build a job (templates, dry runs) and so have no counters. A storage failure in one of Beam's
    own writers (whose errors name no object) is reported with ``output_dir`` and the step."""
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as error:
        from pipelines.common.storage import StorageError, caused_by_storage
        if output_dir and "://" not in str(error) and caused_by_storage(error):
            raise StorageError(f"could not write under {output_dir}: {error}") from error
        raise
    counters = log_summary(job, result, started)
    options = p.options.get_all_options()
    built_only = bool(options.get("template_location") or options.get("dry_run"))
    if require and not built_only and not any(counters.get(name) for name in require):
        raise SystemExit(f"{job}: nothing was written ({', '.join(require)}: 0): every input was rejected or "
                         f"none matched; errors.jsonl and stats.json in the output folder say why")
    return result


def log_summary(job: str, result, started: float) -> dict:
    """Logs one line: the job's counters and elapsed time; returns the counters."""
    counters = {}
    try:
        for c in result.metrics().query()["counters"]:
            if c.key.metric.namespace == NAMESPACE:
                counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    except Exception:  # some runners (a dry run) have no metrics
        pass
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))
    LOG.info("%s finished in %.1fs: %s", job, time.time() - started, summary or "no counters")
    print(f"{job}: {summary or 'no counters'} ({time.time() - started:.1f}s)")
    return counters
