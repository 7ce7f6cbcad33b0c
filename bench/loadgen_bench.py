"""How fast can one Locust process send open-loop, on time? (Run by hand; not a test.)

Starts the KServe v2 stub server (loadtests/stub_server.py: no service time, no stalls, a 3x8x8 FP32 input so the
wire is not the limit) in its own process, then one ``loadtests`` open-loop run in one Locust process with Poisson
steps of rising rate. Per step it prints the schedule lag (actual send - scheduled send) P99, the share of late
sends (> 1 ms), achieved/offered, and latency. The figure of merit is the highest rate whose lag P99 stays under
1 ms. Both processes share this machine's cores, so the figure is a floor for a dedicated load-generator host.

    python bench/loadgen_bench.py [--rates 1000,2000,3000,4000,5000,6000] [--seconds 6]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.run import run_stress  # noqa: E402
from loadtests.settings import StressSettings  # noqa: E402
from loadtests.shapes import Steps  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,3000,4000,5000,6000")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--port", type=int, default=18999)
    a = ap.parse_args()
    rates = [float(r) for r in a.rates.split(",")]
    server = subprocess.Popen([sys.executable, "-m", "loadtests.stub_server", "--port", str(a.port), "--model", "b",
                               "--service-ms", "0", "--input-shape", "3,8,8"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{a.port}/v2/health/ready", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_stress(StressSettings(host=f"http://127.0.0.1:{a.port}", model="b", out=Path(tmp),
                                               shape=Steps(rates=rates, step_duration=a.seconds, warmup=2),
                                               metrics_url="", timeout_s=10, name="bench"))
    finally:
        server.terminate()
        server.wait(10)
    print(f"cores: {os.cpu_count()}, one Locust process, stub server in another; Poisson; {a.seconds:g} s per step")
    print(f"{'offered/s':>10} {'achieved/offered':>17} {'lag P99 ms':>11} {'late >1ms':>10} {'P50 ms':>8} "
          f"{'P99 ms':>8} {'errors':>7} {'dropped':>8}")
    best = None
    for s in result.reported_steps():
        ratio = s.achieved_rate / s.offered_rate
        late = s.late_sends / s.sent if s.sent else 0.0
        print(f"{s.offered_rate:>10.0f} {ratio:>17.3f} {s.lag_p99_ms:>11.3f} {late:>10.1%} "
              f"{s.latency_ms.p50:>8.2f} {s.latency_ms.p99:>8.2f} {s.errors:>7d} {s.dropped:>8d}")
        if s.lag_p99_ms is not None and s.lag_p99_ms < 1.0 and s.errors == 0 and ratio > 0.97:
            best = s.offered_rate
    print(f"highest rate with schedule lag P99 < 1 ms: {best if best else 'none'} req/s (goal >= 3,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
