"""``pulumi up`` entry (``Pulumi.yaml`` → ``main: infra/``): stack config and the plan it names → the stack.

A config or plan that cannot be used stops the program with one line (pulumi.RunError prints no traceback).
"""
import pulumi
from pulumi.runtime.config import get_config_env

from infra.program import build, load_plan
from infra.settings import InfraInputError, settings_from_config

try:
    # The CLI hands the stack's config to the program as a map of "namespace:key" to strings.
    settings = settings_from_config(get_config_env(), f"Pulumi.{pulumi.get_stack()}.yaml")
    build(settings, load_plan(settings))
except InfraInputError as exc:
    raise pulumi.RunError(str(exc)) from None
