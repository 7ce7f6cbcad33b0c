"""Embedded default data: the us-east-1 instance catalog and reference latency profiles, each figure sourced."""
