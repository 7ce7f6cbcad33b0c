"""gpufleet infra: Pulumi programs sized by the planner's plan (issue 5). Nothing is provided here yet."""
