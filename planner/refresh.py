"""``catalog refresh``: a dated instance catalog from the AWS APIs, for ``planner recommend --catalog``.

* EC2 ``DescribeInstanceTypes``: vCPUs, memory, GPU model, count and memory for every NVIDIA GPU type in the
  chosen families;
* EC2 ``DescribeSpotPriceHistory``, once per Availability Zone: the latest Linux/UNIX spot price in each AZ
  (the planner prices spot at the dearest AZ, since a diversified node group may land in any);
* the Price List API ``GetProducts`` (served from us-east-1 for every region): on-demand, and Standard
  Reserved Instances without upfront payment for 1 and 3 years (an upfront part is spread over the term).

Every figure in the written file names its API and the date it was read. Missing credentials and throttling
end in one line (:class:`planner.errors.PlannerInputError`); botocore's adaptive retries run first.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable

from gpufleet.contracts.catalog import Catalog, InstanceType, Price, SpotPrice
from gpufleet.errors import RunFailure
from planner.errors import PlannerInputError

DEFAULT_FAMILIES = ("g4dn", "g5", "g6", "g6e", "p4d", "p5")
PRICING_REGION = "us-east-1"  # the Price List API's endpoint for every region's prices
HOURS = {"1yr": 8760.0, "3yr": 26280.0}
THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
             "RequestThrottled"}
# The Price List API names regions by their long names.
REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)", "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)", "eu-west-1": "EU (Ireland)", "eu-central-1": "EU (Frankfurt)",
    "eu-west-2": "EU (London)", "ap-northeast-1": "Asia Pacific (Tokyo)", "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)", "ap-south-1": "Asia Pacific (Mumbai)", "ca-central-1": "Canada (Central)",
}


def clients(region: str, endpoint_url: str | None = None, pricing_endpoint_url: str | None = None):
    """boto3 EC2 and Pricing clients with adaptive retries (throttling backs off before it becomes an error)."""
    import boto3
    from botocore.config import Config

    # A fresh session reads the environment now; boto3's default session keeps what it found first.
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise PlannerInputError("no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                                "(read-only ec2:Describe* and pricing:GetProducts suffice)")
    cfg = Config(retries={"max_attempts": 8, "mode": "adaptive"})
    return (session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=cfg),
            session.client("pricing", region_name=PRICING_REGION, endpoint_url=pricing_endpoint_url, config=cfg))


def _call(what: str, fn, **kwargs) -> Any:
    """One AWS call; credentials and throttling problems become one line."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    try:
        return fn(**kwargs)
    except (NoCredentialsError, PartialCredentialsError):
        raise PlannerInputError(f"{what}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                                "AWS_SECRET_ACCESS_KEY (read-only ec2:Describe* and pricing:GetProducts suffice)") from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in THROTTLED:
            raise RunFailure(f"{what}: AWS is throttling requests ({code}) and retries ran out; try again in "
                             "a minute") from None
        if code in ("UnauthorizedOperation", "AccessDeniedException", "AuthFailure", "InvalidClientTokenId"):
            raise PlannerInputError(f"{what}: access denied ({code}); the credentials need ec2:Describe* and "
                                    "pricing:GetProducts") from None
        raise PlannerInputError(f"{what}: {code or 'error'}: {exc.response.get('Error', {}).get('Message', exc)}") from None
    except EndpointConnectionError as exc:
        raise RunFailure(f"{what}: cannot reach AWS ({exc})") from None


def _pages(what: str, client, operation: str, key: str, **kwargs) -> Iterable[dict]:
    token = None
    while True:
        page = _call(what, getattr(client, operation), **kwargs, **({"NextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return


def gpu_instance_types(ec2, families: Iterable[str]) -> list[dict]:
    """NVIDIA GPU instance types in these families, as DescribeInstanceTypes returns them."""
    fams = set(families)
    found = []
    for it in _pages("DescribeInstanceTypes", ec2, "describe_instance_types", "InstanceTypes",
                     Filters=[{"Name": "instance-type", "Values": [f"{f}.*" for f in sorted(fams)]}]):
        gpu = (it.get("GpuInfo") or {}).get("Gpus") or []
        if it["InstanceType"].split(".")[0] in fams and gpu and gpu[0].get("Manufacturer") == "NVIDIA":
            found.append(it)
    return sorted(found, key=lambda it: (it["InstanceType"].split(".")[0], it["VCpuInfo"]["DefaultVCpus"]))


def spot_prices(ec2, instance_types: list[str], now: dt.datetime) -> dict[str, dict[str, float]]:
    """Latest Linux/UNIX spot price per instance type and AZ, one history query per AZ."""
    zones = [z["ZoneName"] for z in _call("DescribeAvailabilityZones", ec2.describe_availability_zones,
                                          Filters=[{"Name": "zone-type", "Values": ["availability-zone"]}])
             ["AvailabilityZones"] if z.get("State", "available") == "available"]
    latest: dict[tuple[str, str], tuple[dt.datetime, float]] = {}
    for zone in zones:
        for rec in _pages("DescribeSpotPriceHistory", ec2, "describe_spot_price_history", "SpotPriceHistory",
                          InstanceTypes=instance_types, AvailabilityZone=zone,
                          ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                          StartTime=now - dt.timedelta(hours=6), EndTime=now):
            if rec.get("AvailabilityZone") != zone:
                continue  # only this AZ's records: each query stands for one AZ
            key = (rec["InstanceType"], zone)
            stamp = rec["Timestamp"]
            if key not in latest or stamp > latest[key][0]:
                latest[key] = (stamp, float(rec["SpotPrice"]))
    out: dict[str, dict[str, float]] = {}
    for (itype, zone), (_, price) in sorted(latest.items()):
        out.setdefault(itype, {})[zone] = price
    return out


def _price_filters(instance_type: str, region: str) -> list[dict]:
    location = REGION_NAMES.get(region)
    if location is None:
        raise PlannerInputError(f"region {region}: its Price List location name is not known to gpufleet; "
                                f"known: {', '.join(sorted(REGION_NAMES))}")
    pairs = {"instanceType": instance_type, "location": location, "operatingSystem": "Linux", "tenancy": "Shared",
             "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in pairs.items()]


def list_prices(pricing, instance_type: str, region: str) -> dict[str, float]:
    """On-demand and no-upfront standard 1yr/3yr reserved $/h from GetProducts; keys on-demand, 1yr, 3yr."""
    prices: dict[str, float] = {}
    for text in _pages("GetProducts", pricing, "get_products", "PriceList", ServiceCode="AmazonEC2",
                       Filters=_price_filters(instance_type, region), FormatVersion="aws_v1"):
        product = json.loads(text) if isinstance(text, str) else text
        terms = product.get("terms", {})
        for term in terms.get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", 0))
                if dim.get("unit") == "Hrs" and usd > 0:
                    prices["on-demand"] = usd
        for term in terms.get("Reserved", {}).values():
            attrs = term.get("termAttributes", {})
            length = attrs.get("LeaseContractLength")
            if (length not in HOURS or attrs.get("OfferingClass") != "standard"
                    or attrs.get("PurchaseOption") not in ("No Upfront", "Partial Upfront", "All Upfront")):
                continue
            hourly = upfront = 0.0
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", 0))
                if dim.get("unit") == "Hrs":
                    hourly = usd
                elif dim.get("unit") == "Quantity":
                    upfront = usd
            effective = hourly + upfront / HOURS[length]
            # Prefer No Upfront, the option that keeps cash free; others only where it is not offered.
            if attrs["PurchaseOption"] == "No Upfront" or length not in prices:
                if effective > 0:
                    prices[length] = effective
    return prices


def refresh_catalog(ec2, pricing, region: str, families: Iterable[str] = DEFAULT_FAMILIES,
                    now: dt.datetime | None = None) -> tuple[Catalog, list[str]]:
    """Read the APIs and build the catalog; also return what was skipped and why."""
    now = now or dt.datetime.now(dt.timezone.utc)
    day = now.date().isoformat()
    types = gpu_instance_types(ec2, families)
    if not types:
        raise PlannerInputError(f"DescribeInstanceTypes: no NVIDIA GPU instance types in {', '.join(families)} "
                                f"in {region}")
    names = [it["InstanceType"] for it in types]
    spot = spot_prices(ec2, names, now)
    skipped: list[str] = []
    instances = []
    for it in types:
        name = it["InstanceType"]
        listed = list_prices(pricing, name, region)
        if "on-demand" not in listed:
            skipped.append(f"{name}: no on-demand price in the Price List for {region}")
            continue
        gpu = it["GpuInfo"]["Gpus"][0]
        by_az = spot.get(name, {})
        instances.append(InstanceType(
            instance_type=name, family=name.split(".")[0], vcpu=it["VCpuInfo"]["DefaultVCpus"],
            memory_gib=round(it["MemoryInfo"]["SizeInMiB"] / 1024, 2), gpu=gpu["Name"], gpu_count=gpu["Count"],
            gpu_memory_gib=round(gpu["MemoryInfo"]["SizeInMiB"] / 1024, 2),
            architecture="arm64" if "arm64" in it.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
            and "x86_64" not in it.get("ProcessorInfo", {}).get("SupportedArchitectures", []) else "x86_64",
            on_demand=Price(usd_per_hour=listed["on-demand"], source="aws-pricing-api"),
            spot=SpotPrice(usd_per_hour_by_az=by_az, source="aws-ec2-spot-history") if by_az else None,
            reserved={term: Price(usd_per_hour=round(listed[term], 6), source="aws-pricing-api")
                      for term in ("1yr", "3yr") if term in listed}))
        if not by_az:
            skipped.append(f"{name}: no spot price in any AZ in the last 6 hours (planned without spot)")
    if not instances:
        raise PlannerInputError(f"no instance type had an on-demand price; first: {skipped[0]}")
    catalog = Catalog(
        schema_version=1, region=region, currency="USD", as_of=day,
        notes=["Written by `planner catalog refresh` from the AWS APIs; figures are as read on as_of.",
               "Spot: latest Linux/UNIX price per AZ from the last 6 hours of history; the planner prices spot at "
               "the dearest AZ.",
               "Reserved: Standard RIs, No Upfront where offered (an upfront fee is spread over the term's hours).",
               "Spot interruption bands are not in any API (Spot Instance Advisor is a web page), so they are null."]
              + [f"skipped: {s}" for s in skipped],
        sources={
            "aws-ec2-describe-instance-types": {"what": "vCPU, memory, GPU model/count/memory",
                                                "where": f"EC2 DescribeInstanceTypes, {region}", "date": day},
            "aws-ec2-spot-history": {"what": "spot $/h per AZ",
                                     "where": f"EC2 DescribeSpotPriceHistory per AZ, {region}", "date": day},
            "aws-pricing-api": {"what": "on-demand and reserved $/h",
                                "where": f"Price List GetProducts AmazonEC2, {REGION_NAMES.get(region, region)}, "
                                         "Linux, shared tenancy", "date": day},
        },
        instances=instances)
    return catalog, skipped
