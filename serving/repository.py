"""Triton model repositories: lay out ``<model>/config.pbtxt`` and ``<model>/<version>/<file>``, and upload to S3.

One repository per GPU pool: the plan's Triton settings differ per GPU type, and TensorRT engines are built per GPU
architecture, so each Deployment points at ``s3://<bucket>/<prefix>/<gpu>/``.
"""
from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gpufleet.contracts.io import write_atomic
from serving.errors import ServingInputError
from serving.triton_config import (
    DEFAULT_MODEL_FILENAME,
    ModelSpec,
    parse_config,
    render_config,
)


class RepositoryError(ServingInputError):
    """A repository that cannot be written or uploaded; one line naming what and where."""


@dataclass(frozen=True)
class ModelEntry:
    """Where one model landed in a repository."""

    config_path: Path
    version_dir: Path


def python_model_source() -> str:
    """The Python-backend ``model.py`` that serves ``model.onnx`` on ONNX Runtime (for the local Triton)."""
    return resources.files("serving.templates").joinpath("onnxruntime_python_model.py").read_text()


def local_batching(root: Path | str, name: str):
    """The batching of model ``name`` in ``root`` when a local Triton serves it (``serving local`` wrote it: its
    config says ``backend: "python"``, which a production repository from ``serving repo`` never does, those naming
    a ``platform``); None for a new model or a production one. A new version of a local model must keep that form:
    the bundled ``tritonserver`` has only the Python backend."""
    from google.protobuf import json_format

    from gpufleet.triton import batching_of

    config = Path(root) / name / "config.pbtxt"
    if not config.is_file():
        return None
    cfg = parse_config(config.read_text(), str(config))
    if cfg.backend != "python":
        return None
    batching = batching_of(json_format.MessageToDict(cfg, preserving_proto_field_name=True))
    if batching is None:
        raise RepositoryError(f"{config}: no batching settings to keep; give --max-batch-size")
    return batching


def write_model(root: Path | str, spec: ModelSpec, model_file: Path | str, version: int = 1) -> ModelEntry:
    """Write ``spec``'s config and copy ``model_file`` into ``root/<name>/<version>/`` (:func:`publish_version`).

    For ``platform == "python"`` the model file must be ONNX: it is copied as ``model.onnx`` beside the generated
    ``model.py``.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise RepositoryError(f"{model_file}: model file not found")
    text = render_config(spec)
    parse_config(text, f"{spec.name}/config.pbtxt")
    staging = _staging_dir(Path(tempfile.gettempdir()), f".{spec.name}.files.")
    try:
        if spec.platform == "python":
            shutil.copyfile(model_file, staging / "model.onnx")
            (staging / "model.py").write_text(python_model_source())
        else:
            shutil.copyfile(model_file, staging / DEFAULT_MODEL_FILENAME[spec.platform])
        return publish_version(root, spec.name, text, staging, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_version(root: Path | str, name: str, config_text: str, files: Path, version: int) -> ModelEntry:
    """Make the files in ``files`` version ``version`` of model ``name`` in the repository at ``root``, and
    ``config_text`` its ``config.pbtxt``, so that a Triton polling the repository never sees a half-written model.

    A new model is built in a hidden sibling and renamed into place. For a model already served, the version is
    staged in a hidden folder inside the model (Triton reads only numeric version folders) and renamed to its number,
    and the config is replaced atomically, after the version and only if it changed (a config change reloads every
    version). The versions already there stay; with the config's ``latest { num_versions: 1 }`` policy, Triton loads
    the new version while the old one serves and unloads the old one once the new one is ready. Re-publishing an
    existing number replaces it, which is a reload of that version, not a switch: publish a new number to roll out.
    """
    root = Path(root)
    if version < 1:
        raise RepositoryError(f"model version {version}: must be >= 1")
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if not final.exists():
        staging = _staging_dir(root, f".{name}.")
        try:
            shutil.copytree(files, staging / str(version))
            (staging / "config.pbtxt").write_text(config_text)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ModelEntry(final / "config.pbtxt", final / str(version))
    staging = _staging_dir(final, f".{version}.")
    replaced = final / f".{version}.replaced"
    try:
        shutil.copytree(files, staging, dirs_exist_ok=True)
        target = final / str(version)
        if target.exists():
            target.rename(replaced)
        staging.rename(target)
        config = final / "config.pbtxt"
        if not config.is_file() or config.read_text() != config_text:
            write_atomic(config, config_text)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    return ModelEntry(final / "config.pbtxt", final / str(version))


def _staging_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder named ``prefix`` + a random tail, made with the user's umask. Not ``mkdtemp``: its folders
    are 0700, and ``copytree`` carries a folder's mode on to the version folder Triton (or a colleague) reads."""
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def parse_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or len(url) <= 5:
        raise RepositoryError(f"{url}: not an s3://bucket/prefix URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise RepositoryError(f"{url}: no bucket")
    return bucket, prefix.strip("/")


def upload_repository(root: Path | str, url: str, client=None) -> list[str]:
    """Upload every file under ``root`` to ``s3://bucket/prefix/`` and return the keys written, in upload order.

    Model files go first and each ``config.pbtxt`` last: Triton's poll mode loads a model when its config appears,
    so the config must not arrive before the weights it points at.
    """
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"{root}: repository folder not found")
    bucket, prefix = parse_s3_url(url)
    files = sorted((p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                   key=lambda p: (p.name == "config.pbtxt", str(p)))
    if not files:
        raise RepositoryError(f"{root}: repository is empty")
    s3 = client or boto3.client("s3")
    keys = []
    for path in files:
        key = "/".join(filter(None, [prefix, path.relative_to(root).as_posix()]))
        try:
            s3.upload_file(str(path), bucket, key)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise RepositoryError(f"upload of {path} to s3://{bucket}/{key} failed: {exc}") from None
        keys.append(key)
    return keys
