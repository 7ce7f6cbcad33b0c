"""The Pulumi policy pack (``pulumi preview --policy-pack infra/policy``): every rule mandatory.

Its own virtual environment holds ``pulumi-policy`` (requirements.txt) and nothing else, as policy packs usually do.
"""
from pulumi_policy import (EnforcementLevel, PolicyPack, ResourceValidationPolicy, StackValidationPolicy)

# The Pulumi CLI runs this directory (runpy, the directory first on sys.path) in the pack's own environment, where
# neither gpufleet nor infra is installed: the rules are imported as a sibling module, and import only the standard
# library (a test runs the pack that way).
from rules import RULES


def _policy(rule):
    if rule.stack:
        return StackValidationPolicy(name=rule.name, description=rule.description,
                                     enforcement_level=EnforcementLevel.MANDATORY,
                                     validate=lambda args, report: rule.validate(args, report))
    return ResourceValidationPolicy(name=rule.name, description=rule.description,
                                    enforcement_level=EnforcementLevel.MANDATORY,
                                    validate=lambda args, report: rule.validate(args, report))


PolicyPack(name="gpufleet", enforcement_level=EnforcementLevel.MANDATORY, policies=[_policy(r) for r in RULES])
