"""Triton's dynamic batcher and instance group: the one type for the settings that shape a replica's latency.

The planner simulates with it, the plan carries it, ``serving`` renders it into ``config.pbtxt``, a stress run records
the one Triton loaded, and ``planner fit`` replays stress steps with it. Field names are ``model_config.proto``'s.
"""
from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, ConfigDict, Field, model_validator

from gpufleet.contracts.model import Strict

InstanceKind = Literal["KIND_GPU", "KIND_CPU", "KIND_AUTO", "KIND_MODEL"]


class BatchingConfig(Strict):
    """``dynamic_batching`` and ``instance_group`` of one model's ``config.pbtxt``.

    ``dynamic_batching: false`` is a model served without the dynamic batcher (each request executes alone, whatever
    ``max_batch_size``); Triton's ``max_batch_size: 0`` (no batch dimension) is recorded as 1 with the batcher off.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    max_batch_size: int = Field(ge=1)
    max_queue_delay_microseconds: int = Field(
        default=0, ge=0, validation_alias=AliasChoices("max_queue_delay_microseconds", "max_queue_delay_us"),
        description="0 also when dynamic batching is off; files written before v0.2 call it max_queue_delay_us")
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_count: int = Field(default=1, ge=1, description="model instances on one GPU (all instance groups)")
    instance_kind: InstanceKind = "KIND_GPU"
    dynamic_batching: bool = True
    max_queue_size: int = Field(
        default=0, ge=0, description="dynamic_batching.default_queue_policy.max_queue_size: a request that finds this "
        "many already waiting is rejected at once (Triton answers 'Exceeds maximum queue size', HTTP 503) instead of "
        "queueing past the latency target; 0 is Triton's unbounded queue. The planner sets it per deployment.")
    queue_timeout_microseconds: int = Field(
        default=0, ge=0, description="dynamic_batching.default_queue_policy.default_timeout_microseconds with "
        "timeout_action REJECT: a request still queued this long is rejected ('Request timeout expired', HTTP 503), "
        "as it could no longer meet the latency target; 0 is no timeout. The planner sets it with max_queue_size.")

    @model_validator(mode="after")
    def _preferred_within_max(self) -> "BatchingConfig":
        # Model Analyzer issues 957/805: a preferred size above max_batch_size makes Triton reject the config.
        bad = [p for p in self.preferred_batch_sizes if not 1 <= p <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} must lie in 1..max_batch_size={self.max_batch_size}")
        return self

    @property
    def effective_max_batch(self) -> int:
        """The largest batch the server forms: 1 without the dynamic batcher (clients here send one image each)."""
        return self.max_batch_size if self.dynamic_batching else 1

    @property
    def effective_delay_us(self) -> int:
        return self.max_queue_delay_microseconds if self.dynamic_batching else 0

    def with_kind(self, kind: InstanceKind) -> "BatchingConfig":
        return self.model_copy(update={"instance_kind": kind})

    def with_queue_bound(self, max_queue_size: int, queue_timeout_microseconds: int = 0) -> "BatchingConfig":
        return self.model_copy(update={"max_queue_size": max_queue_size,
                                       "queue_timeout_microseconds": queue_timeout_microseconds})

    @property
    def latency_shape(self) -> "BatchingConfig":
        """The config without its queue bounds: what sets latency below them (the simulator, calibrations and
        capacities are keyed by it; the bounds only decide which requests are turned away in overload)."""
        return self.with_queue_bound(0, 0)

    def describe(self) -> str:
        pref = f" pref={list(self.preferred_batch_sizes)}" if self.preferred_batch_sizes else ""
        off = "" if self.dynamic_batching else " (no dynamic batching)"
        bound = f" queue<={self.max_queue_size}" if self.max_queue_size else ""
        bound += f" wait<={self.queue_timeout_microseconds}us" if self.queue_timeout_microseconds else ""
        return (f"batch<={self.max_batch_size} delay={self.max_queue_delay_microseconds}us "
                f"x{self.instance_count}{pref}{bound}{off}")

    def short(self) -> str:
        return f"{self.max_batch_size}/{self.max_queue_delay_microseconds}us/x{self.instance_count}"

    def sort_key(self) -> tuple:
        return (self.max_batch_size, self.max_queue_delay_microseconds, self.preferred_batch_sizes,
                self.instance_count, self.instance_kind, self.dynamic_batching, self.max_queue_size,
                self.queue_timeout_microseconds)

    def __lt__(self, other: "BatchingConfig") -> bool:
        # Ordered, so (score, config) pairs sort and min() breaks ties the same way every run.
        return self.sort_key() < other.sort_key()
