"""Our OpenVINO backend vs vs-mlrt's OpenVINO plugin, same ONNX network, same frames, interleaved.

    python -m benchmarks.peer.compare_vsmlrt --vs-python /path/to/py312-venv/bin/python [--weights W]

vs-mlrt needs Python >= 3.12 (``pip install vapoursynth vapoursynth-mlrt-ov numpy av`` in its own
venv); it runs as a worker process (benchmarks/peer/vsmlrt_worker.py) that stays warm, and this
driver alternates between the engines round by round, so both see the same machine state. Our
onnxruntime backend runs in the same rounds as the reference for the bf16 speed-up.

Per frame, same 320x180 (or --size) content, five engines: ours-openvino and ours-onnxruntime fed a stream
of single frames (as the video command feeds them), plain-openvino (the best plain OpenVINO configuration:
static shape, THROUGHPUT hint, OpenVINO's optimal number of async requests), vs-mlrt-ov (what its
Backend.OV_CPU() gives: one stream, frames requested one at a time), and ours-openvino-1-frame (one frame
at a time, each waited for: the latency of an image). End to end:
our ``video`` pipeline vs a decode -> vs-mlrt -> encode script with the same decoder, encoder and
settings (PyAV, libx264 crf 18 preset medium).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import machine_info, parse_size

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "samples" / "bbb_2s_180p.mp4"
RESULTS = ROOT / "benchmarks" / "results"


class Worker:
    def __init__(self, python: str) -> None:
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).with_name("vsmlrt_worker.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the vs-mlrt worker exited; run it by hand to see why")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def clip_frames(height: int, width: int, count: int | None) -> np.ndarray:
    import cv2

    from srgan_deploy.video import Decoder

    decoder = Decoder(CLIP, max_frames=count)
    frames = [f.rgb for f in decoder.frames(lambda p: None, print)]
    decoder.close()
    if frames[0].shape[:2] != (height, width):
        frames = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]
    return np.ascontiguousarray(np.stack(frames))


class PlainOpenVino:
    """The best plain OpenVINO configuration found for this graph (issue 27's third column): our uint8 graph
    reshaped to the frame's static shape, THROUGHPUT hint, OpenVINO's optimal number of async requests kept
    busy, each output copied out. What a user writing their own OpenVINO loop would reach at best."""

    def __init__(self, onnx: Path, shape: tuple[int, ...], precision: str) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        network = core.read_model(str(onnx))
        network.reshape({network.inputs[0]: list(shape)})
        self.compiled = core.compile_model(
            network,
            "CPU",
            {
                hints.inference_precision: {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}[precision],
                hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
            },
        )
        self.requests = int(self.compiled.get_property(props.optimal_number_of_infer_requests))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self.outputs: dict[int, np.ndarray] = {}
        self.queue.set_callback(self._done)

    def _done(self, request: Any, index: int) -> None:
        self.outputs[index] = np.array(request.get_output_tensor(0).data, copy=True)

    def run(self, frames: np.ndarray) -> list[np.ndarray]:
        self.outputs = {}
        for i in range(len(frames)):
            self.queue.start_async({0: frames[i : i + 1]}, i)
        self.queue.wait_all()
        return [self.outputs[i] for i in range(len(frames))]


ENGINES = ("ours-openvino", "plain-openvino", "vs-mlrt-ov", "ours-onnxruntime", "ours-openvino-1-frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vs-python", required=True)
    parser.add_argument("--weights", default=None, help="a bundled model, .safetensors or a float NCHW .onnx")
    parser.add_argument("--size", default="320x180", help="input WIDTHxHEIGHT")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--frames", type=int, default=4, help="frames per engine per round")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--video-rounds", type=int, default=3)
    args = parser.parse_args()
    from srgan_deploy.export.onnx import export_onnx
    from srgan_deploy.sources import OnnxFile, model_name, model_source

    height, width = parse_size(args.size)
    source = model_source(args.weights)
    frames = clip_frames(height, width, 48)
    tmp = Path(tempfile.mkdtemp(prefix="peer-"))
    name = model_name(source)
    if isinstance(source, OnnxFile):  # a foreign network: vs-mlrt takes it as it is (float NCHW [0, 1])
        onnx = source.path
    else:
        onnx = export_onnx(args.weights, tmp / "model-float32.onnx", io="float32").path
    np.save(tmp / "frames.npy", frames)
    report: dict[str, Any] = {"machine": machine_info(), "model": name, "input": [height, width], "per_frame": {}}
    report["machine"]["cpu_flags"] = cpu_flags()
    ort, _ = backend_for("onnxruntime", Request(device="cpu"), args.weights)
    with ort:
        list(ort.upscale_many([frames[:1]]))
        for precision in args.precisions.split(","):
            worker = Worker(args.vs_python)
            # int8: our calibrated int8 graph against vs-mlrt's fastest at its own accuracy (bf16); the plain
            # OpenVINO column runs the same int8 graph
            peer_precision = "bf16" if precision == "int8" else precision
            ready = worker.ask(cmd="frames", path=str(tmp / "frames.npy"), onnx=str(onnx), precision=peer_precision)
            ours, _ = backend_for("openvino", Request(precision=precision), args.weights)
            times: dict[str, list[float]] = {engine: [] for engine in ENGINES}
            with ours:
                list(ours.upscale_many(frames[i : i + 1] for i in range(2)))
                ours.upscale(frames[:1])
                graph = getattr(ours, "onnx", None)  # the uint8 graph our backend compiled
                assert graph is not None
                plain = PlainOpenVino(graph.path, (1, height, width, 3), precision)
                plain.run(frames[:2])
                first = plain.run(frames[:1])[0]
                agree = float(np.abs(first.astype(int) - ours.upscale(frames[:1]).astype(int)).max())
                for r in range(args.rounds):
                    start = (r * args.frames) % (len(frames) - args.frames)
                    chunk = frames[start : start + args.frames]
                    order = list(ENGINES) if r % 2 == 0 else list(reversed(ENGINES))
                    for engine in order:
                        t0 = time.perf_counter()
                        if engine == "vs-mlrt-ov":
                            seconds = worker.ask(cmd="run", start=start, count=args.frames)["seconds"]
                        elif engine == "plain-openvino":
                            plain.run(chunk)
                        elif engine == "ours-openvino-1-frame":  # one frame at a time, waiting for each (latency)
                            for i in range(len(chunk)):
                                ours.upscale(chunk[i : i + 1])
                        else:  # a stream of frames, as the video command feeds it
                            backend = ours if engine == "ours-openvino" else ort
                            for _ in backend.upscale_many(chunk[i : i + 1] for i in range(len(chunk))):
                                pass
                        if engine != "vs-mlrt-ov":
                            seconds = time.perf_counter() - t0
                        times[engine].append(1e3 * seconds / args.frames)
                del plain
            worker.close()
            med = {k: statistics.median(v) for k, v in times.items()}
            report["per_frame"][precision] = {
                "ms_per_frame_median": med,
                "ms_per_frame_rounds": times,
                "ours_vs_vsmlrt": med["vs-mlrt-ov"] / med["ours-openvino"],
                "ours_vs_plain_openvino": med["plain-openvino"] / med["ours-openvino"],
                "ours_openvino_vs_ours_onnxruntime": med["ours-onnxruntime"] / med["ours-openvino"],
                "ours_vs_plain_max_abs_diff": agree,
                "vapoursynth": ready.get("vapoursynth"),
                "vs_mlrt_precision": peer_precision,
            }
            print(precision, json.dumps(report["per_frame"][precision]["ms_per_frame_median"]), flush=True)
    report["video"] = video_rounds(args, onnx, tmp)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-vm-peer-vsmlrt-{name}-{width}x{height}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    print(f"wrote {path}")


def cpu_flags() -> list[str]:
    """The CPU features that decide OpenVINO's kernels (AMX, AVX-512 BF16/VNNI, AVX2)."""
    wanted = {"amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "avx_vnni"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def video_rounds(args: argparse.Namespace, onnx: Path, tmp: Path) -> dict[str, Any]:
    """Whole clip, bf16 both sides: our video command's pipeline vs decode -> vs-mlrt -> encode."""
    from srgan_deploy.video import EncodeOptions
    from srgan_deploy.video_job import VideoJob, upscale_video

    if args.video_rounds < 1:
        return {}
    worker = Worker(args.vs_python)
    ours, _ = backend_for("openvino", Request(precision="bf16"), args.weights)
    seconds: dict[str, list[float]] = {"ours-video": [], "vs-mlrt-script": [], "ours-inference-only": []}
    frames = clip_frames(180, 320, None)  # every frame of the clip, as the video runs see
    with ours:
        ours.upscale(frames[:1])
        for r in range(args.video_rounds):
            out = tmp / f"ours-{r}.mp4"
            t0 = time.perf_counter()
            result = upscale_video(VideoJob(CLIP, out, EncodeOptions(), overwrite=True), ours)
            seconds["ours-video"].append(time.perf_counter() - t0)
            reply = worker.ask(
                cmd="video", input=str(CLIP), output=str(tmp / f"vs-{r}.mp4"), onnx=str(onnx), precision="bf16"
            )
            seconds["vs-mlrt-script"].append(reply["seconds"])
            t0 = time.perf_counter()
            for _ in ours.upscale_many(f[None] for f in frames):
                pass
            seconds["ours-inference-only"].append(time.perf_counter() - t0)
    worker.close()
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "clip": str(CLIP.relative_to(ROOT)),
        "frames": result.frames,
        "seconds_median": med,
        "seconds_rounds": seconds,
        "ours_vs_vsmlrt": med["vs-mlrt-script"] / med["ours-video"],
        "pipeline_fraction_of_inference_only": med["ours-inference-only"] / med["ours-video"],
    }


if __name__ == "__main__":
    main()
