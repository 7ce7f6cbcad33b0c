"""Triton model repositories: config.pbtxt from a plan, parsed by Triton's protobuf schema, uploaded to S3."""
import pytest

import tritonclient  # noqa: E402,F401 (a [test] dependency: a broken install fails here, never skips)

from planner.recommend import RecommendRequest, recommend  # noqa: E402
from serving.cli import main as serving_main  # noqa: E402
from tests.cli_run import run_cli  # noqa: E402
from serving.demo_models import write_onnx  # noqa: E402
from serving.repository import RepositoryError, upload_repository, write_model  # noqa: E402
from gpufleet.contracts.triton import BatchingConfig  # noqa: E402
from serving.triton_config import (  # noqa: E402
    ConfigError, ModelSpec, TensorSpec, onnx_tensors, parse_config, render_config)


@pytest.fixture(scope="module")
def plan():
    return recommend(RecommendRequest(qps=3000, p99_ms=50))


def test_config_from_a_plan_carries_its_batching_and_parses_with_tritons_schema(plan):
    dep = plan.deployments[0]
    spec = ModelSpec("resnet50", "onnxruntime_onnx", (TensorSpec("input", "float32", (3, 224, 224)),),
                     (TensorSpec("logits", "float32", (1000,)),), dep.triton,
                     warmup_batch_sizes=(1, dep.triton.max_batch_size))
    cfg = parse_config(render_config(spec))
    assert cfg.platform == "onnxruntime_onnx" and cfg.name == "resnet50"
    assert cfg.max_batch_size == dep.triton.max_batch_size
    assert cfg.dynamic_batching.max_queue_delay_microseconds == dep.triton.max_queue_delay_microseconds
    assert list(cfg.dynamic_batching.preferred_batch_size) == sorted(dep.triton.preferred_batch_sizes)
    (group,) = cfg.instance_group
    assert group.count == dep.triton.instance_count and group.kind == group.KIND_GPU
    assert [w.batch_size for w in cfg.model_warmup] == sorted({1, dep.triton.max_batch_size})
    assert list(cfg.input[0].dims) == [3, 224, 224]
    assert cfg.model_warmup[0].inputs["input"].random_data


def test_tensorrt_platform_and_settings_that_contradict_each_other():
    io = ((TensorSpec("images", "float16", (3, 640, 640)),), (TensorSpec("output0", "float16", (84, 8400)),))
    text = render_config(ModelSpec("det", "tensorrt_plan", *io, BatchingConfig(max_batch_size=16, max_queue_delay_microseconds=500, preferred_batch_sizes=(8, 16))))
    assert 'platform: "tensorrt_plan"' in text and "TYPE_FP16" in text
    with pytest.raises(ValueError, match=r"must lie in 1..max_batch_size=8"):
        BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=0, preferred_batch_sizes=(16,))
    with pytest.raises(ConfigError, match="warm-up batch size"):
        render_config(ModelSpec("det", "tensorrt_plan", *io, BatchingConfig(max_batch_size=8), warmup_batch_sizes=(9,)))


@pytest.mark.parametrize("text,needle", [
    ('name: "m" platform: "onnxruntime_onnx" max_batch_size: 4 dynamic_batching { preferred_batch_size: 8 }',
     "exceeds max_batch_size"),
    ('name: "m" platform: "onnxruntime_onnx" max_batch_sise: 4', "max_batch_sise"),
    ('platform: "onnxruntime_onnx"', "no model name"),
    ('name: "m" instance_group [{ kind: KIND_TPU }]', "KIND_TPU"),
])
def test_hand_written_configs_are_checked(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config(text)


def test_layout_and_new_version_keeps_old_ones(tmp_path):
    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    inputs, outputs = onnx_tensors(model)
    assert inputs == (TensorSpec("input", "float32", (3, 32, 32)),)
    spec = ModelSpec("tiny", "onnxruntime_onnx", inputs, outputs, BatchingConfig(max_batch_size=8))
    write_model(tmp_path / "repo", spec, model, version=1)
    write_model(tmp_path / "repo", spec, model, version=2)
    files = sorted(p.relative_to(tmp_path / "repo").as_posix() for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert files == ["tiny/1/model.onnx", "tiny/2/model.onnx", "tiny/config.pbtxt"]
    with pytest.raises(RepositoryError, match="not found"):
        write_model(tmp_path / "repo", spec, tmp_path / "missing.onnx")
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_upload_to_s3_puts_configs_last(tmp_path, moto_endpoint, aws_env):
    import boto3

    model = tmp_path / "tiny.onnx"
    write_onnx("tiny", model)
    spec = ModelSpec("tiny", "onnxruntime_onnx", *onnx_tensors(model), BatchingConfig(max_batch_size=8))
    write_model(tmp_path / "repo", spec, model)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="models")
    keys = upload_repository(tmp_path / "repo", "s3://models/prod/L4", s3)
    assert keys == ["prod/L4/tiny/1/model.onnx", "prod/L4/tiny/config.pbtxt"]
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="models", Prefix="prod/L4/")["Contents"])
    assert listed == sorted(keys)
    body = s3.get_object(Bucket="models", Key="prod/L4/tiny/config.pbtxt")["Body"].read().decode()
    assert parse_config(body).name == "tiny"
    with pytest.raises(RepositoryError, match="failed"):
        upload_repository(tmp_path / "repo", "s3://no-such-bucket/x", s3)


def test_repo_cli_from_a_plan_file_and_upload(tmp_path, moto_endpoint, aws_env, capsys):
    import boto3

    from planner.cli import main as planner_main

    plan = tmp_path / "plan.json"
    # The repository holds the plan's model under its name (the name the stack serves it by): plan resnet50.
    assert planner_main(["recommend", "--qps", "2000", "--gpu", "L4", "--model", "resnet50", "--format", "json",
                         "--output", str(plan)]) == 0
    model = tmp_path / "resnet50.onnx"
    write_onnx("tiny", model)
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="repo-cli")
    assert serving_main(["repo", str(model), str(tmp_path / "repo"), "--plan", str(plan), "--upload",
                         "s3://repo-cli/L4", "--endpoint-url", moto_endpoint]) == 0
    assert "uploaded 2 files" in capsys.readouterr().out
    cfg = parse_config((tmp_path / "repo/resnet50/config.pbtxt").read_text())
    from gpufleet.contracts.plan import read_plan
    assert cfg.max_batch_size == read_plan(plan).deployments[0].triton.max_batch_size


@pytest.mark.parametrize("extra,needle", [
    (["--plan", "PLAN", "--gpu", "H100"], "no deployment for GPU 'H100'"),
    (["--plan", "PLAN", "--max-batch-size", "4"], "--plan sets the batching"),
    (["--max-batch-size", "4", "--preferred-batch-sizes", "8"], "must lie in 1..max_batch_size=4"),
])
def test_repo_cli_bad_input(extra, needle, tmp_path, capsys):
    from planner.cli import main as planner_main

    plan = tmp_path / "plan.json"
    assert planner_main(["recommend", "--qps", "2000", "--gpu", "L4", "--format", "json", "--output", str(plan)]) == 0
    model = tmp_path / "m.onnx"
    write_onnx("tiny", model)
    argv = ["repo", str(model), str(tmp_path / "repo")] + [str(plan) if a == "PLAN" else a for a in extra]
    assert serving_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "repo" / "m").exists()


def test_repo_from_a_plan_names_the_model_as_the_plan_does(tmp_path):
    """The stack's pods load the repository at <env>/<model>/<gpu> and are asked for /v2/models/<model>: a repository
    made from a plan holds the plan's model under that name, whatever the file is called (issue 24, defect 11)."""

    from infra.settings import ROOT

    plan = ROOT / "infra" / "plans" / "dev.plan.json"
    from gpufleet.contracts.plan import read_plan
    (dep,) = read_plan(plan).deployments
    model = tmp_path / "model.onnx"
    write_onnx("tiny", model)
    run = run_cli("serving", ["repo", str(model), str(tmp_path / "repo"), "--plan", str(plan), "--gpu", dep.gpu])
    assert run.returncode == 0, run.stderr
    assert [p.name for p in (tmp_path / "repo").iterdir()] == [dep.model]
    cfg = parse_config((tmp_path / "repo" / dep.model / "config.pbtxt").read_text())
    assert cfg.name == dep.model


def test_repo_refuses_a_name_the_plan_does_not_serve(tmp_path):
    from infra.settings import ROOT

    plan = ROOT / "infra" / "plans" / "dev.plan.json"
    model = tmp_path / "model.onnx"
    write_onnx("tiny", model)
    run = run_cli("serving", ["repo", str(model), str(tmp_path / "repo"), "--plan", str(plan), "--name",
                              "somethingelse"])
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "somethingelse" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_repo_cli_says_when_a_file_is_published_under_the_plans_model_name(tmp_path):
    """`serving repo det.onnx repo2/ --plan <a plan for resnet50>`: the file goes in as the plan's model (the name the
    stack serves); a file named for another model is worth one line saying so, with the option that confirms it."""

    from planner.cli import main as planner_main

    plan = tmp_path / "plan.json"
    assert planner_main(["recommend", "--qps", "2000", "--gpu", "L4", "--model", "resnet50", "--format", "json",
                         "--output", str(plan)]) == 0
    write_onnx("tiny", tmp_path / "det.onnx")
    run = run_cli("serving", ["repo", "det.onnx", "repo2/", "--plan", str(plan)], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "det.onnx" in line and "'resnet50'" in line and "--name resnet50" in line, line
    named = run_cli("serving", ["repo", "det.onnx", "repo3/", "--plan", str(plan), "--name", "resnet50"],
                    cwd=tmp_path)
    assert named.returncode == 0 and named.stderr == "", named.stderr
