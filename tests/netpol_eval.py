"""An evaluator of Kubernetes NetworkPolicies for one connection, following the API's documented semantics.

"Network Policies" (kubernetes.io/docs/concepts/services-networking/network-policies): a pod is isolated for a
direction when any policy in its namespace selects it and lists that direction in ``policyTypes``; an isolated pod
accepts a connection only if some selecting policy has a rule of that direction whose peers and ports both match
(rules OR together; a rule without ``from``/``to`` matches every peer, without ``ports`` every port). A peer is an
``ipBlock`` (CIDR minus ``except``), or ``namespaceSelector`` and/or ``podSelector`` (both: AND; ``podSelector``
alone: the policy's own namespace). A port given by name matches the destination container port of that name;
protocol defaults to TCP. ``matchExpressions`` raise: no policy here uses them, and one that did must not pass by
accident.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, named container ports) or, with only ``ip``, an address outside the cluster."""

    ip: str
    namespace: str | None = None
    namespace_labels: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    named_ports: dict = field(default_factory=dict)  # name -> number


def _selects(selector: dict, labels: dict) -> bool:
    if selector.get("matchExpressions"):
        raise ValueError("matchExpressions are not handled by this evaluator")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict, policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        addr = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except") or [])
    if other.namespace is None:
        return False  # selectors match pods only
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return _selects(peer.get("podSelector") or {}, other.labels)


def _port_matches(rule_ports, port: int, protocol: str, destination: Endpoint) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        number = destination.named_ports.get(want) if isinstance(want, str) else want
        if number is None:
            continue
        if number <= port <= p.get("endPort", number):
            return True
    return False


def _direction_allows(policies: list[dict], pod: Endpoint, other: Endpoint, port: int, protocol: str,
                      direction: str, destination: Endpoint) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                 and _selects(p["spec"].get("podSelector") or {}, pod.labels)
                 and direction in (p["spec"].get("policyTypes") or ["Ingress"])]
    if not selecting:
        return True  # not isolated in this direction
    for p in selecting:
        for rule in p["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, pod.namespace, other) for peer in peers)) and \
                    _port_matches(rule.get("ports"), port, protocol, destination):
                return True
    return False


def connection_allowed(policies: list[dict], source: Endpoint, destination: Endpoint, port: int,
                       protocol: str = "TCP") -> bool:
    """Whether ``source`` may open a connection to ``destination:port``: the source's egress and the destination's
    ingress must both allow it (only pods have policies)."""
    if source.namespace is not None and not _direction_allows(policies, source, destination, port, protocol,
                                                             "Egress", destination):
        return False
    if destination.namespace is not None and not _direction_allows(policies, destination, source, port, protocol,
                                                                  "Ingress", destination):
        return False
    return True
