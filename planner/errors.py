"""The planner's input error (exit status 2 under :mod:`gpufleet.errors`' rule)."""
from gpufleet.errors import InputError


class PlannerInputError(InputError):
    """Input the planner cannot act on: bad numbers, unknown names, malformed files, infeasible targets."""
