"""Stack settings: what differs between environments (``Pulumi.<stack>.yaml``, namespace ``gpufleet``).

Inside ``pulumi up`` they come from ``pulumi.Config``; the preview and the tests read the same YAML files, so every
environment is built from one definition.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpufleet.contracts.stack import PROJECT_ROOT
from gpufleet.deployed import DEFAULT_NAMESPACE
from gpufleet.contracts.stack import stack_file_config as read_stack_file
from gpufleet.errors import InputError
from infra.versions import calendar

ROOT = PROJECT_ROOT
# The retention periods CloudWatch Logs accepts (PutRetentionPolicy; AWS::Logs::LogGroup RetentionInDays). A test
# compares this with CloudFormation's published schema.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                      3288, 3653)


class InfraInputError(InputError):
    """Stack config or plan that cannot be used; one line naming the key or file."""


class StackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    environment: Literal["dev", "prod"]
    region: str
    availability_zones: list[str] = Field(alias="availabilityZones", min_length=2)
    vpc_cidr: str = Field(alias="vpcCidr")
    kubernetes_version: str = Field(alias="kubernetesVersion", pattern=r"^1\.\d+$")
    nat_gateways: Literal["single", "per-az"] = Field(alias="natGateways")
    system_node_type: str = Field(alias="systemNodeType")
    system_nodes: int = Field(alias="systemNodes", ge=2)
    protect: bool
    plan_path: str = Field(alias="planPath")
    # None: the stack serves the model its plan is for (dev: try any model); set it to pin the stack to one model,
    # so that a plan for another model is refused (prod).
    model_name: str | None = Field(default=None, alias="modelName")
    namespace: str = DEFAULT_NAMESPACE
    canary_weight: int = Field(default=0, alias="canaryWeight", ge=0, le=50)
    canary_image: str | None = Field(default=None, alias="canaryImage")
    triton_image: str = Field(default="nvcr.io/nvidia/tritonserver:25.01-py3", alias="tritonImage")
    # Where the cluster's API answers from outside the VPC: the machine running `pulumi up` must be among them (EKS's
    # own default is 0.0.0.0/0; the API still needs IAM credentials mapped by an access entry). Narrow it per stack.
    endpoint_public_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], alias="endpointPublicCidrs",
                                             min_length=1)
    log_retention_days: int = Field(default=30, alias="logRetentionDays")
    # TLS is a choice. None: the endpoint is plain HTTP on the load balancer's own hostname (no certificate, no DNS
    # record; the stack warns). A name: the stack issues its certificate (ACM, DNS-validated) and points the name at
    # the load balancer, in the public Route 53 zone it looks up before creating anything (infra.edge.hosted_zone):
    # ``hostedZoneId`` when given, else the zone named after the domain's parent (api.example.com -> example.com).
    tls_domain: str | None = Field(default=None, alias="tlsDomain", max_length=253,
                                   pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
    hosted_zone_id: str | None = Field(default=None, alias="hostedZoneId", pattern=r"^Z[A-Z0-9]{1,31}$")
    # Buy the Savings Plans that price the plan's reserved pools (1 or 3 years, irrevocable). Off, the stack only
    # warns and exports them as `commitments`, and its capacity reservations bill at the on-demand rate until bought.
    purchase_commitments: bool = Field(default=False, alias="purchaseCommitments")

    # Run a version past EKS standard support (billed at the extended rate) instead of refusing it.
    allow_extended_support: bool = Field(default=False, alias="allowExtendedSupport")

    @field_validator("kubernetes_version")
    @classmethod
    def _known_version(cls, v: str) -> str:
        known = calendar()
        if v not in known:
            raise ValueError(f"{v} is not in infra/data/eks_versions.json (dated EKS support calendar: "
                             f"{', '.join(known)})")
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in LOG_RETENTION_DAYS:
            raise ValueError(f"{v} days: CloudWatch Logs keeps one of {', '.join(map(str, LOG_RETENTION_DAYS))}")
        return v

    @model_validator(mode="after")
    def _zone_needs_a_domain(self) -> "StackSettings":
        if self.hosted_zone_id is not None and self.tls_domain is None:
            raise ValueError("gpufleet:hostedZoneId is set without gpufleet:tlsDomain: set the domain to serve "
                             "HTTPS in that zone, or remove the zone id to serve plain HTTP")
        return self

    @property
    def name(self) -> str:
        return f"gpufleet-{self.environment}"


def parse_settings(values: dict, origin: str) -> StackSettings:
    try:
        return StackSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        # A check across keys (a model validator) has no location; its message names the keys itself.
        where = f"gpufleet:{where}: " if where else ""
        raise InfraInputError(f"{origin}: {where}{err['msg'].removeprefix('Value error, ')}") from None


def stack_file_config(stack: str, project_dir: Path = ROOT) -> dict[str, str]:
    """The ``config:`` map of ``Pulumi.<stack>.yaml`` (:func:`gpufleet.contracts.stack.stack_file_config`)."""
    return read_stack_file(stack, project_dir, InfraInputError)


def settings_from_config(config: dict[str, str], origin: str) -> StackSettings:
    """Settings from a flat Pulumi config map (values are strings, structured ones JSON)."""
    import json

    values = {}
    for key, value in config.items():
        ns, _, name = key.partition(":")
        if ns != "gpufleet":
            continue
        # Structured values arrive as JSON text; scalars stay strings ("1.33" is a version, not a float) and pydantic
        # converts the numeric and boolean ones by field type.
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InfraInputError(f"{origin}: {key}: not valid JSON") from None
        values[name] = value
    if "region" not in values and "aws:region" in config:
        values["region"] = config["aws:region"]
    return parse_settings(values, origin)
