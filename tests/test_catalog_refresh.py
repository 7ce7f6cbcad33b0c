"""planner catalog refresh: EC2 facts and spot prices from moto_server, list prices from a stubbed Price List API."""
from __future__ import annotations

import datetime as dt
import json

import pytest

import boto3  # noqa: E402
from botocore.stub import ANY, Stubber  # noqa: E402

from gpufleet.contracts.catalog import write_catalog  # noqa: E402
from gpufleet.errors import RunFailure  # noqa: E402
from planner.catalog import read_catalog  # noqa: E402
from planner.cli import main  # noqa: E402
from planner.recommend import RecommendRequest, recommend  # noqa: E402
from planner.refresh import clients, gpu_instance_types, refresh_catalog, spot_prices  # noqa: E402

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)
# Illustrative list prices in the Price List's own layout (the stub's answers, not market data).
LIST = {"g5.xlarge": (1.006, 0.604, 0.402), "p5.48xlarge": (98.32, 68.0, 44.0)}


def price_list_entry(instance_type: str, on_demand: float, ri1: float, ri3: float) -> str:
    """One GetProducts PriceList item as AWS returns it: a JSON string with OnDemand and Reserved terms."""
    def term(code, price, attrs=None, upfront=None):
        dims = {f"{code}.hrs": {"unit": "Hrs", "pricePerUnit": {"USD": f"{price:.10f}"}}}
        if upfront is not None:
            dims[f"{code}.qty"] = {"unit": "Quantity", "pricePerUnit": {"USD": f"{upfront:.2f}"}}
        return {code: {"priceDimensions": dims, **({"termAttributes": attrs} if attrs else {})}}
    reserved = {}
    for length, price in (("1yr", ri1), ("3yr", ri3)):
        reserved |= term(f"NU{length}", price, {"LeaseContractLength": length, "OfferingClass": "standard",
                                                 "PurchaseOption": "No Upfront"})
        # A partial-upfront offer that is cheaper per hour: the refresh must still prefer No Upfront.
        reserved |= term(f"PU{length}", price * 0.5, {"LeaseContractLength": length, "OfferingClass": "standard",
                                                       "PurchaseOption": "Partial Upfront"}, upfront=price * 1000)
        reserved |= term(f"CV{length}", price * 0.9, {"LeaseContractLength": length, "OfferingClass": "convertible",
                                                       "PurchaseOption": "No Upfront"})
    return json.dumps({"product": {"attributes": {"instanceType": instance_type}},
                       "terms": {"OnDemand": term("OD", on_demand), "Reserved": reserved}})


@pytest.fixture
def ec2(moto_endpoint, aws_env):
    return clients("us-east-1", endpoint_url=moto_endpoint)[0]


def stub_pricing(types: list[str]):
    pricing = boto3.client("pricing", region_name="us-east-1")
    stub = Stubber(pricing)
    for name in types:
        entries = [price_list_entry(name, *LIST[name])] if name in LIST else []
        stub.add_response("get_products", {"PriceList": entries, "FormatVersion": "aws_v1"},
                          {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1"})
    return pricing, stub


def test_instance_facts_come_from_describe_instance_types(ec2):
    types = {it["InstanceType"]: it for it in gpu_instance_types(ec2, ["g5", "p5"])}
    assert {"g5.xlarge", "g5.48xlarge", "p5.48xlarge"} <= set(types)
    assert types["g5.xlarge"]["GpuInfo"]["Gpus"][0]["Name"] == "A10G"
    assert types["p5.48xlarge"]["GpuInfo"]["Gpus"][0]["Count"] == 8
    assert all(name.split(".")[0] in ("g5", "p5") for name in types)


def test_refresh_writes_a_dated_catalog_that_recommend_reads(ec2, tmp_path):
    names = [it["InstanceType"] for it in gpu_instance_types(ec2, ["g5", "p5"])]
    pricing, stub = stub_pricing(names)
    with stub:
        catalog, skipped = refresh_catalog(ec2, pricing, "us-east-1", ["g5", "p5"], now=NOW)
    stub.assert_no_pending_responses()
    assert catalog.as_of == "2026-11-21"
    assert {i.instance_type for i in catalog.instances} == set(LIST)
    assert len(skipped) == len(names) - len(LIST) and all("no on-demand price" in s for s in skipped)
    g5 = next(i for i in catalog.instances if i.instance_type == "g5.xlarge")
    assert (g5.gpu, g5.gpu_count, g5.vcpu, g5.memory_gib) == ("A10G", 1, 4, 16.0)
    assert g5.on_demand.usd_per_hour == 1.006 and g5.on_demand.source == "aws-pricing-api"
    assert g5.reserved["1yr"].usd_per_hour == 0.604 and g5.reserved["3yr"].usd_per_hour == 0.402
    # One price per AZ that offers the type, and none for an AZ that does not.
    offered = {o["Location"] for o in ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": ["g5.xlarge"]}])["InstanceTypeOfferings"]}
    assert len(offered) >= 2 and set(g5.spot.usd_per_hour_by_az) == offered
    assert {"aws-pricing-api", "aws-ec2-spot-history"} <= set(catalog.sources)
    path = tmp_path / "catalog.json"
    write_catalog(catalog, path)
    assert read_catalog(path) == catalog
    plan = recommend(RecommendRequest(qps=3000, p99_ms=50, catalog=path))
    assert plan.request.catalog_as_of == "2026-11-21"
    assert {p.instance_type for p in plan.pools} <= set(LIST)


def test_spot_takes_the_latest_price_in_each_zone():
    ec2 = boto3.client("ec2", region_name="us-east-1")
    stub = Stubber(ec2)
    stub.add_response("describe_availability_zones", {"AvailabilityZones": [
        {"ZoneName": "us-east-1a", "State": "available"}, {"ZoneName": "us-east-1b", "State": "available"}]})
    older, newer = NOW - dt.timedelta(hours=3), NOW - dt.timedelta(minutes=20)
    for zone, records in (("us-east-1a", [(older, "0.50"), (newer, "0.42")]), ("us-east-1b", [(newer, "0.61")])):
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"AvailabilityZone": zone, "InstanceType": "g6.xlarge", "ProductDescription": "Linux/UNIX",
             "SpotPrice": price, "Timestamp": when} for when, price in records]},
            {"InstanceTypes": ["g6.xlarge"], "AvailabilityZone": zone, "ProductDescriptions": ANY,
             "StartTime": ANY, "EndTime": ANY})
    with stub:
        prices = spot_prices(ec2, ["g6.xlarge"], NOW)
    assert prices == {"g6.xlarge": {"us-east-1a": 0.42, "us-east-1b": 0.61}}


def test_throttling_is_one_clear_error(ec2):
    pricing = boto3.client("pricing", region_name="us-east-1")
    stub = Stubber(pricing)
    for _ in range(10):
        stub.add_client_error("get_products", service_error_code="ThrottlingException", http_status_code=400)
    with stub, pytest.raises(RunFailure, match="GetProducts: AWS is throttling requests"):
        refresh_catalog(ec2, pricing, "us-east-1", ["g5"], now=NOW)


def test_missing_credentials_end_in_one_line(moto_endpoint, monkeypatch, tmp_path, capsys):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    out = tmp_path / "catalog.json"
    assert main(["catalog", "refresh", "--output", str(out), "--endpoint-url", moto_endpoint]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no AWS credentials" in err[0]
    assert not out.exists()
