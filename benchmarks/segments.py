"""Segmented video jobs: overhead vs a single pass, the cost of a kill + resume, and --dedup.

    python -m benchmarks.segments [--clip samples/bbb_2s_180p.mp4] [--backend auto] [--repeats 3]

1. Overhead: the same clip, the same open backend, in one process: today's single pass
   (``pipeline.upscale_video``) vs the segmented job at the default segment length and at 0.5 s,
   interleaved ``--repeats`` times (timings on shared VMs drift; ratios of interleaved runs do not).
2. Resume: the CLI with 0.5 s segments, SIGKILLed once two segments are recorded, then re-run; the
   killed run's time + the resumed run's time vs an uninterrupted run of the CLI.
3. Workers: the CLI with 0.5 s segments as 1 worker (all cores), 2 worker processes (half the cores
   each) and 2 actors of an embedded Ray, interleaved ``--repeats`` times (whole commands: start-up included).
4. --dedup: an animation-like clip made from the sample (each picture held 2 or 3 frames, then
   x264-encoded at crf 18, so holds differ by coding noise only): time with and without --dedup, frames
   skipped, and PSNR of the dedup output against the every-frame output (all frames, and the worst one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import machine_info
from srgan_deploy.dedup import DEFAULT_RULE
from srgan_deploy.jobs.coordinator import QueueOptions, run_queue
from srgan_deploy.jobs.manifest import WorkDir
from srgan_deploy.jobs.plan import DEFAULT_SEGMENT_SECONDS
from srgan_deploy.jobs.workers import InProcess
from srgan_deploy.metrics import psnr
from srgan_deploy.video import EncodeOptions
from srgan_deploy.video_job import VideoJob, upscale_video

RESULTS = Path(__file__).parent / "results"


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def overhead(clip: Path, backend_name: str, repeats: int, tmp: Path) -> dict[str, Any]:
    backend, choice = backend_for(backend_name, Request())
    times: dict[str, list[float]] = {"single_pass": [], "segmented_default": [], "segmented_0.5s": []}
    segments: dict[str, int] = {}
    with backend:
        backend.upscale(np.zeros((1, 64, 64, 3), np.uint8))  # warm-up
        for r in range(repeats):
            for name in times:
                out = tmp / f"{name}-{r}.mp4"
                t0 = time.perf_counter()
                if name == "single_pass":
                    upscale_video(VideoJob(clip, out, EncodeOptions()), backend)
                else:
                    seconds = DEFAULT_SEGMENT_SECONDS if name == "segmented_default" else 0.5
                    (o,) = run_queue([VideoJob(clip, out, EncodeOptions())], QueueOptions(seconds), InProcess(backend))
                    assert o.ok, o.error
                    segments[name] = o.segments
                times[name].append(time.perf_counter() - t0)
                out.unlink()
    base = statistics.median(times["single_pass"])
    return {
        "backend": choice.name,
        "median_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "runs_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "segments": segments,
        "overhead_vs_single_pass": {
            k: round(statistics.median(v) / base - 1, 4) for k, v in times.items() if k != "single_pass"
        },
    }


def _cli(clip: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "srgan_deploy.cli", "video", str(clip), str(out), *extra]


def resume_cost(clip: Path, backend_name: str, tmp: Path) -> dict[str, Any]:
    args = ["-b", backend_name, "--segment-seconds", "0.5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    clean = tmp / "clean.mp4"
    t0 = time.perf_counter()
    subprocess.run(_cli(clip, clean, *args), env=env, check=True, capture_output=True)
    clean_s = time.perf_counter() - t0
    killed = tmp / "killed.mp4"
    t0 = time.perf_counter()
    proc = subprocess.Popen(_cli(clip, killed, *args), env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    done = 0
    while proc.poll() is None:
        saved = WorkDir(killed).load()  # None until the first manifest is written
        done = len(saved.done) if saved else 0
        if done >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(_cli(clip, killed, *args), env=env, check=True, capture_output=True)
    resumed_s = time.perf_counter() - t0
    same = all(np.array_equal(a, b) for a, b in zip(decoded(clean), decoded(killed), strict=True))
    return {
        "segments_done_at_kill": done,
        "uninterrupted_s": round(clean_s, 2),
        "killed_run_s": round(killed_s, 2),
        "resumed_run_s": round(resumed_s, 2),
        "extra_s": round(killed_s + resumed_s - clean_s, 2),
        "extra_fraction": round((killed_s + resumed_s) / clean_s - 1, 3),
        "identical_frames": same,
    }


def workers(clip: Path, backend_name: str, repeats: int, tmp: Path) -> dict[str, Any]:
    variants = {
        "1 worker": [],
        "2 worker processes": ["--workers", "2"],
        "2 Ray actors (embedded)": ["--workers", "2", "--ray"],
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for r in range(repeats):
        for name, extra in variants.items():
            out = tmp / f"w{r}.mp4"
            t0 = time.perf_counter()
            subprocess.run(
                _cli(clip, out, "-b", backend_name, "--segment-seconds", "0.5", "--overwrite", *extra),
                env=env,
                check=True,
                capture_output=True,
            )
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["1 worker"])
    return {
        "median_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "runs_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "speedup_vs_1_worker": {k: round(base / statistics.median(v), 3) for k, v in times.items()},
    }


def animation_clip(clip: Path, out: Path) -> tuple[Path, list[bool]]:
    """The sample's pictures, each held 2 or 3 frames (as animation "on twos/threes"), x264 crf 18."""
    import av

    pictures = decoded(clip)[::2]
    holds = [2 if i % 2 == 0 else 3 for i in range(len(pictures))]
    with av.open(str(out), "w") as c:
        stream = c.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = pictures[0].shape[1], pictures[0].shape[0], "yuv420p"  # type: ignore[attr-defined]
        stream.options = {"crf": "18", "preset": "medium"}
        n = 0
        repeat: list[bool] = []  # per frame: a held copy of the previous frame's picture
        for pic, hold in zip(pictures, holds, strict=True):
            for k in range(hold):
                repeat.append(k > 0)
                frame = av.VideoFrame.from_ndarray(pic, format="rgb24")
                frame.pts = n
                frame.time_base = Fraction(1, 24)
                n += 1
                for packet in stream.encode(frame):  # type: ignore[attr-defined]
                    c.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            c.mux(packet)
    return out, repeat


def dedup(clip: Path, backend_name: str, tmp: Path) -> dict[str, Any]:
    anim, repeat = animation_clip(clip, tmp / "anim.mp4")
    lr = decoded(anim)
    # how far apart the held copies are after x264, and how far apart consecutive different pictures are
    holds: list[tuple[int, float]] = []
    changes: list[tuple[int, float]] = []
    for i in range(1, len(lr)):
        d = np.abs(lr[i].astype(np.int16) - lr[i - 1])
        (holds if repeat[i] else changes).append((int(d.max()), float(d.mean())))
    lossless = EncodeOptions(crf=0, preset="ultrafast", pix_fmt="yuv444p")  # differences come from dedup only
    backend, choice = backend_for(backend_name, Request())
    with backend:
        backend.upscale(np.zeros((1, 64, 64, 3), np.uint8))
        timings = {}
        outcomes = {}
        for name, rule in (("every_frame", None), ("dedup", DEFAULT_RULE), ("every_frame_again", None)):
            out = tmp / f"{name}.mp4"
            t0 = time.perf_counter()
            (o,) = run_queue([VideoJob(anim, out, lossless, dedup=rule)], QueueOptions(), InProcess(backend))
            timings[name] = time.perf_counter() - t0
            outcomes[name] = o
    full = decoded(tmp / "every_frame.mp4")
    skipped = decoded(tmp / "dedup.mp4")
    scores = [psnr(a, b) for a, b in zip(full, skipped, strict=True)]
    finite = [s for s in scores if np.isfinite(s)]
    every = (timings["every_frame"] + timings["every_frame_again"]) / 2
    return {
        "backend": choice.name,
        "rule": DEFAULT_RULE.describe(),
        "frames": len(lr),
        "held_copies": sum(repeat),
        "held_copies_diff_worst_max_and_mean": [max(h[0] for h in holds), round(max(h[1] for h in holds), 3)],
        "picture_changes_diff_smallest_max_and_mean": [
            min(c[0] for c in changes),
            round(min(c[1] for c in changes), 3),
        ],
        "held_copies_within_rule": sum(
            1 for m, a in holds if m <= DEFAULT_RULE.max_diff and a <= DEFAULT_RULE.mean_diff
        ),
        "changes_within_rule": sum(1 for m, a in changes if m <= DEFAULT_RULE.max_diff and a <= DEFAULT_RULE.mean_diff),
        "frames_skipped": outcomes["dedup"].duplicates,
        "every_frame_s": round(every, 2),
        "dedup_s": round(timings["dedup"], 2),
        "speedup": round(every / timings["dedup"], 2),
        "psnr_vs_every_frame_db": {
            "mean_of_differing_frames": round(float(np.mean(finite)), 2) if finite else None,
            "worst": round(min(finite), 2) if finite else None,
            "identical_frames": len(scores) - len(finite),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=Path("samples/bbb_2s_180p.mp4"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["overhead", "resume", "workers", "dedup"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine_info(), "clip": str(args.clip)}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.only in (None, "overhead"):
            report["overhead"] = overhead(args.clip, args.backend, args.repeats, tmp)
            print(json.dumps(report["overhead"], indent=1), flush=True)
        if args.only in (None, "resume"):
            report["resume"] = resume_cost(args.clip, args.backend, tmp)
            print(json.dumps(report["resume"], indent=1), flush=True)
        if args.only in (None, "workers"):
            report["workers"] = workers(args.clip, args.backend, args.repeats, tmp)
            print(json.dumps(report["workers"], indent=1), flush=True)
        if args.only in (None, "dedup"):
            report["dedup"] = dedup(args.clip, args.backend, tmp)
            print(json.dumps(report["dedup"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y-%m-%d')}-segments{'-' + args.only if args.only else ''}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
