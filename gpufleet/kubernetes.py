"""Validating rendered Kubernetes objects: one pinned release, strict, warnings as failures."""
from __future__ import annotations

import warnings

# The release manifests are validated against: an EKS-supported one, and no older than any stack's cluster.
K8S_VERSION = "1.35.0"


def validate_manifest(manifest: dict) -> str | None:
    """None if ``manifest`` is valid; a one-line reason otherwise. A custom resource (no bundled schema) is reported
    as ``"crd"``, not failed: kubernetes-validate carries only the built-in kinds' schemas."""
    import kubernetes_validate as kv

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            kv.validate(manifest, K8S_VERSION, strict=True)
    except kv.SchemaNotFoundError:
        return "crd"
    except kv.ValidationError as exc:
        return f"invalid: {str(exc).splitlines()[0]}"
    except Warning as exc:
        return f"invalid (warning): {exc}"
    return None
