"""Every conversation with a Triton server's control endpoints, through tritonclient: readiness, a model's metadata,
and the batching config it loaded. (Inference requests are sent by the stages themselves, built by tritonclient.)"""
from __future__ import annotations

from urllib.parse import urlsplit

from gpufleet.contracts.triton import BatchingConfig
from gpufleet.errors import InputError

DEFAULT_TIMEOUT_S = 5.0
# What Triton answers (HTTP 503 / gRPC UNAVAILABLE) when its queue policy turns a request away: at a full queue
# (max_queue_size) or after waiting past the queue timeout. Load shed on purpose, told apart from failures by the text
# (Triton's dynamic batch scheduler; both read from the bundled tritonserver's answers).
SHED_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired")


def is_load_shed(message: str | bytes) -> bool:
    """Whether a failed inference's error text is Triton's queue policy turning the request away."""
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return any(m in text for m in SHED_MESSAGES)


def _client(base_url: str, timeout_s: float):
    import tritonclient.http as httpclient

    parts = urlsplit(base_url)
    return httpclient.InferenceServerClient(parts.netloc, ssl=parts.scheme == "https", connection_timeout=timeout_s,
                                            network_timeout=timeout_s)


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return " ".join((text or type(exc).__name__).split())


def model_metadata(base_url: str, model: str, version: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """The server is ready and serves ``model``: its KServe v2 metadata. :class:`InputError` with one line when the
    host is unreachable, not ready, or has no such model (all things the user names)."""
    from tritonclient.utils import InferenceServerException

    client = _client(base_url, timeout_s)
    try:
        try:
            ready = client.is_server_ready()
        except (OSError, InferenceServerException) as exc:
            raise InputError(f"{base_url}: host unreachable ({_reason(exc)})") from None
        if not ready:
            raise InputError(f"{base_url}: server not ready (/v2/health/ready)")
        try:
            return client.get_model_metadata(model, version)
        except InferenceServerException as exc:
            raise InputError(f"{base_url}: model {model!r}{' version ' + version if version else ''} not found "
                             f"({_reason(exc)})") from None
        except OSError as exc:
            raise InputError(f"{base_url}: cannot read metadata of {model!r}: {_reason(exc)}") from None
    finally:
        client.close()


def loaded_batching(base_url: str, model: str, version: str = "", timeout_s: float = DEFAULT_TIMEOUT_S
                    ) -> BatchingConfig | None:
    """The batching and instances Triton loaded for ``model`` (its model configuration extension), or None when the
    server does not publish it (a plain KServe v2 server)."""
    from tritonclient.utils import InferenceServerException

    client = _client(base_url, timeout_s)
    try:
        cfg = client.get_model_config(model, version)
    except (OSError, InferenceServerException):
        return None
    finally:
        client.close()
    return batching_of(cfg)


def batching_of(cfg: dict) -> BatchingConfig | None:
    """A model configuration (Triton's JSON form of ``config.pbtxt``) as a :class:`BatchingConfig`; None if it does
    not hold one. ``max_batch_size: 0`` (no batch dimension) is one request per execution, the batcher off."""
    dyn = cfg.get("dynamic_batching")
    groups = cfg.get("instance_group") or [{}]
    policy = ((dyn or {}).get("default_queue_policy") or {}) if dyn else {}
    try:
        max_batch = int(cfg.get("max_batch_size", 0))
        return BatchingConfig(
            max_batch_size=max(max_batch, 1),
            max_queue_delay_microseconds=int((dyn or {}).get("max_queue_delay_microseconds", 0)) if dyn else 0,
            preferred_batch_sizes=tuple(int(b) for b in (dyn or {}).get("preferred_batch_size", [])),
            dynamic_batching=dyn is not None and max_batch > 0,
            instance_count=sum(max(int(g.get("count", 1)), 1) for g in groups),
            instance_kind=str(groups[0].get("kind", "KIND_AUTO")),
            max_queue_size=int(policy.get("max_queue_size", 0)),
            queue_timeout_microseconds=int(policy.get("default_timeout_microseconds", 0)))
    except (TypeError, ValueError, AttributeError):
        return None
