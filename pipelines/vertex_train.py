"""``segpipe vertex-train``: ``segpipe train`` as a Vertex AI CustomJob, built with Google's own
client library (google-cloud-aiplatform, ``aiplatform_v1``).

    segpipe vertex-train --project P --region us-central1 \\
        --image us-central1-docker.pkg.dev/P/REPO/segpipe-train:0.1.0 [--replicas 2] [--dry_run] \\
        -- --train_data gs://B/data/camvid/train --val_data gs://B/data/camvid/val \\
           --model_dir gs://B/models/camvid --config camvid

The job has one worker pool (the chief) and, with ``--replicas N > 1``, a second of N - 1
workers; every machine runs the image's entry point (``segpipe train``) with the same arguments,
and Vertex AI sets TF_CONFIG on each, which ``segmodel.train`` reads (MultiWorkerMirroredStrategy;
the chief writes the model). ``--dry_run`` prints the request as JSON and calls nothing.
"""
from __future__ import annotations

import json
import sys

from segcli.vertex import VertexTrainConfig, make_parser


def custom_job(config: VertexTrainConfig):
    """The CustomJob request (aiplatform_v1.CustomJob) for ``config``."""
    from google.cloud import aiplatform_v1 as vertex
    from google.protobuf import duration_pb2
    machine = vertex.MachineSpec(machine_type=config.machine_type)
    if config.accelerator_count:
        machine.accelerator_type = vertex.AcceleratorType[config.accelerator_type]
        machine.accelerator_count = config.accelerator_count
    container = vertex.ContainerSpec(image_uri=config.image, args=list(config.train_args))

    def pool(replicas: int):
        return vertex.WorkerPoolSpec(machine_spec=machine, replica_count=replicas, container_spec=container)

    pools = [pool(1)] + ([pool(config.replicas - 1)] if config.replicas > 1 else [])
    spec = vertex.CustomJobSpec(worker_pool_specs=pools, scheduling=vertex.Scheduling(
        timeout=duration_pb2.Duration(seconds=int(config.timeout_hours * 3600))))
    if config.service_account:
        spec.service_account = config.service_account
    return vertex.CustomJob(display_name=config.display_name, job_spec=spec)


def submit(config: VertexTrainConfig, job):
    from google.cloud import aiplatform_v1 as vertex
    client = vertex.JobServiceClient(client_options={"api_endpoint": f"{config.region}-aiplatform.googleapis.com"})
    return client.create_custom_job(parent=f"projects/{config.project}/locations/{config.region}", custom_job=job)


def main(argv=None):
    args = make_parser().parse_args(argv)
    train_args = tuple(a for k, a in enumerate(args.train_args) if not (k == 0 and a == "--"))
    options = {k: v for k, v in vars(args).items() if k != "train_args"}
    try:
        config = VertexTrainConfig(**options, train_args=train_args)
        if config.accelerator_count:
            from google.cloud import aiplatform_v1 as vertex
            if config.accelerator_type not in vertex.AcceleratorType.__members__:
                raise ValueError(f"accelerator_type {config.accelerator_type!r} is not one of Vertex AI's "
                                 f"({', '.join(n for n in vertex.AcceleratorType.__members__ if n != 'ACCELERATOR_TYPE_UNSPECIFIED')})")
    except ValueError as e:
        raise SystemExit(f"segpipe vertex-train: {e}") from None
    job = custom_job(config)
    request = {"parent": f"projects/{config.project}/locations/{config.region}",
               "custom_job": json.loads(type(job).to_json(job, use_integers_for_enums=False,
                                                         always_print_fields_with_no_presence=False))}
    if config.dry_run:
        print(json.dumps(request, indent=2))
        return request
    created = submit(config, job)
    print(f"segpipe vertex-train: {created.name} ({created.state.name}); "
          f"https://console.cloud.google.com/vertex-ai/training/custom-jobs?project={config.project}")
    return created


if __name__ == "__main__":
    main(sys.argv[1:])
