"""The gpufleet policy pack: rules in :mod:`infra.policy.rules`, the Pulumi wrapper in ``__main__.py``."""
