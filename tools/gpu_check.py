"""The prepared GPU check (``make gpu-check``): everything a machine with an NVIDIA GPU can prove that the
CPU-only CI cannot, in one run of a few minutes, with one JSON and a short summary.

    python tools/gpu_check.py [--json gpu-check.json] [--work gpu-check-work] [--budget 470]

Steps, each a subprocess with its own time limit and its result recorded, most valuable first: install
the extra that matches the driver's CUDA major (``gpu-cu12`` / ``gpu-cu13``); fp16 TensorRT and
TensorRT-RTX engines of the default model (``srgan-deploy export``); ``srgan-deploy bench`` at 720p and
1080p output on every GPU backend; a 1080p-input video per GPU backend, compared frame by frame with the
torch fp32 reference (PSNR); with two GPUs, bench on ``cuda:1`` and a video with a worker per GPU;
``pytest -m gpu``; the other bundled model's engines. The run stops starting steps when ``--budget``
seconds are spent; a step that could not run counts as failed.

Why it exists: GPU time comes rarely and briefly, so the check is written and tested beforehand and
needs nobody to decide anything while the GPU is there. Exit codes: 0 every step passed, 1 some step
failed or did not run, 2 no NVIDIA GPU here (nothing ran: a check that did not run must not look passed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("srgan-x4-lite", "srgan-x4")
VIDEO_FRAMES = 4
FP16_BUDGET_DB = 40.0  # srgan_deploy.export.fp16.FP16_BUDGET_DB: fp16 engines vs torch fp32
CLIP = ROOT / "samples" / "bbb_2s_180p.mp4"
# per-step limits in seconds (the global --budget caps them further)
LIMITS = {"install": 240, "pytest": 150, "export": 150, "bench": 90, "clip": 60, "video": 150}
# lossless, so the comparison sees the backends, not the encoder; the same settings for every run
ENCODE = [
    "--max-frames",
    str(VIDEO_FRAMES),
    "--crf",
    "0",
    "--preset",
    "ultrafast",
    "--pix-fmt",
    "yuv444p",
    "--overwrite",
]


@dataclass
class Step:
    name: str
    status: str = "not-run"  # passed | failed | timeout | skipped | not-run
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    returncode: int | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")


class Check:
    """Runs steps against one deadline and keeps their records."""

    def __init__(self, work: Path, budget: float) -> None:
        self.work = work
        self.deadline = time.monotonic() + budget
        self.steps: list[Step] = []
        bin_dir = Path(sys.executable).parent
        self.cli = [str(bin_dir / "srgan-deploy")] if (bin_dir / "srgan-deploy").exists() else None
        self.env = {**os.environ, "SRGAN_DEPLOY_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def skip(self, name: str, why: str) -> Step:
        step = Step(name, "skipped", detail=why)
        self.steps.append(step)
        return step

    def run(self, name: str, command: list[str], limit: float) -> Step:
        """Run ``command`` in its own process group; on timeout the whole group is killed (workers too)."""
        step = Step(name, command=command)
        self.steps.append(step)
        timeout = min(limit, self.remaining() - 5)
        if timeout < 10:
            step.detail = "not run: the check's time budget was spent"
            return step
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
            step.returncode = proc.returncode
            step.status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            step.status = "timeout"
            step.detail = f"stopped after {timeout:.0f} s"
        step.seconds = round(time.monotonic() - started, 1)
        step.output_tail = (output or "")[-3000:]
        if step.status == "failed" and not step.detail:
            lines = [line for line in step.output_tail.splitlines() if line.strip()]
            step.detail = lines[-1][:300] if lines else f"exit code {proc.returncode}"
        return step

    def srgan(self, name: str, args: list[str], limit: float) -> Step:
        if self.cli is None:
            return self.skip(name, "the srgan-deploy command is not installed in this environment")
        return self.run(name, [*self.cli, *args], limit)


# ------------------------------------------------------------------------------------------ the GPU


def find_gpus() -> tuple[bool, str | None]:
    """(is there an NVIDIA GPU, nvidia-smi's path or None). Before the install step cuda-python may be
    missing, or too new for the driver: then nvidia-smi is what says whether there is a GPU."""
    from srgan_deploy.errors import SrganDeployError
    from srgan_deploy.gpu.cuda_rt import device_count

    try:
        if device_count() > 0:
            return True, shutil.which("nvidia-smi")
    except SrganDeployError:
        return True, shutil.which("nvidia-smi")  # a GPU is there; this cuda-python cannot talk to its driver
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return False, None
    try:
        listed = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False, nvidia_smi
    return any(line.startswith("GPU ") for line in listed.splitlines()), nvidia_smi


def driver_cuda_major(nvidia_smi: str | None) -> int | None:
    from srgan_deploy.gpu.cuda_rt import driver_version

    version = driver_version()
    if version is not None:
        return version // 1000
    if nvidia_smi is None:
        return None
    try:
        text = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    marker = "CUDA Version:"
    if marker not in text:
        return None
    return int(text.split(marker, 1)[1].strip().split(".")[0])


def extra_requirements(extra: str) -> list[str]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as handle:
        extras: dict[str, list[str]] = tomllib.load(handle)["project"]["optional-dependencies"]
    return list(extras[extra])


def probe(check: Check) -> dict[str, Any]:
    """What the freshly installed environment offers, asked in a new process (after the install)."""
    code = (
        "import json\n"
        "from srgan_deploy.backends import registry\n"
        "from srgan_deploy.gpu import cuda_rt\n"
        "from dataclasses import asdict\n"
        "from srgan_deploy.gpu.trt_runtime import flavour_status\n"
        "n = cuda_rt.device_count()\n"
        "gpus = [asdict(cuda_rt.device_properties(i)) for i in range(n)]\n"
        "avail = {k: list(v) for k, v in registry.availability().items()}\n"
        "print(json.dumps({'gpus': gpus, 'available': avail, 'ort_cuda': registry.ort_has_cuda(),\n"
        "                  'torch_cuda': registry.torch_has_cuda(), 'rtx_module': flavour_status('tensorrt-rtx')[0]}))\n"
    )
    step = check.run("probe GPUs and backends", [sys.executable, "-c", code], 90)
    if step.status != "passed":
        return {}
    try:
        found: dict[str, Any] = json.loads(step.output_tail.strip().splitlines()[-1])
    except (ValueError, IndexError):
        step.status, step.detail = "failed", "the probe printed no JSON"
        return {}
    step.data = found
    return found


def gpu_backends(found: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The GPU backends usable here, and why each of the others is not."""
    available: dict[str, list[Any]] = found.get("available", {})
    usable: list[str] = []
    why_not: dict[str, str] = {}
    for name in ("tensorrt", "tensorrt-rtx"):
        ok, why = available.get(name, [False, "not reported"])
        if ok:
            usable.append(name)
        else:
            why_not[name] = str(why)
    if found.get("ort_cuda"):
        usable.append("onnxruntime")
    else:
        why_not["onnxruntime"] = "onnxruntime has no CUDA provider here"
    if found.get("torch_cuda"):
        usable.append("torch")
    else:
        why_not["torch"] = "torch has no CUDA here (constraints.txt pins the CPU wheel)"
    return usable, why_not


# ------------------------------------------------------------------------------------------ steps


def make_clip(path: Path, frames: int) -> None:
    """A 1080p clip: the sample's first frames, bicubic-upscaled (1080p input is what tiling must handle)."""
    import av
    import cv2
    import numpy as np

    with av.open(str(CLIP)) as source, av.open(str(path), "w") as target:
        stream = target.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for k, frame in enumerate(source.decode(video=0)):
            if k == frames:
                break
            small = frame.to_ndarray(format="rgb24")
            big = np.asarray(cv2.resize(small, (1920, 1080), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
                target.mux(packet)
        for packet in stream.encode():
            target.mux(packet)


def video_psnr(reference: Path, test: Path) -> tuple[list[float], str]:
    """PSNR of each decoded frame of ``test`` against ``reference`` (same frame count expected), and the size."""
    import av

    from srgan_deploy.metrics import psnr

    scores: list[float] = []
    size = "?"
    with av.open(str(reference)) as ref, av.open(str(test)) as out:
        for a, b in zip(ref.decode(video=0), out.decode(video=0), strict=True):
            scores.append(min(psnr(a.to_ndarray(format="rgb24"), b.to_ndarray(format="rgb24")), 99.0))
            size = f"{b.width}x{b.height}"
    return scores, size


def bench(check: Check, backend: str, output: str, device: str = "cuda") -> None:
    report = check.work / f"bench-{backend}-{output}-{device.replace(':', '')}.json"
    name = f"bench {backend} {output}" + ("" if device == "cuda" else f" {device}")
    args = ["bench", "-b", backend, "--device", device, "--output", output, "--iters", "10", "--warmup", "3"]
    step = check.srgan(name, [*args, "--json", str(report)], LIMITS["bench"])
    if step.status == "passed" and report.exists():
        (result,) = json.loads(report.read_text())["results"]
        keys = ("device", "fps", "p50_ms", "p99_ms", "psnr_vs_torch", "max_abs_vs_torch", "extra")
        step.data = {k: result.get(k) for k in keys}
        step.detail = (
            f"{result['fps']:.1f} frames/s, p50 {result['p50_ms']:.1f} ms, {result['psnr_vs_torch']:.1f} dB vs torch"
        )
        if result["psnr_vs_torch"] < FP16_BUDGET_DB:
            step.status = "failed"
            step.detail += f" (below the {FP16_BUDGET_DB:.0f} dB budget)"


def video(
    check: Check, backend: str, clip: Path, reference: Path | None, device: str = "cuda", workers: int = 1
) -> None:
    out = check.work / f"video-{backend}-{device.replace(':', '').replace(',', '-')}.mp4"
    name = f"video 1080p {backend}" + ("" if device == "cuda" else f" {device}")
    args = ["video", str(clip), str(out), "-b", backend, "--device", device, *ENCODE]
    if workers > 1:
        args += ["--workers", str(workers)]
    step = check.srgan(name, args, LIMITS["video"])
    if step.status != "passed" or reference is None:
        if reference is None and step.status == "passed":
            step.detail = "no torch reference to compare with"
        return
    scores, size = video_psnr(reference, out)
    step.data = {"psnr_per_frame": scores, "frames": len(scores), "size": size}
    step.detail = f"{len(scores)} frames {size}, min PSNR {min(scores, default=0.0):.1f} dB vs torch fp32"
    if len(scores) != VIDEO_FRAMES or min(scores, default=0.0) < FP16_BUDGET_DB:
        step.status = "failed"
        step.detail += f" (needs {VIDEO_FRAMES} frames, each >= {FP16_BUDGET_DB:.0f} dB)"


class Exports:
    """fp16 TensorRT and TensorRT-RTX engines of one model through ``srgan-deploy export``, verified on this
    GPU; RTX ahead of time for every target where this GPU is not one (nothing here can run it then)."""

    def __init__(self, check: Check, usable: list[str], why_not: dict[str, str], rtx_installed: bool) -> None:
        self.check, self.usable, self.why_not, self.rtx_installed = check, usable, why_not, rtx_installed

    def run(self, model: str) -> None:
        check = self.check
        engines = check.work / "cache" / "engines"  # the runtime's engine folder: its timing cache is shared
        common = ["export", "-w", model, "--precision", "fp16", "--engine-dir", str(engines)]
        common += ["-o", str(check.work / "export")]
        if "tensorrt" in self.usable:
            check.srgan(f"export {model} tensorrt fp16", [*common, "-f", "tensorrt"], LIMITS["export"])
        else:
            check.skip(f"export {model} tensorrt fp16", self.why_not["tensorrt"])
        rtx = [*common, "-f", "tensorrt-rtx"]
        if "tensorrt-rtx" in self.usable:
            check.srgan(f"export {model} tensorrt-rtx fp16", rtx, LIMITS["export"])
        elif self.rtx_installed:
            step = check.srgan(
                f"export {model} tensorrt-rtx fp16 (ahead of time)",
                [*rtx, "--sm", "75,80,86,89,120,121", "--no-verify"],
                LIMITS["export"],
            )
            step.detail = step.detail or f"not run here: {self.why_not.get('tensorrt-rtx', '')}"
        else:
            check.skip(f"export {model} tensorrt-rtx fp16", self.why_not.get("tensorrt-rtx", "not available"))


def run_check(check: Check, nvidia_smi: str | None) -> dict[str, Any]:
    """The steps, most valuable first: what the time budget cuts is what matters least."""
    major = driver_cuda_major(nvidia_smi)
    facts: dict[str, Any] = {"driver_cuda_major": major, "python": platform.python_version()}
    # 1. the extra for this driver
    if major is None or major < 12:
        check.skip("install", f"driver CUDA major {major}: the extras need CUDA 12 or 13; update the NVIDIA driver")
    else:
        extra = "gpu-cu13" if major >= 13 else "gpu-cu12"
        facts["extra"] = extra
        pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", "constraints.txt"]
        check.run(f"install [{extra}]", [*pip, *extra_requirements(extra)], LIMITS["install"])
    found = probe(check)
    facts["gpus"] = found.get("gpus", [])
    usable, why_not = gpu_backends(found)
    facts["gpu_backends"] = usable
    if found and not usable:
        check.steps.append(Step("GPU backends", "failed", detail="; ".join(f"{k}: {v}" for k, v in why_not.items())))
    # 2. engines of the default model first: the runtime builds below reuse their timing cache
    exports = Exports(check, usable, why_not, bool(found.get("rtx_module")))
    exports.run(MODELS[0])
    for name, why in why_not.items():
        check.skip(f"{name} (bench, video)", why)
    # 3. bench on every GPU backend
    for backend in usable:
        for output in ("720p", "1080p"):
            bench(check, backend, output)
    # 4. a 1080p-input video per GPU backend against torch fp32 on the CPU
    clip = check.work / "clip-1080p.mp4"
    clip_step = check.run("make the 1080p clip", [sys.executable, __file__, "--make-clip", str(clip)], LIMITS["clip"])
    reference: Path | None = None
    if clip_step.status == "passed" and usable:
        ref = check.work / "video-torch-cpu-reference.mp4"
        step = check.srgan(
            "video 1080p torch fp32 (reference, CPU)",
            ["video", str(clip), str(ref), "-b", "torch", "--device", "cpu", "--precision", "fp32", *ENCODE],
            LIMITS["video"],
        )
        reference = ref if step.status == "passed" else None
        for backend in usable:
            video(check, backend, clip, reference)
    # 5. the second GPU
    gpus = found.get("gpus", [])
    if len(gpus) >= 2 and usable:
        first = usable[0]
        bench(check, first, "720p", device="cuda:1")
        if clip_step.status == "passed":
            video(check, first, clip, reference, device="cuda:0,cuda:1", workers=2)
    elif usable:
        check.skip("cuda:1", f"{len(gpus)} GPU visible")
    # 6. the GPU tests, then the other model's engines: last, so the budget cuts what matters least
    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    check.run("pytest -m gpu", pytest, LIMITS["pytest"])
    for model in MODELS[1:]:
        exports.run(model)
    return facts


def summary(facts: dict[str, Any], steps: list[Step], seconds: float) -> list[str]:
    gpus = facts.get("gpus") or [{}]
    first = gpus[0]
    head = f"gpu-check: {len(gpus)} x {first.get('name', '?')} (SM {first.get('compute_capability', '?')})"
    head += f", driver CUDA {facts.get('driver_cuda_major')}, extra {facts.get('extra', '-')}"
    lines = [head]
    for step in steps:
        lines.append(f"  {step.status:8} {step.name:48} {step.seconds:6.1f} s  {step.detail}".rstrip())
    counts = {
        s: sum(1 for step in steps if step.status == s) for s in ("passed", "failed", "timeout", "not-run", "skipped")
    }
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"gpu-check: {tally} in {seconds:.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, default=Path("gpu-check.json"), help="where the results go")
    parser.add_argument("--work", type=Path, default=Path("gpu-check-work"), help="engines, videos, reports")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check (default 470)")
    parser.add_argument("--make-clip", type=Path, help=argparse.SUPPRESS)  # the clip step's own process
    args = parser.parse_args(argv)
    if args.make_clip is not None:
        make_clip(args.make_clip, VIDEO_FRAMES)
        return 0
    found, nvidia_smi = find_gpus()
    if not found:
        where = "nvidia-smi lists none" if nvidia_smi else "nvidia-smi is not installed"
        print(
            f"gpu-check needs an NVIDIA GPU: CUDA sees none and {where}; run it on a machine with one", file=sys.stderr
        )
        return 2
    started = time.monotonic()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    check = Check(work, args.budget)
    facts = run_check(check, nvidia_smi)
    seconds = time.monotonic() - started
    lines = summary(facts, check.steps, seconds)
    report = {
        "facts": facts,
        "seconds": round(seconds, 1),
        "passed": all(step.ok for step in check.steps),
        "steps": [asdict(step) for step in check.steps],
        "summary": lines,
    }
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print("\n".join(lines))
    print(f"gpu-check: details in {args.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
