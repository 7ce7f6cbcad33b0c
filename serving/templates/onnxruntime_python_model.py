"""Triton Python-backend model that runs ``model.onnx`` (beside this file) on ONNX Runtime.

gpufleet's local Triton uses it because the ``tritonserver`` bundled with nvidia-pytriton carries only the Python
backend. The config around it is the production config with ``backend: "python"`` in place of
``platform: "onnxruntime_onnx"``, so the dynamic batcher, instance groups and warm-up are Triton's own.

The dynamic batcher hands ``execute`` the requests it grouped; they are stacked into one ONNX Runtime call, as
Triton's ONNX Runtime backend does, and the outputs are split back per request.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        here = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        # One intra-op thread per instance: instance_group count is the parallelism knob, as on a GPU.
        opts.intra_op_num_threads = int(os.environ.get("GPUFLEET_ORT_THREADS", "1"))
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])

    def execute(self, requests):
        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                 for name in self.inputs}
        sizes = [a.shape[0] for a in feeds[self.inputs[0]]]
        results = self.session.run(self.outputs, {k: np.concatenate(v) for k, v in feeds.items()})
        bounds = np.cumsum(sizes)[:-1]
        per_output = [np.split(r, bounds) for r in results]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(name, parts[i])
                                            for name, parts in zip(self.outputs, per_output)])
                for i in range(len(requests))]
