"""TLS is a choice (issue 24, #3): with no domain the stack serves plain HTTP on the load balancer's own hostname and
says so; with one it looks its Route 53 zone up before creating anything, refuses a domain outside that zone, and
points the domain at the load balancer with an alias A record that never overwrites someone else's record.

The preview's mock account answers Route 53 and ELB lookups the way AWS does (``infra.preview.Recorder.call``);
``infra.preview.ACCOUNT_ZONES`` sets which hosted zones it holds.
"""
import json
import logging

import pulumi
import pytest

import infra.preview as preview_mod
from infra.preview import Recorder, account_zones, manifests, preview
from infra.program import build, load_plan
from infra.settings import ROOT, InfraInputError, settings_from_config, stack_file_config
from tests.cli_run import run_cli

ROUTE53_RECORD = "aws:route53/record:Record"
# The canonical hosted zone of Application Load Balancers in us-east-1 (AWS General Reference, "Elastic Load
# Balancing endpoints and quotas"; the same table in hashicorp/terraform-provider-aws
# internal/service/elbv2/hosted_zone_id_data_source.go, HostedZoneIdPerRegionALBMap).
ALB_ZONE_US_EAST_1 = "Z35SXDOTRQ7X7K"


def _without_domain(stack: str) -> dict:
    return {k: v for k, v in stack_file_config(stack).items()
            if k not in ("gpufleet:tlsDomain", "gpufleet:hostedZoneId")}


@pytest.fixture(scope="module")
def plain():
    settings = settings_from_config(_without_domain("dev"), "dev")
    plan = load_plan(settings)
    return settings, plan, preview(settings, plan)


def _with_domain(domain="inference.example.com", zone_id=None) -> dict:
    config = {**_without_domain("prod"), "gpufleet:tlsDomain": domain}
    if zone_id:
        config["gpufleet:hostedZoneId"] = zone_id
    return config


def _outputs(settings, plan) -> dict:
    """The stack outputs, resolved under the same mocks (Pulumi's documented unit-testing API)."""
    got = {}

    def program():
        return pulumi.Output.from_input(build(settings, plan)).apply(got.update)

    pulumi.runtime.set_mocks(Recorder(account_zones(settings)), project="gpufleet", stack=settings.environment,
                             preview=False)
    pulumi.runtime.test(program)()
    return got


# --- no domain: plain HTTP on the load balancer's hostname ----------------------------------------------------------

def test_the_dev_stack_needs_no_domain():
    settings = settings_from_config(stack_file_config("dev"), "dev")
    assert settings.tls_domain is None and settings.hosted_zone_id is None


def test_without_a_domain_nothing_is_made_in_acm_or_route53(plain):
    _, _, records = plain
    assert not [r.type for r in records if r.type.startswith(("aws:acm/", "aws:route53/"))]


def test_without_a_domain_the_ingress_listens_on_http_80_only(plain):
    _, _, records = plain
    (ing,) = [m for m in manifests(records) if m["kind"] == "Ingress"]
    ann = ing["metadata"]["annotations"]
    assert json.loads(ann["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}]
    assert "alb.ingress.kubernetes.io/certificate-arn" not in ann and "tls" not in ing["spec"]
    # No host rule: requests to the load balancer's own hostname are the way in.
    assert all("host" not in rule for rule in ing["spec"]["rules"])


def test_without_a_domain_the_endpoint_is_http_on_the_load_balancers_hostname(plain):
    settings, plan, _ = plain
    endpoint = _outputs(settings, plan)["endpoint"]
    assert endpoint.startswith("http://") and endpoint.endswith(".elb.amazonaws.com"), endpoint


def test_without_a_domain_the_stack_warns_that_traffic_is_plain_http(plain, caplog):
    settings, plan, _ = plain
    with caplog.at_level(logging.WARNING):
        preview(settings, plan)
    assert any("plain HTTP" in r.getMessage() and "gpufleet:tlsDomain" in r.getMessage() for r in caplog.records)


# --- a domain: its zone looked up, an alias A record, nothing overwritten -------------------------------------------

def test_the_zone_is_looked_up_and_its_id_used(monkeypatch):
    monkeypatch.setattr(preview_mod, "ACCOUNT_ZONES", {"Z0123456789ABCDEFGHIJ": {"name": "example.com"}}, raising=False)
    settings = settings_from_config(_with_domain(), "prod")
    records = preview(settings, load_plan(settings))
    zones = {r.inputs["zoneId"] for r in records if r.type == ROUTE53_RECORD}
    assert zones == {"Z0123456789ABCDEFGHIJ"}


def test_the_domain_is_an_alias_a_record_on_the_load_balancer():
    settings = settings_from_config(_with_domain(), "prod")
    records = preview(settings, load_plan(settings))
    (record,) = [r for r in records if r.type == ROUTE53_RECORD and r.inputs["name"] == settings.tls_domain]
    assert record.inputs["type"] == "A" and not record.inputs.get("records")
    (alias,) = record.inputs["aliases"]
    assert alias["name"].endswith(".elb.amazonaws.com")
    assert alias["zoneId"] == ALB_ZONE_US_EAST_1 and alias["evaluateTargetHealth"] is True


def test_no_route53_record_overwrites_an_existing_one():
    settings = settings_from_config(_with_domain(), "prod")
    records = [r for r in preview(settings, load_plan(settings)) if r.type == ROUTE53_RECORD]
    assert len(records) == 2  # the certificate's validation record and the domain's
    assert not [r.name for r in records if r.inputs.get("allowOverwrite")]


def test_an_apex_domain_in_its_own_zone_is_served(monkeypatch):
    monkeypatch.setattr(preview_mod, "ACCOUNT_ZONES", {"Z0APEX0000000000000001": {"name": "example.net"}}, raising=False)
    settings = settings_from_config(_with_domain("example.net", "Z0APEX0000000000000001"), "prod")
    records = preview(settings, load_plan(settings))
    (record,) = [r for r in records if r.type == ROUTE53_RECORD and r.inputs["name"] == "example.net"]
    assert record.inputs["type"] == "A"


def test_a_domain_outside_the_zone_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(preview_mod, "ACCOUNT_ZONES", {"Z0OTHER000000000000001": {"name": "other.org"}}, raising=False)
    settings = settings_from_config(_with_domain(zone_id="Z0OTHER000000000000001"), "prod")
    with pytest.raises(InfraInputError, match=r"inference\.example\.com.*not in.*other\.org") as err:
        preview(settings, load_plan(settings))
    assert "\n" not in str(err.value)


def test_a_zone_the_account_does_not_hold_is_refused_before_anything_is_made(monkeypatch):
    monkeypatch.setattr(preview_mod, "ACCOUNT_ZONES", {}, raising=False)
    settings = settings_from_config(_with_domain(zone_id="Z0GONE0000000000000001"), "prod")
    with pytest.raises(InfraInputError, match="gpufleet:hostedZoneId.*Z0GONE0000000000000001") as err:
        preview(settings, load_plan(settings))
    assert "\n" not in str(err.value)


def test_a_zone_lookup_that_fails_for_another_reason_is_a_run_failure_not_bad_settings(monkeypatch):
    # Throttling or expired credentials say nothing about the zone: exit 1 (run failure), never "create the zone".
    from gpufleet.errors import RunFailure

    monkeypatch.setattr(Recorder, "_zone", lambda self, q: ({}, [("name", "ThrottlingException: Rate exceeded")]))
    settings = settings_from_config(_with_domain(), "prod")
    with pytest.raises(RunFailure, match="Rate exceeded") as err:
        preview(settings, load_plan(settings))
    assert not isinstance(err.value, InfraInputError)


def test_a_private_zone_is_refused(monkeypatch):
    # ACM validates through public DNS: a record in a private zone is never seen, and validation would wait it out.
    monkeypatch.setattr(preview_mod, "ACCOUNT_ZONES", {"Z0PRIV0000000000000001": {"name": "example.com",
                                                                                   "private": True}}, raising=False)
    settings = settings_from_config(_with_domain(zone_id="Z0PRIV0000000000000001"), "prod")
    with pytest.raises(InfraInputError, match="private"):
        preview(settings, load_plan(settings))


def test_a_hosted_zone_without_a_domain_is_refused():
    config = {**_without_domain("dev"), "gpufleet:hostedZoneId": "Z0123456789ABCDEFGHIJ"}
    with pytest.raises(InfraInputError, match="gpufleet:hostedZoneId.*gpufleet:tlsDomain"):
        settings_from_config(config, "dev")


def test_certificate_validation_gives_up_in_minutes_not_75():
    """An undelegated zone never lets ACM see the record: the wait must end well before the provider's 75 minutes
    (hashicorp/terraform-provider-aws internal/service/acm/certificate_validation.go, Create DefaultTimeout)."""
    from infra.edge import VALIDATION_TIMEOUT_MIN

    settings = settings_from_config(_with_domain(), "prod")
    plan = load_plan(settings)
    timeouts = {}

    def record(args: pulumi.ResourceTransformationArgs):
        if args.type_ == "aws:acm/certificateValidation:CertificateValidation":
            timeouts[args.name] = args.opts.custom_timeouts
        return None

    def program():
        pulumi.runtime.register_stack_transformation(record)
        return pulumi.Output.from_input(build(settings, plan))

    pulumi.runtime.set_mocks(Recorder(account_zones(settings)), project="gpufleet", stack="prod", preview=False)
    pulumi.runtime.test(program)()
    (timeout,) = timeouts.values()
    assert timeout is not None and timeout.create == f"{VALIDATION_TIMEOUT_MIN}m"


def test_render_refuses_a_domain_whose_zone_is_not_in_the_account_in_one_line(tmp_path, monkeypatch):
    # The prod stack names a domain and no zone id; the mock account (set for this test only) holds no zone for it.
    # The console's main(argv) runs in-process (tests/cli_run.py).
    import infra.preview as p

    monkeypatch.setattr(p, "ACCOUNT_ZONES", {"Z0OTHER000000000000001": {"name": "other.org"}})
    out = tmp_path / "r"
    run = run_cli("infra", ["render", "--stack", "prod", "--out", str(out)], cwd=ROOT)
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpufleet:tlsDomain" in lines[0] and "Traceback" not in run.stderr, run.stderr
    assert not out.exists()


def test_the_alias_record_is_checked_against_cloudformations_recordset_schema():
    # Pulumi's `aliases` is CloudFormation's AliasTarget: written as such, cfn-lint checks it (and an unmapped input
    # would only be listed as unchecked).
    from infra.cfn import check_aws_inputs

    settings = settings_from_config(_with_domain(), "prod")
    records = [r for r in preview(settings, load_plan(settings)) if r.type == ROUTE53_RECORD]
    problems, unchecked = check_aws_inputs(records, settings.region)
    assert problems == [] and not [u for u in unchecked if "Alias" in u], unchecked
    bad = [r if r.inputs.get("type") != "A" else
           type(r)(r.type, r.name, {**r.inputs, "aliases": [{**r.inputs["aliases"][0], "evaluateTargetHealth": "not-a-bool"}]},
                r.id)
           for r in records]
    problems, _ = check_aws_inputs(bad, settings.region)
    assert any("not-a-bool" in p for p in problems), problems
