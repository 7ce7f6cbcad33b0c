"""Kubernetes manifests for a distributed stress run: a Locust master Job, N worker Jobs' pods, and the Service
that joins them, for rates beyond one machine.

The run is the same as ``loadtests run --workers N`` on one machine: the master takes the stress-run settings and
writes the stress-result JSON to a PersistentVolumeClaim; workers only name the master. Every pod is bounded
(``activeDeadlineSeconds`` from the schedule's length), runs as non-root with a read-only root filesystem, and is
cleaned up after an hour (``ttlSecondsAfterFinished``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from loadtests.errors import LoadTestInputError
from loadtests.run import locust_command, worker_command
from loadtests.settings import StressSettings

MASTER_PORT = 5557
# A Service's name is a DNS-1035 label (at most 63 characters); the longest suffix added to the run's name is
# "-workers".
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME_LENGTH = 63 - len("-workers")
RESULTS_MOUNT = "/results"
# Pods are given this long beyond the run's own bound to be scheduled, pull the image and start.
POD_START_SLACK_S = 120
# The locustfile is addressed by the installed module's path, whatever the image's site-packages is.
_LOCUSTFILE = '"$(python -c "import loadtests.locustfile as m; print(m.__file__)")"'


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _security() -> dict:
    return {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _pod(name: str, role: str, image: str, script: str, deadline_s: int, volumes: list, mounts: list,
         cpu: str, memory: str) -> dict:
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": role}},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline_s,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": f"locust-{role}", "image": image, "command": ["sh", "-c", script],
                "env": [{"name": "HOME", "value": "/tmp"}],
                **({"ports": [{"name": "locust-master", "containerPort": MASTER_PORT}]} if role == "master" else {}),
                "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
                "securityContext": _security(),
                "volumeMounts": mounts + [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": volumes + [{"name": "tmp", "emptyDir": {}}],
        },
    }


def distributed_manifests(settings: StressSettings, image: str, namespace: str = "loadtests",
                          cpu: str = "1", memory: str = "1Gi", results_storage: str = "1Gi",
                          storage_class: str | None = None) -> list[dict]:
    """PVC, Service, master Job and worker Job for ``settings`` (its ``workers`` must be >= 1), named after the run."""
    if settings.workers < 1:
        raise LoadTestInputError("a distributed run needs --workers >= 1")
    if not image:
        raise LoadTestInputError("give the container image that has gpufleet[loadtests] installed (--image)")
    name = settings.name
    if not _DNS_LABEL.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise LoadTestInputError(f"--name {name!r}: in a cluster the run's name prefixes Kubernetes objects; use "
                                 f"lower-case letters, digits and '-', starting with a letter, at most "
                                 f"{MAX_NAME_LENGTH} characters")
    deadline = int(math.ceil(settings.bound_s() + POD_START_SLACK_S))
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "gpufleet"}

    def meta(object_name: str, component: str) -> dict:
        return {"name": object_name, "namespace": namespace,
                "labels": {**labels, "app.kubernetes.io/component": component}}

    def job(pod: dict, count: int) -> dict:
        return {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600, "activeDeadlineSeconds": deadline,
                "parallelism": count, "completions": count, "template": pod}

    def script(command: list[str]) -> str:
        # drop "<python> -m locust -f <path>": the path is the image's, found at start
        return "exec python -m locust -f " + _LOCUSTFILE + " " + " ".join(_quote(a) for a in command[5:])

    in_pod = settings.model_copy(update={"out": Path(RESULTS_MOUNT)})
    master_script = script(locust_command(in_pod, MASTER_PORT, bind_host=None))
    worker_script = script(worker_command(in_pod, MASTER_PORT, f"{name}-master.{namespace}.svc"))
    results = [{"name": "results", "persistentVolumeClaim": {"claimName": f"{name}-results"}}]
    pvc_spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": results_storage}}}
    if storage_class:
        pvc_spec["storageClassName"] = storage_class
    return [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(f"{name}-results", "results"),
         "spec": pvc_spec},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(f"{name}-master", "master"),
         "spec": {"selector": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "master"},
                  "ports": [{"name": "locust-master", "port": MASTER_PORT, "targetPort": MASTER_PORT}]}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"{name}-master", "master"),
         "spec": job(_pod(name, "master", image, master_script, deadline, results,
                          [{"name": "results", "mountPath": RESULTS_MOUNT}], cpu, memory), 1)},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"{name}-workers", "worker"),
         "spec": job(_pod(name, "worker", image, worker_script, deadline, [], [], cpu, memory), settings.workers)},
    ]


def to_yaml(manifests: list[dict]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(m, sort_keys=False) for m in manifests)
