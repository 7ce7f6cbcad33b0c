"""How a plan runs in a cluster, as far as a reader of its telemetry needs to know: the Kubernetes names of its
Deployments and the labels and quantiles of the series Prometheus keeps for them.

``infra`` deploys under these names (``infra.triton``) and writes its alert rules over these series
(``infra.alerts``); ``planner check``, ``planner fit --prometheus`` and ``planner demand`` read the same series back.
One place for both sides, so a renamed Deployment cannot leave the planner querying series that no longer exist.
"""
from __future__ import annotations

import hashlib

# The namespace a stack's Triton Deployments run in unless its Pulumi config names another (infra.settings).
DEFAULT_NAMESPACE = "inference"
# A mix stack (planner recommend --mix) is named this where one model's stack takes the model's name.
MIX_NAME = "mix"
K8S_NAME_MAX = 63
# The P99 of Triton's per-model latency summaries (METRICS_ARGS turns them on with this quantile).
P99_QUANTILE = "0.99"
# Triton's per-model latency summaries, which the P99 alert (infra.alerts) and planner check read; the stack's Triton
# runs with them (infra.triton) and so does the local one (serving.local), so a local server exposes what a deployed
# one does. Off by default: core@r25.01 src/metric_model_reporter.h (latency_summaries_enabled_ = false), turned on by
# the global metrics setting summary_latencies=true (src/metric_model_reporter.cc ParseConfig), given as
# --metrics-config=<setting>=<value> (server@r25.01 src/command_line_parser.cc ParseMetricsConfigOption). Histograms
# are no alternative at this version: histogram_latencies=true adds only the first-response histogram of decoupled
# models (InitializeHistograms). The quantiles are set here, not left to Triton's default list, so the one the rule
# selects is always exported; pairs <quantile>:<error> separated by ',' (ParseQuantiles). Each is over a sliding minute
# (prometheus-cpp v1.0.1 Summary defaults, Triton's pin in triton-inference-server/third_party@r25.01). The request
# summary is left out when the response cache is on (InitializeSummaries); the plan's configs never turn it on.
METRICS_ARGS = ["--metrics-config=summary_latencies=true",
                f"--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,{P99_QUANTILE}:0.001"]


def app_name(model: str) -> str:
    """The ``app`` label of a stack's Triton pods, and the prefix of its Deployments' names."""
    return f"triton-{model}"


def unit_name(app: str, unit) -> str:
    """The Kubernetes name of one serving unit: ``<app>-<gpu>`` for one model's stack (unchanged since the first
    release: a Deployment's selector cannot change in place); in a mix, its models and GPU, shortened with a digest
    where a DNS label would be too long."""
    gpu = unit[0].gpu.lower()
    if unit[0].shared is None and len({d.model for d in unit}) == 1 and not app.endswith(f"-{MIX_NAME}"):
        return f"{app}-{gpu}"
    name = f"{app}-{'-'.join(d.model for d in unit)}-{gpu}".lower().replace(".", "-").replace("_", "-")
    if len(name) > K8S_NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:K8S_NAME_MAX - len(gpu) - 10].rstrip('-')}-{digest}-{gpu}"
    return name


def stack_app(plan) -> str:
    """The ``app`` a plan's stack runs under: the mix's name for a mix plan, else its one model's (infra.program)."""
    return app_name(MIX_NAME if plan.mix is not None else plan.deployments[0].model)
