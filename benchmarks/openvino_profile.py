"""Where OpenVINO's time goes, per layer: the backend's old configuration against its current one.

    python -m benchmarks.openvino_profile [--weights srgan-x4-lite] [--size 320x180] [--precision bf16]

before: the dynamic-shape graph compiled with the LATENCY hint (one stream on every core), one frame at a time;
after: the graph reshaped to the frame's static shape with the THROUGHPUT hint, as ``openvino`` runs a stream
of frames (one stream per core; the per-layer times are those of one stream, on its own core).
Both with OpenVINO's profiling counters (PERF_COUNT), 3 frames averaged after 2 warm-up frames. Written to
benchmarks/results/<date>-<host>-openvino-profile-<model>.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.bench import machine_info, parse_size

RESULTS = Path(__file__).parent / "results"


def profile(onnx: Path, shape: tuple[int, int, int, int], precision: str, static: bool) -> dict[str, Any]:
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    network = core.read_model(str(onnx))
    if static:
        network.reshape({network.inputs[0]: list(shape)})
    mode = hints.PerformanceMode.THROUGHPUT if static else hints.PerformanceMode.LATENCY
    compiled = core.compile_model(
        network,
        "CPU",
        {
            hints.inference_precision: {"bf16": "bf16", "fp32": "f32"}[precision],
            hints.performance_mode: mode,
            props.enable_profiling: True,
        },
    )
    request = compiled.create_infer_request()
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for _ in range(2):
        request.infer({0: frame})
    by_type: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        request.infer({0: frame})
        walls.append(time.perf_counter() - t0)
        for info in request.get_profiling_info():
            ms = info.real_time.total_seconds() * 1e3 / 3
            by_type[f"{info.node_type} ({info.exec_type})"] += ms
            by_node[info.node_name] += ms
    total = sum(by_type.values())
    return {
        "config": f"{'static' if static else 'dynamic'} shape, {'THROUGHPUT' if static else 'LATENCY'} hint",
        "streams": int(compiled.get_property(props.num_streams)),
        "threads": int(compiled.get_property(props.inference_num_threads)),
        "wall_ms_one_frame": 1e3 * min(walls),
        "layer_ms_total": total,
        "by_type_percent": {
            k: round(100 * v / total, 1) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])[:8]
        },
        "top_layers_ms": {k: round(v, 1) for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:6]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="srgan-x4-lite")
    parser.add_argument("--size", default="320x180", help="input WIDTHxHEIGHT")
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args()
    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import backend_for

    height, width = parse_size(args.size)
    backend, _ = backend_for("openvino", Request(precision=args.precision), args.weights)
    with backend:
        graph = getattr(backend, "onnx", None)
        assert graph is not None
        onnx = graph.path
        name = backend.model.name
    shape = (1, height, width, 3)
    report = {
        "machine": machine_info(),
        "model": name,
        "input": [height, width],
        "precision": args.precision,
        "before": profile(onnx, shape, args.precision, static=False),
        "after": profile(onnx, shape, args.precision, static=True),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-{platform.node() or 'host'}-openvino-profile-{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
