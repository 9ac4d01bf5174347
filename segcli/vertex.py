"""``segpipe vertex-train``: training submitted to Vertex AI as a CustomJob (the request:
``pipelines.vertex_train``). Everything after ``--`` is ``segpipe train``'s command line."""
from __future__ import annotations

import argparse
import dataclasses

DESCRIPTION = "Submit segpipe train to Vertex AI custom training (one or several machines)."


@dataclasses.dataclass(frozen=True, kw_only=True)
class VertexTrainConfig:
    project: str
    region: str
    # The training image (docker/Dockerfile.train: CUDA TensorFlow and segpipe, segpipe train as
    # its entry point), pushed to Artifact Registry.
    image: str
    train_args: tuple
    display_name: str = "segpipe-train"
    # One L4 per machine: FCN-8s at 512 px with batch 8 fits its 24 GB with mixed precision, and
    # g2-standard-8 is the smallest machine type that carries one.
    machine_type: str = "g2-standard-8"
    accelerator_type: str = "NVIDIA_L4"
    accelerator_count: int = 1
    # Machines: 1 trains on one machine (all its GPUs); more adds workers to the chief, and
    # Vertex AI sets TF_CONFIG on each (MultiWorkerMirroredStrategy, docs/model.md).
    replicas: int = 1
    service_account: str = ""
    # A run that is still going after a day is stuck or mis-sized; Vertex's own default is 7 days.
    timeout_hours: float = 24.0
    dry_run: bool = False

    def __post_init__(self):
        problems = []
        if self.replicas < 1 or self.accelerator_count < 0:
            problems.append("replicas must be at least 1 and accelerator_count at least 0")
        if self.timeout_hours <= 0:
            problems.append("timeout_hours must be positive")
        args = list(self.train_args)
        for flag in ("--train_data", "--model_dir"):
            if flag not in args or args.index(flag) + 1 >= len(args):
                problems.append(f"segpipe train's {flag} is missing after --")
            elif not args[args.index(flag) + 1].startswith("gs://"):
                problems.append(f"{flag} must be a gs:// path: Vertex AI's machines see only Cloud Storage")
        if problems:
            raise ValueError("; ".join(problems))


def make_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(VertexTrainConfig)}
    parser = argparse.ArgumentParser(prog="segpipe vertex-train", description=DESCRIPTION,
                                     usage="segpipe vertex-train --project P --region R --image URI [options] "
                                           "-- --train_data gs://... --model_dir gs://... [segpipe train flags]")
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True, help="e.g. us-central1")
    parser.add_argument("--image", required=True, help="the training image's URI (docker/Dockerfile.train)")
    parser.add_argument("--display_name", default=defaults["display_name"])
    parser.add_argument("--machine_type", default=defaults["machine_type"])
    parser.add_argument("--accelerator_type", default=defaults["accelerator_type"],
                        help="Vertex AI's name (NVIDIA_L4, NVIDIA_TESLA_T4, NVIDIA_A100_80GB, ...); with "
                             "--accelerator_count 0, none")
    parser.add_argument("--accelerator_count", type=int, default=defaults["accelerator_count"])
    parser.add_argument("--replicas", type=int, default=defaults["replicas"], help="machines (chief + workers)")
    parser.add_argument("--service_account", default="")
    parser.add_argument("--timeout_hours", type=float, default=defaults["timeout_hours"])
    parser.add_argument("--dry_run", action="store_true", help="print the CustomJob request; call nothing")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then segpipe train's flags")
    return parser
