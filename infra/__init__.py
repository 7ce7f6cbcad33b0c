"""gpufleet infra: Pulumi programs sized by the planner's plan. The program is infra/__main__.py; preview.py runs it under mocks."""
