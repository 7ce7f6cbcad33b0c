"""Stub ``nvidia-smi`` and ``systemctl`` for running the MIG boot script under bash (tests/test_infra_mig.py): a node
with GPUs whose MIG mode and GPU instances live in a JSON file ($STUB_STATE), every call logged ($STUB_LOG).

What they emulate, from NVIDIA's MIG user guide and nvidia-smi: MIG mode cannot change while a client holds the GPU
(nvidia-persistenced, nvidia-fabricmanager: "In use by another client"); MIG mode survives a reboot, GPU instances do
not; -dci/-dgi fail when there is nothing to destroy; -cgi fails when instances already take the space. $STUB_FAIL
names an nvidia-smi option that fails (a broken GPU)."""
from __future__ import annotations

import json
import os
import sys

HOLDERS = {"nvidia-persistenced.service", "nvidia-fabricmanager.service", "nvidia-persistenced",
           "nvidia-fabricmanager"}


def _unit(name: str) -> str:
    return name if name.endswith(".service") else f"{name}.service"


def main(tool: str) -> None:
    args = sys.argv[1:]
    with open(os.environ["STUB_LOG"], "a") as log:
        log.write(" ".join([tool, *args]) + "\n")
    path = os.environ["STUB_STATE"]
    state = json.load(open(path)) if os.path.exists(path) else {"gpus": [], "running": []}
    code = (_systemctl if tool == "systemctl" else _nvidia_smi)(args, state)
    with open(path, "w") as f:
        json.dump(state, f)
    sys.exit(code)


def _systemctl(args: list[str], state: dict) -> int:
    verb = next(a for a in args if not a.startswith("-"))
    names = [_unit(a) for a in args[args.index(verb) + 1:] if not a.startswith("-")]
    running = set(state["running"])
    if verb == "is-active":
        return 0 if all(n in running for n in names) else 3
    if verb == "stop":
        running -= set(names)
    elif verb in ("start", "restart") and "--no-block" not in args:
        running |= set(names)
    state["running"] = sorted(running)
    return 0


def _nvidia_smi(args: list[str], state: dict) -> int:
    fail = os.environ.get("STUB_FAIL")
    if fail and fail in args:
        print(f"stub: {fail} failed", file=sys.stderr)
        return 1
    gpus = state["gpus"]
    chosen = [int(args[args.index("-i") + 1])] if "-i" in args else list(range(len(gpus)))
    query = next((a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")), None)
    if query is not None:
        fields = query.split(",")
        for i in chosen:
            row = {"index": str(i), "mig.mode.current": gpus[i]["mode"]}
            print(", ".join(row[f] for f in fields))
        return 0
    if "-mig" in args:
        if set(state["running"]) & HOLDERS:
            print("Unable to enable MIG Mode for GPU: In use by another client", file=sys.stderr)
            return 1
        for i in chosen:
            gpus[i]["mode"] = "Enabled" if args[args.index("-mig") + 1] == "1" else "Disabled"
        return 0
    if "-r" in args:
        return 0
    if args[:1] == ["mig"]:
        (i,) = chosen
        if gpus[i]["mode"] != "Enabled":
            print("MIG mode is not enabled", file=sys.stderr)
            return 1
        if "-dci" in args or "-dgi" in args:
            if not gpus[i]["instances"]:
                print("No GPU instances found", file=sys.stderr)
                return 6
            if "-dgi" in args:
                gpus[i]["instances"] = []
            return 0
        if "-cgi" in args:
            if gpus[i]["instances"]:
                print("Insufficient Resources", file=sys.stderr)
                return 2
            gpus[i]["instances"] = args[args.index("-cgi") + 1].split(",")
            return 0
    print(f"stub: unknown call {args}", file=sys.stderr)
    return 64
