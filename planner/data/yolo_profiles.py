"""The embedded YOLO-class profiles, derived from published figures: ``python -m planner.data.yolo_profiles`` writes
``profiles/yolov8*.json``. The derivation is here so that it can be read, re-run and checked (a test regenerates the
files and compares); each file carries its own figures, sources and derivation.

Published figures, all for TensorRT engines at batch 1, 640x640 input:

* Ultralytics, YOLOv8 on a T4 with TensorRT 10 (``docs/en/compare/yolov8-vs-yolov5.md``): n 1.47, s 2.66, m 5.86,
  l 9.06, x 14.37 ms.
* Ultralytics, YOLOv8 on an A100 with TensorRT, an Amazon EC2 P4d instance, batch 1 (``docs/en/models/yolov8.md``):
  n 0.99, s 1.20, m 1.83, l 2.39, x 3.53 ms; YOLOv8m-seg 2.18 ms; FLOPs per image n 8.7, s 28.6, m 78.9, l 165.2,
  x 257.8 B, m-seg 110.2 B.
* MLPerf Inference ResNet-50 Offline throughput per GPU (the embedded ResNet-50 profiles' sources): the one
  published figure that ranks every GPU type here on the same work.

Derivation, per GPU type G and model:

1. **Batch-1 latency** ``t1``. T4 and A100 are published. Between and beyond them, ``t1`` is interpolated
   log-linearly in the GPU's MLPerf ResNet-50 Offline throughput ``X_G``: ``t1_G = t1_T4^(1-w) * t1_A100^w`` with
   ``w = ln(X_G / X_T4) / ln(X_A100 / X_T4)`` (w = 0 on the T4, 1 on the A100, 1.38 on the H100). YOLOv8m-seg has
   no T4 figure: its T4 ``t1`` is its A100 figure times YOLOv8m's T4/A100 ratio.
2. **1280x720.** A 1280x720 frame is letterboxed to 1280x736 (multiples of the stride, 32): ``k = 1280*736 /
   (640*640) = 2.3`` times the pixels. On each GPU, ``t1`` over the five detector sizes is fitted as
   ``alpha + beta * FLOPs`` (least squares): ``alpha`` is the part of a call that does not grow with the work
   (launches, synchronization), ``beta`` the time per GFLOP at batch 1. At 1280x720 the work is ``k`` times:
   ``t1' = t1 + beta * FLOPs * (k - 1)``.
3. **Batch scaling** ``latency(b) = t1 + (b - 1) * m``, the affine shape of the ResNet-50 profiles: ``m`` is the
   cost of one more image at full occupancy, ``1 / X_yolo`` with ``X_yolo = X_G * (F_resnet50 / F_yolo) * 0.5``:
   the GPU's ResNet-50 throughput scaled by work per image (ResNet-50: 4.09 GMAC per 224x224 image per torchvision,
   8.18 GFLOPs counted as Ultralytics counts, 2 per multiply-add) and by 0.5, the FP16/INT8 ratio of dense tensor
   throughput in NVIDIA's datasheets (MLPerf ran INT8). ``m`` never exceeds ``t1``. At 1280x720 ``m`` is ``k``
   times.
4. **Quantiles.** Ultralytics publishes means. p50 = mean = ``latency(b)``; p99 = 1.165 x p50, the T4 MLPerf
   SingleStream p99/p50 ratio (1.27 / 1.09 ms), as in the ResNet-50 profiles.
5. **Precision.** The sources do not state it; the profiles say fp16. If the published engines were FP32, an FP16
   engine is faster and these profiles are on the safe (slow) side.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

DATE = "2026-11-22"
SIZES = ("n", "s", "m", "l", "x")
BATCHES = (1, 2, 4, 8, 16, 32)
T4_MS = {"n": 1.47, "s": 2.66, "m": 5.86, "l": 9.06, "x": 14.37}
A100_MS = {"n": 0.99, "s": 1.20, "m": 1.83, "l": 2.39, "x": 3.53}
GFLOPS = {"n": 8.7, "s": 28.6, "m": 78.9, "l": 165.2, "x": 257.8}
SEG_A100_MS, SEG_GFLOPS = 2.18, 110.2
RESNET50_GFLOPS = 8.18
FP16_PER_INT8 = 0.5
P99_PER_P50 = 1.27 / 1.09
PIXELS_720 = 1280 * 736 / (640 * 640)
# MLPerf Inference ResNet-50 Offline, images/s per GPU (INT8), as the embedded ResNet-50 profiles cite them.
RESNET50_OFFLINE = {"T4": 6100.0, "A10G": 13239.0, "L4": 12882.0, "L40S": 44145.0, "A100": 42379.0, "H100": 88526.0}

SOURCES = {
    "t4": "Ultralytics docs, docs/en/compare/yolov8-vs-yolov5.md (github.com/ultralytics/ultralytics, commit "
          "f9c3b50d322d3cccc2767aeb89c4e28945a19a8e): YOLOv8 Speed T4 TensorRT10, 640: n 1.47, s 2.66, m 5.86, "
          "l 9.06, x 14.37 ms.",
    "a100": "Ultralytics docs, docs/en/models/yolov8.md (github.com/ultralytics/ultralytics, commit "
            "0059318aebf8cec7d72d30b9be003d63cae78323): Speed A100 TensorRT, 640, batch 1, Amazon EC2 P4d (\"Speed "
            "averaged over COCO val images\"): n 0.99, s 1.20, m 1.83, l 2.39, x 3.53 ms, YOLOv8m-seg 2.18 ms; FLOPs "
            "n 8.7, s 28.6, m 78.9, l 165.2, x 257.8, m-seg 110.2 B.",
    "mlperf": "MLPerf Inference ResNet-50 Offline per GPU, as cited by the embedded resnet50 profiles: T4 6,100 "
              "(v0.7), A10 PCIe 13,239 (v1.0; for A10G), L4 12,882 (v3.1), L40S 44,145 (v4.1, Lenovo, 3 GPUs), "
              "A100-SXM-80GB 42,379 (v3.0), H100-SXM 88,526 (v3.1) img/s; mlcommons/inference_results_vX "
              "closed/<submitter>/results/<system>/resnet50/Offline/performance/run_1/mlperf_log_summary.txt.",
    "resnet50_flops": "torchvision ResNet50_Weights.IMAGENET1K_V1: 4.09 GFLOPS (multiply-adds) at 224x224, i.e. 8.18 "
                      "billion floating-point operations as Ultralytics counts them (2 per multiply-add).",
    "tail": "MLPerf Inference v0.7 closed, NVIDIA T4 (Triton), ResNet-50 SingleStream p50 1.09 ms, p99 1.27 ms "
            "(tail ratio only).",
}


def batch1_ms(gpu: str, t4: float, a100: float) -> tuple[float, float]:
    """``t1`` on ``gpu`` and the interpolation weight, log-linear in MLPerf ResNet-50 throughput."""
    x = RESNET50_OFFLINE
    w = math.log(x[gpu] / x["T4"]) / math.log(x["A100"] / x["T4"])
    return t4 ** (1 - w) * a100 ** w, w


def profile(gpu: str, size: str, seg: bool, hd: bool) -> dict:
    name = f"yolov8{size}{'-seg' if seg else ''}-{'1280x720' if hd else '640'}"
    t1_detect = {s: batch1_ms(gpu, T4_MS[s], A100_MS[s])[0] for s in SIZES}
    alpha, beta = np.polyfit([GFLOPS[s] for s in SIZES], [t1_detect[s] for s in SIZES], 1)[::-1]
    if seg:
        t4 = SEG_A100_MS * T4_MS["m"] / A100_MS["m"]
        t1, w = batch1_ms(gpu, t4, SEG_A100_MS)
        flops = SEG_GFLOPS
    else:
        t1, w = batch1_ms(gpu, T4_MS[size], A100_MS[size])
        flops = GFLOPS[size]
    k = PIXELS_720 if hd else 1.0
    t1_hd = t1 + beta * flops * (k - 1)
    x_yolo = RESNET50_OFFLINE[gpu] * RESNET50_GFLOPS / flops * FP16_PER_INT8
    m = min(k / x_yolo * 1000.0, t1_hd)
    batches = []
    for b in BATCHES:
        p50 = t1_hd + (b - 1) * m
        batches.append({"batch_size": b, "mean_ms": round(p50, 4), "p50_ms": round(p50, 4),
                        "p99_ms": round(p50 * P99_PER_P50, 4), "throughput_per_s": round(b / p50 * 1000.0, 1)})
    t1_text = ("published (T4)" if gpu == "T4" and not seg else "published (A100, P4d)" if gpu == "A100" else
               f"t1 = t1_T4^(1-w) x t1_A100^w, w = {w:.3f} from MLPerf ResNet-50 Offline {RESNET50_OFFLINE[gpu]:,.0f} "
               f"img/s")
    derivation = (
        f"Derived as planner/data/yolo_profiles.py documents. Batch-1 mean at 640: {t1:.4f} ms ({t1_text}"
        + (f"; the T4 figure for m-seg is 2.18 x {T4_MS['m']}/{A100_MS['m']} = {SEG_A100_MS * T4_MS['m'] / A100_MS['m']:.3f} ms" if seg else "")
        + ")."
        + (f" 1280x720 (letterboxed to 1280x736, k = {k:.2f} times the pixels): t1 = {t1:.4f} + beta {beta:.5f} "
           f"ms/GFLOP x {flops:g} GFLOPs x (k - 1) = {t1_hd:.4f} ms, beta from a least-squares fit t1 = alpha + "
           f"beta x FLOPs over YOLOv8n-x on {gpu} (alpha {alpha:.4f} ms)." if hd else "")
        + f" Batch scaling: latency(b) = t1 + (b - 1) x m, m = {m:.4f} ms = {'k / ' if hd else '1 / '}X_yolo, X_yolo "
        f"= {RESNET50_OFFLINE[gpu]:,.0f} x {RESNET50_GFLOPS} / {flops:g} x {FP16_PER_INT8} = {x_yolo:,.1f} img/s "
        "(ResNet-50 throughput scaled by work per image and by the FP16/INT8 tensor throughput ratio; m at most t1)."
        f" p50 = mean = latency(b); p99 = p50 x {P99_PER_P50:.3f} (T4 MLPerf SingleStream p99/p50). Precision not "
        "stated by the sources; taken as fp16 (FP32 engines would make these figures slow, the safe side).")
    sources = [SOURCES["t4"], SOURCES["a100"], SOURCES["mlperf"], SOURCES["resnet50_flops"], SOURCES["tail"]]
    return {"schema_version": 1, "model": name, "gpu": gpu, "precision": "fp16", "backend": "tensorrt",
            "origin": {"kind": "derived", "date": DATE, "derivation": derivation, "sources": sources},
            "batches": batches}


def all_profiles() -> dict[str, dict]:
    """File name -> profile document, for every GPU type, detector size and resolution, and the segmenter."""
    out = {}
    for gpu in RESNET50_OFFLINE:
        for hd in (False, True):
            for size in SIZES:
                doc = profile(gpu, size, False, hd)
                out[f"{doc['model']}-{gpu}.json"] = doc
            doc = profile(gpu, "m", True, hd)
            out[f"{doc['model']}-{gpu}.json"] = doc
    return out


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


def main() -> int:
    folder = Path(__file__).with_name("profiles")
    for name, doc in all_profiles().items():
        (folder / name).write_text(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
