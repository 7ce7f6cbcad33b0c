"""gpufleet loadtests: open-loop Locust stress runs against Triton (issue 4). Nothing is provided here yet."""
