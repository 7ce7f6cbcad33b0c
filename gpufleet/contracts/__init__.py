"""The contracts between the stages (profile → stress → fit → plan → provision), each in one place.

| module | what |
|---|---|
| :mod:`.io` | reading and writing any contract file: one line per defect, atomic writes |
| :mod:`.model` | ``Strict``, the base of every contract model (unknown fields are errors) |
| :mod:`.triton` | ``BatchingConfig``: Triton's dynamic batcher and instance group, the one type for it |
| :mod:`.autoscaling` | ``AutoscalingSpec``: the HPA metric, its window, scrape, tolerance, sync, lag and ramp |
| :mod:`.profile` | the latency profile |
| :mod:`.stress_result` | the stress result |
| :mod:`.calibration` | the calibration ``planner fit`` writes |
| :mod:`.catalog` | the instance catalog |
| :mod:`.plan` | the plan, which ``infra`` provisions from alone |
| :mod:`.stack` | a Pulumi stack's file, as far as the planner writes into it |
| :mod:`.demand` | the demand curve CSV (rates over time, per model): planner and loadtests' replay read it alike |
| :mod:`.engine_sidecar` | the TensorRT engine's settings file |

Stages import these and :mod:`gpufleet`, never each other (an import-linter contract in ``pyproject.toml``).
"""
