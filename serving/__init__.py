"""gpufleet serving: engines, latency profiles and the Triton model repository.

The public contract here is the latency profile (:mod:`gpufleet.contracts.profile`): the one file format that every
measurement path writes and that ``planner`` reads. Engine building, profiling backends and the local Triton
arrive with their own issue; this package stays importable without any GPU library.
"""
