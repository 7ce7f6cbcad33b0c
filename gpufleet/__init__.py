"""Shared by the stage packages (planner, serving, loadtests, infra): nothing stage-specific lives here."""
