"""Embedded data every stage shares: the us-east-1 instance catalog (``gpufleet.contracts.catalog.embedded_catalog``),
the planner's default and the list of GPU types a profile may name; each figure sourced in the file."""
