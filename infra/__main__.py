"""``pulumi up`` entry (``Pulumi.yaml`` → ``main: infra/``): stack config and the plan it names → the stack.

A config or plan that cannot be used stops the program with one line (pulumi.RunError prints no traceback).
"""
import datetime

import pulumi
from pulumi.runtime.config import get_config_env

from infra.program import build, load_plan
from infra.settings import InfraInputError, settings_from_config
from infra.versions import require_standard_support

try:
    # The CLI hands the stack's config to the program as a map of "namespace:key" to strings.
    settings = settings_from_config(get_config_env(), f"Pulumi.{pulumi.get_stack()}.yaml")
    plan = load_plan(settings)
    require_standard_support(settings, datetime.date.today())  # and on the day it is deployed
    build(settings, plan)
except InfraInputError as exc:
    raise pulumi.RunError(str(exc)) from None
