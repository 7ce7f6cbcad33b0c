"""What the AWS Load Balancer Controller (v2.13.0) makes of rendered manifests: which Services an Ingress sends to
(each one a target group), the annotation that wins for a target group, and whether its pod webhook injects the
target-health readiness gate into a pod.

Sources, all at kubernetes-sigs/aws-load-balancer-controller@v2.13.0: docs/guide/ingress/annotations.md
("Annotations applied to Service have higher priority over annotations applied to Ingress"; defaults per
annotation), docs/deploy/pod_readiness_gate.md (when the gate is injected), helm/aws-load-balancer-controller/
templates/webhook.yaml (the webhook's selectors, copied in tests/data/alb/pod-mutator-webhook-1.13.0.json).
Label selectors follow Kubernetes' LabelSelector semantics (matchLabels and matchExpressions ANDed).
"""
from __future__ import annotations

import json
from pathlib import Path

POD_WEBHOOK = json.loads((Path(__file__).parent / "data/alb/pod-mutator-webhook-1.13.0.json").read_text())
ANNOTATION_PREFIX = "alb.ingress.kubernetes.io/"
# annotations.md at v2.13.0, the Default column.
DEFAULTS = {"healthcheck-path": "/", "target-type": "instance", "success-codes": "200"}
# Kubernetes labels every namespace with its own name (NamespaceDefaultLabelName).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector: every matchLabels pair and every matchExpressions requirement holds."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def backend_services(ingress: dict) -> set[str]:
    """The Services an Ingress sends to: named in a path's backend, or in the forward action it names."""
    ann = ingress["metadata"].get("annotations", {})
    out = set()
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            svc = path["backend"]["service"]
            if svc["port"].get("name") == "use-annotation":
                action = json.loads(ann[f"{ANNOTATION_PREFIX}actions.{svc['name']}"])
                out |= {tg["serviceName"] for tg in action["forwardConfig"]["targetGroups"]}
            else:
                out.add(svc["name"])
    return out


def target_group_services(objs: list[dict], namespace: str, pod_labels: dict) -> list[dict]:
    """The Services (target groups) of the namespace's Ingresses that hold a pod with these labels."""
    ingresses = [m for m in objs if m["kind"] == "Ingress" and m["metadata"]["namespace"] == namespace]
    names = set().union(*(backend_services(i) for i in ingresses)) if ingresses else set()
    return [m for m in objs if m["kind"] == "Service" and m["metadata"].get("namespace") == namespace
            and m["metadata"]["name"] in names and selects({"matchLabels": m["spec"]["selector"]}, pod_labels)]


def target_group_setting(objs: list[dict], service: dict, name: str) -> str:
    """One annotation as the controller reads it for the target group of ``service``: the Service's, else its
    Ingress's, else the documented default."""
    key = ANNOTATION_PREFIX + name
    own = service["metadata"].get("annotations") or {}
    if key in own:
        return own[key]
    for ing in (m for m in objs if m["kind"] == "Ingress" and m["metadata"]["namespace"] ==
                service["metadata"]["namespace"] and service["metadata"]["name"] in backend_services(m)):
        if key in (ing["metadata"].get("annotations") or {}):
            return ing["metadata"]["annotations"][key]
    return DEFAULTS[name]


def readiness_gate_injected(objs: list[dict], pod_namespace: str, pod_labels: dict,
                            controller_values: dict) -> bool:
    """Whether the controller's pod webhook gives a pod created with these labels the target-health readiness gate
    (pod_readiness_gate.md, "Configuration"): the webhook selects the pod (namespace and object selectors, the
    chart's unless the release's values replace them), a Service in its namespace selects it and is a target group,
    and that target group's type is ip."""
    (ns,) = [m for m in objs if m["kind"] == "Namespace" and m["metadata"]["name"] == pod_namespace]
    ns_labels = {**(ns["metadata"].get("labels") or {}), NAMESPACE_NAME_LABEL: pod_namespace}
    ns_selector = ({"matchExpressions": controller_values["webhookNamespaceSelectors"]}
                   if controller_values.get("webhookNamespaceSelectors") else POD_WEBHOOK["namespaceSelector"])
    obj_selector = dict(POD_WEBHOOK["objectSelector"])
    extra = controller_values.get("objectSelector") or {}
    obj_selector["matchExpressions"] = [*obj_selector["matchExpressions"], *(extra.get("matchExpressions") or [])]
    obj_selector["matchLabels"] = extra.get("matchLabels") or {}
    if not (selects(ns_selector, ns_labels) and selects(obj_selector, pod_labels)):
        return False
    services = target_group_services(objs, pod_namespace, pod_labels)
    return bool(services) and all(target_group_setting(objs, s, "target-type") == "ip" for s in services)
