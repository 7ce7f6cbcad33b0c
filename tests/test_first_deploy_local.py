"""The first ``pulumi up``, run here: the real ``tritonserver`` started with the rendered Triton Deployment's own
command, args, environment and probe paths, against ``moto_server`` S3 holding exactly the objects the stack puts in
its bucket (``bucket-objects.json``), through the first-deploy sequence: empty bucket → the pod live (the startup
and liveness probes pass, so nothing restarts it) and unready → the model published → Ready within the poll
period → the ALB health check (the path the controller reads from the Service or Ingress annotation) answers 200
only then.

Nothing here is retyped from ``infra``: every path, flag and key comes from the rendered stack. What cannot run on
this machine is replaced, flag by flag, in :func:`local_command` (which says why for each).
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton (the bundled tritonserver) is not installed: "
                                       "pip install -e '.[serving]'")

from gpufleet.contracts.profile import read_profile  # noqa: E402
from infra.preview import bucket_objects, manifests, preview  # noqa: E402
from infra.program import load_plan  # noqa: E402
from infra.settings import settings_from_config, stack_file_config  # noqa: E402
from serving.local import bundled_server  # noqa: E402
from serving.repository import parse_s3_url, upload_repository  # noqa: E402
from serving.standin import StandIn  # noqa: E402

from .alb_eval import target_group_services, target_group_setting  # noqa: E402
from gpufleet.net import free_ports  # noqa: E402

from .conftest import fresh_bucket  # noqa: E402

# The shortened poll period (the manifest's is 30 s) and what a Python-backend stand-in takes to load on two shared
# cores after Triton has seen it; both bound the test, neither is a claim about speed.
LOCAL_POLL_S = 2
MODEL_LOAD_S = 20
# The empty phase is watched over this many poll periods: Triton polls the empty repository and stays as it was.
EMPTY_POLLS = 3
SAMPLE_S = 0.25
LOCAL_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def rendered():
    settings = settings_from_config(stack_file_config("dev"), "dev")
    plan = load_plan(settings)
    records = preview(settings, plan)
    return plan, manifests(records), bucket_objects(records)


def triton_deployment(objs: list[dict]) -> dict:
    (dep,) = [m for m in objs if m["kind"] == "Deployment"
              and m["spec"]["template"]["metadata"]["labels"].get("track") == "stable"
              and m["spec"]["template"]["spec"]["containers"][0]["name"] == "tritonserver"]
    return dep


def local_command(container: dict, server_dir: Path, s3_endpoint: str) -> tuple[list[str], dict[str, int]]:
    """The container's command and args as the pod runs them, with only what cannot run here replaced:

    - ``command``'s ``tritonserver`` → the same program from PyTriton's bundle (Triton 2.51, the image's is 2.54;
      the S3 file system and the repository manager this exercises are the same code in both: see infra.triton);
    - ``--model-repository=s3://BUCKET/KEY`` → ``s3://http://127.0.0.1:PORT/BUCKET/KEY``: the same bucket and key,
      with moto as the endpoint (Triton's own endpoint form, core src/filesystem/implementations/s3.h);
    - ``--http-port``/``--grpc-port``/``--metrics-port`` → free loopback ports, plus ``--*-address=127.0.0.1``: a pod
      owns its network namespace, a test shares the machine;
    - ``--repository-poll-secs`` → :data:`LOCAL_POLL_S`, to keep the test short;
    - added ``--backend-directory``: the bundle's Python backend (the image's default folder does not exist here).

    Every other flag stays as rendered. Returns the command and the port each named container port got."""
    ports = dict(zip((p["name"] for p in container["ports"]), free_ports(len(container["ports"]))))
    flag_port = {"--http-port": "http", "--grpc-port": "grpc", "--metrics-port": "metrics"}
    args = []
    for arg in container["args"]:
        flag, _, value = arg.partition("=")
        if flag == "--model-repository":
            args.append(f"{flag}=s3://{s3_endpoint}/{value.removeprefix('s3://')}")
        elif flag in flag_port:
            # The flag binds the container port the probes name: checked, so the mapping is the manifest's own.
            (declared,) = [p["containerPort"] for p in container["ports"] if p["name"] == flag_port[flag]]
            assert int(value) == declared, f"{arg} but the container declares {flag_port[flag]}={declared}"
            args.append(f"{flag}={ports[flag_port[flag]]}")
        elif flag == "--repository-poll-secs":
            args.append(f"{flag}={LOCAL_POLL_S}")
        else:
            args.append(arg)
    assert container["command"] == ["tritonserver"]
    addresses = [f"--{k}-address=127.0.0.1" for k in ("http", "grpc", "metrics")]
    return [str(server_dir / "bin" / "tritonserver"), *args, *addresses,
            f"--backend-directory={server_dir / 'backends'}"], ports


def http_status(port: int, path: str) -> int | None:
    """What a kubelet httpGet probe or an ALB health check sees: the status code, or None for no answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def alb_healthy(code: int | None, success_codes: str) -> bool:
    """An ALB target group's matcher: a code, a list ("200,202") or a range ("200-299")."""
    for part in success_codes.split(","):
        low, _, high = part.partition("-")
        if code is not None and int(low) <= code <= int(high or low):
            return True
    return False


def probe_passes(code: int | None) -> bool:
    """Kubernetes' httpGet probe: 200 <= code < 400 passes (pkg/probe/http)."""
    return code is not None and 200 <= code < 400


def test_first_deploy_empty_bucket_goes_live_unready_then_ready_once_published(rendered, moto_endpoint, aws_env,
                                                                               tmp_path):
    import boto3

    plan, objs, objects = rendered
    dep = triton_deployment(objs)
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port_of = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert all(p["httpGet"]["port"] in port_of for p in probe.values())
    # The ALB health check of the pod's target group, as the controller reads it (tests/alb_eval.py).
    (service,) = target_group_services(objs, dep["metadata"]["namespace"], pod["metadata"]["labels"])
    health_path = target_group_setting(objs, service, "healthcheck-path")
    success_codes = target_group_setting(objs, service, "success-codes")
    (repo_url,) = [a.partition("=")[2] for a in container["args"] if a.startswith("--model-repository=")]
    bucket, prefix = parse_s3_url(repo_url)

    # The bucket as `pulumi up` leaves it: created, holding only the objects the stack puts there.
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    for b in {o["bucket"] for o in objects} | {bucket}:
        fresh_bucket(moto_endpoint, b)  # the moto_server is shared: another test may have used the same name
    for o in objects:
        s3.put_object(Bucket=o["bucket"], Key=o["key"], Body=b"")

    work = Path(tempfile.mkdtemp(prefix="gpufleet-firstdeploy-", dir=tmp_path))
    server_dir, env = bundled_server(work / "server")
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    # IRSA gives the pod credentials; moto takes any.
    env.update(LOCAL_AWS)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(key, None)
    command, ports = local_command(container, server_dir, moto_endpoint)
    at = {k: ports[p["httpGet"]["port"]] for k, p in probe.items()}
    log = open(work / "tritonserver.log", "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def state():
            assert proc.poll() is None, f"tritonserver exited with {proc.returncode}"
            return {k: http_status(at[k], p["httpGet"]["path"]) for k, p in probe.items()} | {
                "alb": http_status(ports["http"], health_path)}

        # 1. Empty repository: the startup probe passes within its budget (bounded here), so the kubelet would
        #    never restart the pod for failing it.
        start = probe["startupProbe"]
        budget = min(start["periodSeconds"] * start["failureThreshold"], 30)
        t0 = time.monotonic()
        while not probe_passes(state()["startupProbe"]):
            assert time.monotonic() - t0 < budget, (
                f"startup probe {start['httpGet']['path']} never passed within {budget} s on the stack's empty "
                f"bucket (objects: {objects}); last: {state()}; log: {_tail(work)}")
            time.sleep(SAMPLE_S)

        # 2. While the repository stays empty, over several polls: alive (no liveness restart), not ready (no
        #    traffic: not in the Service's endpoints, an unhealthy ALB target).
        until = time.monotonic() + EMPTY_POLLS * LOCAL_POLL_S
        while time.monotonic() < until:
            s = state()
            assert probe_passes(s["livenessProbe"]), f"liveness failed on an empty repository: {s}"
            assert not probe_passes(s["readinessProbe"]), f"ready with no model: {s}"
            assert not alb_healthy(s["alb"], success_codes), \
                f"ALB health check {health_path} healthy with no model: {s}"
            time.sleep(SAMPLE_S)

        # 3. Publish the model as an operator would (`serving upload`), to the Deployment's repository URL.
        deployment = next(d for d in plan.deployments if repo_url.endswith(f"/{d.model}/{d.gpu}"))
        profile = read_profile(resources.files("planner.data").joinpath(
            f"profiles/{deployment.model}-{deployment.gpu}.json"))
        local_repo = work / "repo"
        StandIn(deployment.model, profile).write(local_repo, deployment.triton)
        upload_repository(local_repo, repo_url, s3)
        published = time.monotonic()

        # 4. Ready within two poll periods (and the stand-in's load); the ALB health check healthy only then.
        deadline = published + 2 * LOCAL_POLL_S + MODEL_LOAD_S
        while True:
            s = state()
            assert probe_passes(s["livenessProbe"]), f"liveness failed while the model loaded: {s}"
            if probe_passes(s["readinessProbe"]):
                break
            assert not alb_healthy(s["alb"], success_codes), \
                f"ALB health check {health_path} healthy before readiness: {s}"
            assert time.monotonic() < deadline, (f"not ready {deadline - published:.0f} s after publishing to "
                                                 f"{repo_url}: {s}; log: {_tail(work)}")
            time.sleep(SAMPLE_S)
        assert alb_healthy(http_status(ports["http"], health_path), success_codes)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:  # the Python-backend stubs share its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


def _tail(work: Path) -> str:
    lines = (work / "tritonserver.log").read_text(errors="replace").splitlines()
    return " | ".join(ln for ln in lines if ln[:1] == "E")[-600:] or (lines[-1] if lines else "empty log")
