"""The one error type the CLI turns into a single stderr line and exit status 2."""


class PlannerInputError(ValueError):
    """Input the planner cannot act on: bad numbers, unknown names, malformed files, infeasible targets."""
