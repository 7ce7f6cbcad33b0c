"""The Pulumi policy pack (``pulumi preview --policy-pack infra/policy``): every rule mandatory.

Its own virtual environment holds ``pulumi-policy`` (requirements.txt), as policy packs usually do.
"""
from pulumi_policy import (EnforcementLevel, PolicyPack, ResourceValidationPolicy, StackValidationPolicy)

from infra.policy.rules import RULES


def _policy(rule):
    if rule.stack:
        return StackValidationPolicy(name=rule.name, description=rule.description,
                                     enforcement_level=EnforcementLevel.MANDATORY,
                                     validate=lambda args, report: rule.validate(args, report))
    return ResourceValidationPolicy(name=rule.name, description=rule.description,
                                    enforcement_level=EnforcementLevel.MANDATORY,
                                    validate=lambda args, report: rule.validate(args, report))


PolicyPack(name="gpufleet", enforcement_level=EnforcementLevel.MANDATORY, policies=[_policy(r) for r in RULES])
