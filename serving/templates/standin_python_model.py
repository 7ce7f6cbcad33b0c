"""Triton Python-backend stand-in: sleeps for each batch's service time, drawn from a latency profile.

A GPU executes off the host's CPU; ONNX Runtime on the load generator's cores does not. This model keeps Triton's
batcher, queue, instances and HTTP/gRPC path real while its "device" costs no CPU: ``execute`` sleeps for a time
drawn from ``service_s.npy`` (beside this file; row ``b`` is the quantile table of a batch of ``b``, written by
``serving.standin`` from the profile with the planner's own reading of it) and answers zeros of the output shape.

Stand-ins that share one GPU (``serving local`` with several ``--standin``) name one lock file in
``device_lock.txt``: a batch holds it while it sleeps, so the models' batches take turns on the "device", as kernels
of models that gain nothing from running together would.
"""
import fcntl
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.outputs = [(o["name"], [int(d) for d in o["dims"]],
                         pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        here = os.path.join(args["model_repository"], args["model_version"])
        self.table = np.load(os.path.join(here, "service_s.npy"))
        # Each instance draws its own stream; seeded from the instance name so a run can be repeated.
        self.rng = np.random.default_rng(abs(hash(args["model_instance_name"])) % (2 ** 32))
        lock = os.path.join(here, "device_lock.txt")
        self.device = open(open(lock).read().strip(), "a") if os.path.exists(lock) else None

    def execute(self, requests):
        sizes = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy().shape[0] for r in requests]
        batch = min(sum(sizes), self.table.shape[0] - 1)
        row = self.table[batch]
        if self.device is not None:
            fcntl.flock(self.device, fcntl.LOCK_EX)
        try:
            time.sleep(float(row[self.rng.integers(len(row))]))
        finally:
            if self.device is not None:
                fcntl.flock(self.device, fcntl.LOCK_UN)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(name, np.zeros([n, *dims], dtype))
                                            for name, dims, dtype in self.outputs]) for n in sizes]
