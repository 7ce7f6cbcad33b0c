"""Files copied into generated Triton model repositories (not imported by gpufleet itself)."""
