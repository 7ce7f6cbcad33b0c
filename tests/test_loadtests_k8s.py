"""Distributed stress runs in a cluster: the manifests are valid Kubernetes objects, bounded and unprivileged."""
import shlex

import yaml


from loadtests.cli import main as loadtests_main  # noqa: E402
from gpufleet.kubernetes import validate_manifest  # noqa: E402
from loadtests.settings import SETTINGS_ARG, StressSettings  # noqa: E402


def emit(tmp_path, *extra):
    out = tmp_path / "stress.yaml"
    code = loadtests_main(["run", "--model", "detector", "--host", "http://triton-detector.prod.svc:8000",
                           "--rates", "1000,2000,4000", "--step-duration", "60", "--warmup", "30", "--workers", "6",
                           "--image", "registry.example/gpufleet-loadtests:0.1", "--emit-k8s", str(out), *extra])
    return code, out


def test_manifests_validate_strictly_against_the_pinned_version(tmp_path):
    code, out = emit(tmp_path)
    assert code == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Service", "Job", "Job"]
    assert [validate_manifest(d) for d in docs] == [None] * 4


def test_master_and_workers_are_wired_and_bounded(tmp_path):
    _, out = emit(tmp_path)
    pvc, svc, master, workers = yaml.safe_load_all(out.read_text())
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] == 6
    m_cmd = master["spec"]["template"]["spec"]["containers"][0]["command"][2]
    w_cmd = workers["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "'--master'" in m_cmd and "'--expect-workers' '6'" in m_cmd
    # The master carries the whole settings object, the one the CLI built, with its output in the results volume.
    args = shlex.split(m_cmd)
    settings = StressSettings.model_validate_json(args[args.index(SETTINGS_ARG) + 1])
    assert [(p.rate, p.duration_s, p.warmup) for p in settings.shape.plan()] == [
        (1000, 30, True), (1000, 60, False), (2000, 60, False), (4000, 60, False)]
    assert settings.workers == 6 and str(settings.result_path) == "/results/run.stress.json"
    assert SETTINGS_ARG not in w_cmd  # workers take the settings from the master
    assert f"'--master-host' '{svc['metadata']['name']}.loadtests.svc'" in w_cmd
    assert svc["spec"]["selector"] == master["spec"]["template"]["metadata"]["labels"]
    # bounded: the schedule (210 s) + request timeout + slack, never open-ended
    for job in (master, workers):
        deadline = job["spec"]["activeDeadlineSeconds"]
        assert 210 < deadline < 600 and job["spec"]["backoffLimit"] == 0
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
        assert c["resources"]["limits"]["memory"]


def test_emit_needs_an_image_and_workers(tmp_path, capsys):
    out = tmp_path / "x.yaml"
    assert loadtests_main(["run", "--model", "m", "--rates", "10", "--workers", "2", "--emit-k8s", str(out)]) == 2
    assert "--image" in capsys.readouterr().err
    assert loadtests_main(["run", "--model", "m", "--rates", "10", "--image", "i", "--emit-k8s", str(out)]) == 2
    assert "--workers >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_name_that_cannot_name_kubernetes_objects_is_refused(tmp_path, capsys):
    code, out = emit(tmp_path, "--name", "Run_1")
    assert code == 2 and not out.exists()
    assert "--name 'Run_1'" in capsys.readouterr().err
