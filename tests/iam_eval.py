"""An evaluator of IAM identity policies for the cases our policies use, following AWS's documented logic.

"Policy evaluation logic" (IAM User Guide): an explicit Deny wins; otherwise any Allow whose Action, Resource and
Condition all match allows; otherwise the request is implicitly denied. Condition operators ("IAM JSON policy
elements: Condition operators"): every operator block and every key in it must match (AND), any of a key's values
may match (OR); a key absent from the request fails every operator except ``Null`` and the ``...IfExists`` forms.
An operator this evaluator does not know raises, so a policy that uses one cannot pass by accident.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _string_op(op: str, want: str, got: str) -> bool:
    if op == "StringEquals":
        return got == want
    if op in ("StringLike", "ArnLike", "ArnEquals"):  # ArnEquals matches wildcards like ArnLike (IAM docs)
        return _glob(want, got)
    if op == "StringNotEquals":
        return got != want
    if op == "StringNotLike":
        return not _glob(want, got)
    if op == "Bool":
        return str(got).lower() == str(want).lower()
    raise ValueError(f"condition operator {op} is not handled by this evaluator")


def _condition(block: dict, context: dict) -> bool:
    for op, keys in block.items():
        base, if_exists = (op[:-len("IfExists")], True) if op.endswith("IfExists") else (op, False)
        for key, wanted in keys.items():
            present = key in context and context[key] is not None
            if base == "Null":
                if any((str(w).lower() == "true") == present for w in _listed(wanted)):
                    return False
                continue
            if not present:
                if if_exists:
                    continue
                return False
            got = context[key]
            if base.endswith("NotEquals") or base.endswith("NotLike"):
                if not all(_string_op(base, w, got) for w in _listed(wanted)):
                    return False
            elif not any(_string_op(base, w, got) for w in _listed(wanted)):
                return False
    return True


def _statement_matches(st: dict, action: str, resource: str, context: dict) -> bool:
    if "Action" in st and not any(_glob(a, action, case=False) for a in _listed(st["Action"])):
        return False
    if "NotAction" in st and any(_glob(a, action, case=False) for a in _listed(st["NotAction"])):
        return False
    if "Resource" in st and not any(_glob(r, resource) for r in _listed(st["Resource"])):
        return False
    if "NotResource" in st and any(_glob(r, resource) for r in _listed(st["NotResource"])):
        return False
    return _condition(st.get("Condition", {}), context)


def allowed(policy: dict, action: str, resource: str, context: dict | None = None) -> bool:
    decision = False
    for st in _listed(policy["Statement"]):
        if _statement_matches(st, action, resource, context or {}):
            if st["Effect"] == "Deny":
                return False
            decision = True
    return decision


# Tagging on create: a create call that carries tags is authorized twice, for the call and for tagging the new
# resource. "ELB API permissions to tag resources during creation" (Elastic Load Balancing User Guide): "If tags are
# specified in the resource-creating action, additional authorization is required on the elasticloadbalancing:AddTags
# action", with the condition key elasticloadbalancing:CreateAction set to the creating API. EC2 does the same with
# ec2:CreateTags and ec2:CreateAction ("Grant permission to tag Amazon EC2 resources during creation", EC2 User Guide).
TAG_ON_CREATE = {"elasticloadbalancing": ("elasticloadbalancing:AddTags", "elasticloadbalancing:CreateAction"),
                 "ec2": ("ec2:CreateTags", "ec2:CreateAction")}


@dataclass(frozen=True)
class Call:
    """One API call as IAM sees it: the tags it sends (aws:RequestTag/...), the tags already on the resource it acts
    on (aws:ResourceTag/...), other condition keys, and for a create call the ARN of what it creates. ``source`` says
    where the caller makes it (a file in the caller's source), so a reader can check the call is real."""
    action: str
    resource: str
    request_tags: dict = field(default_factory=dict)
    resource_tags: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    creates: str | None = None
    source: str = ""

    def checks(self) -> list[tuple[str, str, dict]]:
        """Every (action, resource, context) IAM authorizes for this call: the call, and the tag-on-create check
        when a create call sends tags."""
        tags = {f"aws:RequestTag/{k}": v for k, v in self.request_tags.items()}
        owned = {f"aws:ResourceTag/{k}": v for k, v in self.resource_tags.items()}
        out = [(self.action, self.resource, {**tags, **owned, **self.context})]
        if self.request_tags and self.creates is not None:
            service, api = self.action.split(":", 1)
            tag_action, create_key = TAG_ON_CREATE[service]
            out.append((tag_action, self.creates, {**tags, create_key: api}))
        return out


def call_allowed(policy: dict, call: Call) -> bool:
    return all(allowed(policy, action, resource, context) for action, resource, context in call.checks())


def _principal_matches(st: dict, principal: dict) -> bool:
    """A resource policy's ``Principal``: "*" (or {"AWS": "*"}) is everyone; otherwise the caller must be listed
    under its own kind ("AWS" account or role ARNs, "Service" principals), as the IAM JSON policy reference says.
    ``NotPrincipal`` is not handled, so a policy that uses it cannot pass by accident."""
    if "NotPrincipal" in st:
        raise ValueError("NotPrincipal is not handled by this evaluator")
    given = st.get("Principal")
    if given is None:
        raise ValueError("a resource policy statement without Principal")
    if given == "*" or (isinstance(given, dict) and "*" in _listed(given.get("AWS", []))):
        return True
    return any(v in _listed(given.get(kind, [])) for kind, v in principal.items())


def allowed_for(policy: dict, principal: dict, action: str, resource: str, context: dict | None = None) -> bool:
    """A resource policy (a bucket policy) evaluated for one caller, e.g. ``{"Service": "s3.amazonaws.com"}``: only
    the statements whose Principal names the caller apply, then the same logic as :func:`allowed`."""
    own = [st for st in _listed(policy["Statement"]) if _principal_matches(st, principal)]
    return allowed({"Statement": own}, action, resource, context) if own else False


__all__ = ["Call", "TAG_ON_CREATE", "allowed", "allowed_for", "call_allowed"]
