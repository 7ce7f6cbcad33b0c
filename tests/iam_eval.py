"""An evaluator of IAM identity policies for the cases our policies use, following AWS's documented logic.

"Policy evaluation logic" (IAM User Guide): an explicit Deny wins; otherwise any Allow whose Action, Resource and
Condition all match allows; otherwise the request is implicitly denied. Condition operators ("IAM JSON policy
elements: Condition operators"): every operator block and every key in it must match (AND), any of a key's values
may match (OR); a key absent from the request fails every operator except ``Null`` and the ``...IfExists`` forms.
An operator this evaluator does not know raises, so a policy that uses one cannot pass by accident.
"""
from __future__ import annotations

import re


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


__all__ = ["allowed", "allowed_for"]
