"""A KServe v2 stub server with known, injected latency: the ground truth for testing load generators.

Every inference takes ``service_ms``; on top, the server stalls for ``stall_ms`` at the start of every
``stall_period_s`` (wall clock, from ``epoch0``): a request that arrives inside a stall waits for its end. Requests
are served concurrently (a greenlet each), so a request's latency depends only on when it arrives:

    latency(a) = service + max(0, stall_end(a) - a)

which is what a load generator that counts from the intended send time must report. ``GET /stub/config`` returns
the parameters, ``epoch0`` included, so a test can compute that ground truth for every scheduled send.

Run: ``python -m loadtests.stub_server --port 8000 --service-ms 5 --stall-period-s 2 --stall-ms 100``.
"""
from __future__ import annotations

import argparse
import json
import socket
import time

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer


class _NoDelayHandler(WSGIHandler):
    """Responses go out at once: with Nagle on, a keep-alive response can wait 40 ms for a delayed ACK."""

    def __init__(self, sock, *args, **kwargs):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, *args, **kwargs)


class StubModel:
    def __init__(self, name: str, input_shape: tuple[int, ...], service_ms: float, stall_period_s: float,
                 stall_ms: float, epoch0: float | None = None):
        self.name, self.input_shape = name, input_shape
        self.service_s, self.period_s, self.stall_s = service_ms / 1000, stall_period_s, stall_ms / 1000
        self.epoch0 = time.time() if epoch0 is None else epoch0
        out = {"name": "output0", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}
        header = json.dumps({"model_name": name, "model_version": "1", "outputs": [out]}).encode()
        self.response = header + bytes(40)
        self.header_len = str(len(header))

    def delay_s(self, arrival: float) -> float:
        stall = 0.0
        if self.period_s > 0 and self.stall_s > 0:
            phase = (arrival - self.epoch0) % self.period_s
            if phase < self.stall_s:
                stall = self.stall_s - phase
        return self.service_s + stall

    def metadata(self) -> dict:
        return {"name": self.name, "versions": ["1"], "platform": "stub",
                "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, *self.input_shape]}],
                "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 10]}]}

    def config(self) -> dict:
        return {"service_ms": self.service_s * 1000, "stall_period_s": self.period_s, "stall_ms": self.stall_s * 1000,
                "epoch0": self.epoch0}


def make_app(model: StubModel):
    meta = json.dumps(model.metadata()).encode()
    conf = json.dumps(model.config()).encode()
    infer = f"/v2/models/{model.name}/infer"
    infer_v1 = f"/v2/models/{model.name}/versions/1/infer"

    def app(environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if method == "POST" and path in (infer, infer_v1):
            arrival = time.time()
            environ["wsgi.input"].read()
            gevent.sleep(max(0.0, arrival + model.delay_s(arrival) - time.time()))
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Inference-Header-Content-Length", model.header_len),
                                      ("Content-Length", str(len(model.response)))])
            return [model.response]
        if path == "/v2/health/ready" or path == "/v2/health/live":
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if path in (f"/v2/models/{model.name}", f"/v2/models/{model.name}/versions/1"):
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(meta)))])
            return [meta]
        if path == "/stub/config":
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(conf)))])
            return [conf]
        body = b'{"error":"not found"}'
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="stub")
    p.add_argument("--input-shape", default="3,64,64")
    p.add_argument("--service-ms", type=float, default=5.0)
    p.add_argument("--stall-period-s", type=float, default=0.0)
    p.add_argument("--stall-ms", type=float, default=0.0)
    a = p.parse_args(argv)
    model = StubModel(a.model, tuple(int(x) for x in a.input_shape.split(",")), a.service_ms, a.stall_period_s,
                      a.stall_ms)
    WSGIServer((a.host, a.port), make_app(model), log=None, backlog=2048, handler_class=_NoDelayHandler).serve_forever()


if __name__ == "__main__":
    main()
