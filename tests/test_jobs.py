"""Segmented, resumable video jobs: frame-exact joins, resume after SIGKILL, workers, Ray, queues, dedup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from srgan_deploy.cli import app, fill_optional_values
from srgan_deploy.cpus import usable_cpus
from srgan_deploy.dedup import DedupRule, collapse, parse_rule
from srgan_deploy.errors import ConfigError, OutputError, OutputExistsError
from srgan_deploy.jobs.coordinator import QueueOptions, Reporter, run_queue
from srgan_deploy.jobs.events import Done
from srgan_deploy.jobs.index import InputIndex, index_input
from srgan_deploy.jobs.manifest import WorkDir, work_dir_for
from srgan_deploy.jobs.plan import plan_segments
from srgan_deploy.jobs.workers import InProcess
from srgan_deploy.video import DecodedFrame, EncodeOptions
from srgan_deploy.video_job import VideoJob
from tests.clips import audio_duration, make_clip, read_video
from tests.conftest import make_backend

FAST = EncodeOptions(codec="libx264", crf=12, preset="ultrafast")
# frame times in ms: 24 fps, then a stretch at 60 fps, then 10 fps (variable frame rate across boundaries)
VFR_MS = (
    [round(i * 1000 / 24) for i in range(12)] + [500 + i * 17 for i in range(12)] + [704 + i * 100 for i in range(12)]
)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("vfr") / "vfr.mp4", width=64, height=48, frames=len(VFR_MS), pts=VFR_MS)


@pytest.fixture(scope="module")
def bicubic() -> object:
    backend = make_backend("bicubic")
    backend.open()
    yield backend
    backend.close()


def frames_of(path: Path) -> tuple[list[np.ndarray], list[Fraction]]:
    frames, pts, tb, _ = read_video(path)
    return frames, [p * tb for p in pts]


def input_times(path: Path) -> list[Fraction]:
    _, pts, tb, _ = read_video(path)
    return [p * tb for p in pts]


def run(jobs: list[VideoJob], backend: object, seconds: float = 0.25, **kw: object) -> list:  # type: ignore[type-arg]
    warnings: list[str] = []
    out = run_queue(
        jobs,
        QueueOptions(segment_seconds=seconds, **kw),
        InProcess(backend),
        Reporter(warn=warnings.append),  # type: ignore[arg-type]
    )
    return out


# ------------------------------------------------------------------ plan and index


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(1, 5000), min_size=1, max_size=80),
    seconds=st.floats(0.01, 3.0),
    start=st.one_of(st.none(), st.floats(0, 2.0)),
    duration=st.one_of(st.none(), st.floats(0.01, 5.0)),
    max_frames=st.one_of(st.none(), st.integers(1, 100)),
)
def test_segments_cover_every_chosen_frame_exactly_once(
    steps: list[int], seconds: float, start: float | None, duration: float | None, max_frames: int | None
) -> None:
    pts = [int(x) for x in np.cumsum([0, *steps])]
    index = InputIndex(Path("x.mp4"), Fraction(1, 1000), 0, tuple(pts), ((0, 0),), True, "", "fp", 40)
    try:
        plan = plan_segments(index, seconds, start, duration, max_frames)
    except Exception as exc:  # noqa: BLE001 - only "nothing in range" may fail
        assert "no video frames" in str(exc)
        return
    first = round((start or 0) * 1000)
    end = first + round(duration * 1000) if duration is not None else None
    wanted = [p for p in pts if p >= first and (end is None or p < end)][:max_frames]
    got = []
    for seg in plan.segments:
        assert seg.window is not None
        inside = [p for p in pts if seg.window.first <= p and (seg.window.end is None or p < seg.window.end)]
        assert len(inside) == seg.frames
        got += inside
    assert got == wanted and plan.frames == len(wanted)
    assert [s.index for s in plan.segments] == list(range(len(plan.segments)))


def test_index_reads_every_frame_and_fingerprints_content(vfr_clip: Path, tmp_path: Path) -> None:
    index = index_input(vfr_clip)
    assert index.regular and len(index.pts) == len(VFR_MS)
    assert [p * index.time_base for p in index.pts] == input_times(vfr_clip)
    other = make_clip(tmp_path / "other.mp4", frames=len(VFR_MS), pts=[t + 1 for t in VFR_MS])
    assert index_input(other).fingerprint != index.fingerprint
    assert index_input(vfr_clip).fingerprint == index.fingerprint


# ------------------------------------------------------------------ frame-exact join


def test_segmented_output_has_exactly_the_input_frames_times_and_audio(
    vfr_clip: Path, tmp_path: Path, bicubic: object
) -> None:
    out = tmp_path / "out.mp4"
    job = VideoJob(vfr_clip, out, FAST)
    (outcome,) = run([job], bicubic, seconds=0.2)
    assert outcome.ok, outcome.error
    assert outcome.segments >= 5
    frames, times = frames_of(out)
    assert times == input_times(vfr_clip)  # none missing or doubled at boundaries, VFR times kept
    assert abs(audio_duration(out) - audio_duration(vfr_clip)) < 1e-3
    assert frames[0].shape == (48 * 4, 64 * 4, 3)
    # every segment starts on an output keyframe
    with av.open(str(out)) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert len(keys) == outcome.segments and keys[0] == 0
    assert not work_dir_for(out).exists()


def test_segments_match_a_single_pass_frame_for_frame(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    lossless = EncodeOptions(codec="libx264", crf=0, preset="ultrafast", pix_fmt="yuv444p")
    many = run([VideoJob(vfr_clip, tmp_path / "many.mkv", lossless)], bicubic, seconds=0.15)
    one = run([VideoJob(vfr_clip, tmp_path / "one.mkv", lossless)], bicubic, seconds=100)
    assert many[0].segments > 3 and one[0].segments == 1
    a, ta = frames_of(tmp_path / "many.mkv")
    b, tb = frames_of(tmp_path / "one.mkv")
    assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_range_options_cut_the_same_frames_as_a_single_pass(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    job = VideoJob(vfr_clip, tmp_path / "cut.mp4", FAST, start=0.3, max_frames=15)
    (outcome,) = run([job], bicubic, seconds=0.1)
    assert outcome.ok and outcome.frames == 15
    _, times = frames_of(tmp_path / "cut.mp4")
    src = [t for t in input_times(vfr_clip) if t >= Fraction(3, 10)][:15]
    assert times == [t - src[0] + (src[0] - Fraction(3, 10)) for t in src]


def test_input_without_regular_timestamps_runs_as_one_segment(tmp_path: Path, bicubic: object) -> None:
    # two recordings back to back: the timestamps restart, so some repeat
    first = make_clip(tmp_path / "a.ts", frames=8, audio=False, fmt="mpegts")
    second = make_clip(tmp_path / "b.ts", frames=8, audio=False, fmt="mpegts")
    src = tmp_path / "joined.ts"
    src.write_bytes(first.read_bytes() + second.read_bytes())
    index = index_input(src)
    assert not index.regular and "repeated" in index.reason
    warnings: list[str] = []
    (outcome,) = run_queue(
        [VideoJob(src, tmp_path / "o.mkv", FAST)],
        QueueOptions(0.1),
        InProcess(bicubic),
        Reporter(warn=warnings.append),  # type: ignore[arg-type]
    )
    assert outcome.ok and outcome.segments == 1 and outcome.frames == 16
    assert any("one segment" in w for w in warnings)


# ------------------------------------------------------------------ resume


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "srgan_deploy.cli", "video", *args]


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(
    tmp_path: Path, tiny_weights: Path, vfr_clip: Path
) -> None:
    vfr = [i * 42 + (i % 3) * 12 for i in range(96)]  # variable frame timing (30 to 54 ms)
    src = make_clip(tmp_path / "long.mp4", frames=96, width=96, height=64, pts=vfr)
    args = [
        "-w",
        str(tiny_weights),
        "-b",
        "torch",
        "--threads",
        "1",
        "--preset",
        "ultrafast",
        "--segment-seconds",
        "0.3",
    ]
    killed = tmp_path / "killed.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(str(src), str(killed), *args), env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        saved = WorkDir(killed).load()  # None until the first manifest is written
        done = len(saved.done) if saved else 0
        if done >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= done < 10, f"the kill did not land mid-way ({done} segments done)"
    assert not killed.exists()

    resumed = subprocess.run(_cli(str(src), str(killed), *args), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "segments reused" in resumed.stdout
    clean = tmp_path / "clean.mp4"
    whole = subprocess.run(_cli(str(src), str(clean), *args), env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    a, ta = frames_of(killed)
    b, tb = frames_of(clean)
    assert len(a) == 96 and ta == tb == input_times(src)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # bit-identical decoded frames
    assert abs(audio_duration(killed) - audio_duration(src)) < 1e-3
    assert not work_dir_for(killed).exists()


def _record(index: int, data: bytes, frames: int = 1) -> dict[str, object]:
    """A manifest record of a finished segment holding ``data`` (what the coordinator writes)."""
    import hashlib

    from srgan_deploy.jobs.manifest import segment_name

    return {
        "index": index,
        "file": segment_name(index),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "frames": frames,
        "duplicates": 0,
        "rotation": 0.0,
        "bad_packets": 0,
        "seconds": 0.1,
        "codec": "libx264",
        "first_time": "0" if frames else None,
    }


def test_changed_options_start_over_and_say_what_changed(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    out = tmp_path / "o.mp4"
    work = WorkDir(out)
    job = VideoJob(vfr_clip, out, FAST)
    # leave the work of a run with another crf behind, as a kill would
    from srgan_deploy.jobs.coordinator import _open_input

    item = _open_input(
        0, VideoJob(vfr_clip, out, EncodeOptions(crf=30, preset="ultrafast")), QueueOptions(0.2), Reporter()
    )
    item.manifest.done[0] = _record(0, b"x", frames=1)
    item.work.save(item.manifest)
    item.work.release()
    warnings: list[str] = []
    (outcome,) = run_queue([job], QueueOptions(0.2), InProcess(bicubic), Reporter(warn=warnings.append))  # type: ignore[arg-type]
    assert outcome.ok and outcome.reused == 0
    assert any("encode crf 30 -> 12" in w and "starting over" in w for w in warnings), warnings
    assert not work.path.exists()


def test_restart_discards_and_a_second_run_is_locked_out(vfr_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    first = WorkDir(out)
    first.acquire()
    (first.path / "seg-00000.mp4").write_bytes(b"old")
    second = WorkDir(out)
    with pytest.raises(OutputError, match="being written by srgan-deploy pid"):
        second.acquire()
    first.clear()
    assert [p.name for p in first.path.iterdir()] == ["lock"]
    first.release()
    second.acquire()
    second.remove()


# ------------------------------------------------------------------ workers, Ray, queues


def _cli_run(*args: str) -> object:
    return CliRunner().invoke(app, ["video", *args])


def test_two_worker_processes_and_local_ray_give_the_same_frames(
    vfr_clip: Path, tmp_path: Path, tiny_weights: Path
) -> None:
    common = ["-w", str(tiny_weights), "-b", "onnxruntime", "--preset", "ultrafast", "--segment-seconds", "0.2"]
    one = _cli_run(str(vfr_clip), str(tmp_path / "w1.mp4"), *common)
    assert one.exit_code == 0, one.output  # type: ignore[attr-defined]
    two = _cli_run(str(vfr_clip), str(tmp_path / "w2.mp4"), *common, "--workers", "2", "--threads", "1")
    assert two.exit_code == 0, two.output  # type: ignore[attr-defined]
    ref, times = frames_of(tmp_path / "w1.mp4")
    got, got_times = frames_of(tmp_path / "w2.mp4")
    assert got_times == times == input_times(vfr_clip)
    assert all(np.array_equal(x, y) for x, y in zip(ref, got, strict=True))
    pytest.importorskip("ray")
    for transfer in ("shared", "objects"):  # paths every worker sees / bytes through Ray's object store
        out = tmp_path / f"ray-{transfer}.mp4"
        ray_run = _cli_run(str(vfr_clip), str(out), *common, "--workers", "2", "--ray-transfer", transfer, "--ray")
        assert ray_run.exit_code == 0, ray_run.output  # type: ignore[attr-defined]
        got, got_times = frames_of(out)
        assert got_times == times
        assert all(np.array_equal(x, y) for x, y in zip(ref, got, strict=True))


def test_queue_with_a_corrupt_input_finishes_the_others_and_fails(
    vfr_clip: Path, tmp_path: Path, tiny_weights: Path
) -> None:
    good = make_clip(tmp_path / "in" / "a.mp4", frames=10) if (tmp_path / "in").mkdir() is None else None
    assert good is not None
    bad = tmp_path / "in" / "b.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    result = _cli_run(
        str(tmp_path / "in"), str(vfr_clip), "-o", str(tmp_path / "out"), "-b", "bicubic", "--preset", "ultrafast"
    )
    assert result.exit_code == 2
    outs = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert outs == ["a.mp4", "vfr.mp4"]
    assert len(read_video(tmp_path / "out" / "a.mp4")[0]) == 10
    assert input_times(tmp_path / "out" / "vfr.mp4") == input_times(vfr_clip)
    err = result.stderr  # type: ignore[attr-defined]
    assert "b.mp4" in err and "1 of 3 video(s) failed" in err
    assert "2 of 3 videos done" in result.stdout  # type: ignore[attr-defined]


def test_video_argument_errors_are_one_line(tmp_path: Path, vfr_clip: Path) -> None:
    three = _cli_run(str(vfr_clip), str(vfr_clip), str(tmp_path / "x.mp4"))
    assert three.exit_code == 2 and "-o FOLDER" in three.stderr  # type: ignore[attr-defined]
    seg = _cli_run(str(vfr_clip), str(tmp_path / "x.mp4"), "--segment-seconds", "0")
    assert seg.exit_code == 2 and "--segment-seconds" in seg.stderr  # type: ignore[attr-defined]
    ray = _cli_run(str(vfr_clip), str(tmp_path / "x.mp4"), "--ray", "http://nope")
    assert ray.exit_code == 2 and "not a Ray address" in ray.stderr  # type: ignore[attr-defined]
    dev = _cli_run(str(vfr_clip), str(tmp_path / "x.mp4"), "--device", "cuda:0,cpu")
    assert dev.exit_code == 2 and "GPUs only" in dev.stderr  # type: ignore[attr-defined]


def test_ray_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from srgan_deploy.errors import BackendUnavailableError
    from srgan_deploy.jobs.ray_pool import import_ray

    real = builtins.__import__

    def no_ray(name: str, *args: object, **kw: object) -> object:
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(BackendUnavailableError, match=r"srgan-deploy\[cluster\]"):
        import_ray()


def test_bare_optional_values_are_filled_in() -> None:
    assert fill_optional_values(["video", "a.mp4", "b.mp4", "--ray"]) == ["video", "a.mp4", "b.mp4", "--ray", "local"]
    assert fill_optional_values(["video", "--ray", "a.mp4", "b.mp4"])[:3] == ["video", "--ray", "local"]
    assert fill_optional_values(["--ray", "auto"]) == ["--ray", "auto"]
    assert fill_optional_values(["--ray", "ray://head:10001"]) == ["--ray", "ray://head:10001"]
    assert fill_optional_values(["--dedup", "--workers", "2"]) == ["--dedup", "default", "--workers", "2"]
    assert fill_optional_values(["--dedup", "4,0.2", "a"]) == ["--dedup", "4,0.2", "a"]
    assert fill_optional_values(["--dedup", "lots", "a.mp4"]) == ["--dedup", "lots", "a.mp4"]  # then: not a rule
    assert fill_optional_values(["--ray", "headnode", "a.mp4"]) == ["--ray", "headnode", "a.mp4"]
    # a negative number is a (bad) value to refuse in the option's words, not click's "No such option: -1"
    assert fill_optional_values(["--dedup", "-1,0.5", "a"]) == ["--dedup", "-1,0.5", "a"]
    assert fill_optional_values(["--dedup", "-.5", "a"]) == ["--dedup", "-.5", "a"]
    assert fill_optional_values(["--dedup", "-o", "out"]) == ["--dedup", "default", "-o", "out"]


# ------------------------------------------------------------------ dedup


def test_collapse_keeps_order_and_compares_with_the_reference() -> None:
    base = np.zeros((4, 4, 3), np.uint8)
    frames = [DecodedFrame(base + v, i) for i, v in enumerate([0, 0, 1, 2, 3, 50, 50])]
    out = list(collapse(iter(frames), DedupRule(max_diff=2, mean_diff=2.0)))
    # 0,0,1,2 are within 2 of the reference (0); 3 is not (a slow fade cannot creep); 50,50 repeat
    assert [(f.pts, f.repeats) for f in out] == [(0, [1, 2, 3]), (4, []), (5, [6])]
    assert parse_rule("exact") == DedupRule(0, 0.0)
    with pytest.raises(ConfigError, match="MAX,MEAN"):
        parse_rule("lots")


def test_dedup_reuses_outputs_of_held_frames(tmp_path: Path, bicubic: object) -> None:
    held = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]  # drawings held 2-3 frames, as animation is
    src = tmp_path / "anim.mkv"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv444p"  # type: ignore[attr-defined]
        for i, drawing in enumerate(held):
            img = np.zeros((32, 32, 3), np.uint8)
            img[8:16, 4 + 6 * drawing : 12 + 6 * drawing] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")
            frame.pts = i
            for packet in stream.encode(frame):  # type: ignore[attr-defined]
                out.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            out.mux(packet)
    lossless = EncodeOptions(codec="libx264", crf=0, preset="ultrafast", pix_fmt="yuv444p")
    (plain,) = run([VideoJob(src, tmp_path / "all.mkv", lossless)], bicubic, seconds=100)
    (skipped,) = run([VideoJob(src, tmp_path / "dedup.mkv", lossless, dedup=DedupRule(0, 0.0))], bicubic, seconds=100)
    assert plain.duplicates == 0 and skipped.duplicates == 6
    a, ta = frames_of(tmp_path / "all.mkv")
    b, tb = frames_of(tmp_path / "dedup.mkv")
    assert ta == tb and len(b) == 10
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # exact duplicates: identical output


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_segmented_output_keeps_rotation_and_colour(tmp_path: Path, bicubic: object, suffix: str) -> None:
    def tagged(video: av.VideoStream) -> None:
        video.set_display_rotation(90)
        cc = video.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range

    src = make_clip(tmp_path / f"rot{suffix}", 32, 24, frames=12, audio=False, configure=tagged)
    dst = tmp_path / f"out{suffix}"
    (outcome,) = run([VideoJob(src, dst, FAST)], bicubic, seconds=0.1)
    assert outcome.ok and outcome.segments >= 3
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        rot_in = next(a.decode(video=0)).rotation
        assert rot_in != 0 and next(b.decode(video=0)).rotation == rot_in
        cc = b.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)


def test_a_killed_worker_process_has_its_segment_retried(vfr_clip: Path, tmp_path: Path, tiny_weights: Path) -> None:
    import multiprocessing

    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import choose
    from srgan_deploy.jobs.events import Done
    from srgan_deploy.jobs.workers import ProcessPool, worker_specs
    from srgan_deploy.sources import model_source

    choice = choose("torch", Request(device="cpu", threads=1))
    specs = worker_specs(choice, model_source(str(tiny_weights)), 2, ["cpu"])
    killed: list[int] = []
    notes: list[str] = []

    class Killing(ProcessPool):
        """Kills every worker process at the first finished segment: the ones rendering must be retried."""

        def run(self, tasks, on_event, should_run):  # type: ignore[no-untyped-def]
            def spy(event: object) -> None:
                if isinstance(event, Done) and not killed:
                    for child in multiprocessing.active_children():
                        if child.name.startswith("srgan-worker"):
                            killed.append(child.pid or 0)
                            child.kill()
                on_event(event)  # type: ignore[arg-type]

            super().run(tasks, spy, should_run)

    out = tmp_path / "retried.mp4"
    (outcome,) = run_queue(
        [VideoJob(vfr_clip, out, FAST)], QueueOptions(0.1), Killing(specs), Reporter(warn=notes.append)
    )
    assert killed and outcome.ok, outcome.error
    assert any("retrying segment" in n for n in notes), notes
    reference = tmp_path / "ref.mp4"
    backend = make_backend("torch", tiny_weights, device="cpu", threads=1)
    with backend:
        run_queue([VideoJob(vfr_clip, reference, FAST)], QueueOptions(0.1), InProcess(backend))
    a, ta = frames_of(out)
    b, tb = frames_of(reference)
    assert ta == tb == input_times(vfr_clip)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_worker_specs_share_cores_budget_and_gpus() -> None:
    from srgan_deploy.backends.options import OrtOptions, TensorRTOptions
    from srgan_deploy.backends.registry import Choice
    from srgan_deploy.jobs.workers import parse_devices, worker_specs
    from srgan_deploy.sources import Weights

    cpu = worker_specs(Choice("onnxruntime", OrtOptions(memory_budget=None), "t"), Weights(None), 2, ["cpu"])
    cores = usable_cpus()
    assert [s.choice.options.threads for s in cpu] == [max(1, cores // 2)] * 2  # type: ignore[union-attr]
    budgets = {s.choice.options.memory_budget for s in cpu}
    assert len(budgets) == 1 and next(iter(budgets)) > 0  # type: ignore[operator]
    gpus = parse_devices("cuda:0,cuda:1")
    trt = worker_specs(Choice("tensorrt", TensorRTOptions(), "t"), Weights(None), 3, gpus)
    assert [s.choice.options.device for s in trt] == [0, 1, 0]  # type: ignore[union-attr]
    ort = worker_specs(Choice("onnxruntime", OrtOptions(device="cuda:0"), "t"), Weights(None), 2, gpus)
    assert [s.choice.options.device for s in ort] == ["cuda:0", "cuda:1"]  # type: ignore[union-attr]
    one = worker_specs(Choice("onnxruntime", OrtOptions(memory_budget=123), "t"), Weights(None), 1, ["cpu"])
    assert one[0].choice.options.threads is None and one[0].choice.options.memory_budget == 123  # type: ignore[union-attr]


def test_subtitles_and_audio_are_copied_once_across_segments(tmp_path: Path, bicubic: object) -> None:
    """tests/data/subs.mkv (28 KB) was made with FFmpeg, which CI does not have:
    ffmpeg -f lavfi -i testsrc=size=64x48:rate=24:duration=1.5 -f lavfi -i sine=frequency=440:duration=1.5 \\
        -i s.srt -map 0 -map 1 -map 2 -c:v libx264 -preset ultrafast -c:a aac -c:s srt subs.mkv
    (two cues: 0.1-0.6 s and 0.9-1.4 s)."""
    src = Path(__file__).parent / "data" / "subs.mkv"
    out = tmp_path / "subs_x4.mkv"
    (outcome,) = run([VideoJob(src, out, FAST)], bicubic, seconds=0.4)
    assert outcome.ok and outcome.segments >= 4

    def packets(path: Path, kind: str) -> list[tuple[Fraction, bytes]]:
        with av.open(str(path)) as c:
            stream = next(s for s in c.streams if s.type == kind)
            return [(p.pts * p.time_base, bytes(p)) for p in c.demux(stream) if p.size]  # type: ignore[operator]

    assert packets(out, "subtitle") == packets(src, "subtitle")  # both cues, once, at their times
    assert [t for t, _ in packets(out, "audio")] == [t for t, _ in packets(src, "audio")]
    assert input_times(out) == input_times(src)


def test_a_run_killed_while_joining_only_joins_next_time(
    vfr_clip: Path, tmp_path: Path, bicubic: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srgan_deploy.jobs.coordinator as coordinator

    out = tmp_path / "o.mp4"
    real_join = coordinator.join_segments

    def dies(*args: object, **kw: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(coordinator, "join_segments", dies)
    with pytest.raises(Exception, match="interrupted"):
        run([VideoJob(vfr_clip, out, FAST)], bicubic, seconds=0.2)
    assert not out.exists() and (work_dir_for(out) / "manifest.json").exists()
    monkeypatch.setattr(coordinator, "join_segments", real_join)

    rendered: list[object] = []

    class Recording(InProcess):
        def run(self, tasks, on_event, should_run):  # type: ignore[no-untyped-def]
            rendered.extend(tasks)
            super().run(tasks, on_event, should_run)

    (outcome,) = run_queue([VideoJob(vfr_clip, out, FAST)], QueueOptions(0.2), Recording(bicubic), Reporter())  # type: ignore[arg-type]
    assert outcome.ok and rendered == [] and outcome.reused == outcome.segments
    assert input_times(out) == input_times(vfr_clip)


def test_ray_actors_that_die_have_their_segments_retried(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    ray = pytest.importorskip("ray")
    from srgan_deploy.backends.registry import choose
    from srgan_deploy.jobs.events import Done
    from srgan_deploy.jobs.ray_pool import RayPool
    from srgan_deploy.jobs.workers import worker_specs
    from srgan_deploy.sources import Weights

    killed: list[object] = []

    class Killing(RayPool):
        """Kills every actor at the first finished segment, as a lost node would."""

        def _run(self, ray_module, tasks, on_event, should_run, actors):  # type: ignore[no-untyped-def]
            def spy(event: object) -> None:
                if isinstance(event, Done) and not killed:
                    for actor in list(actors):
                        killed.append(actor)
                        ray_module.kill(actor, no_restart=True)
                on_event(event)

            super()._run(ray_module, tasks, spy, should_run, actors)

    notes: list[str] = []
    specs = worker_specs(choose("bicubic"), Weights(None), 2, ["cpu"], explicit_threads=True)
    out = tmp_path / "ray-retried.mp4"
    (outcome,) = run_queue(
        [VideoJob(vfr_clip, out, FAST)], QueueOptions(0.1), Killing("local", specs), Reporter(warn=notes.append)
    )
    assert not ray.is_initialized()  # the embedded Ray was shut down
    assert killed and outcome.ok, outcome.error
    assert any("retrying segment" in n for n in notes), notes
    run([VideoJob(vfr_clip, tmp_path / "ref.mp4", FAST)], bicubic, seconds=0.1)
    a, ta = frames_of(out)
    b, tb = frames_of(tmp_path / "ref.mp4")
    assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("name", "codec", "fmt"),
    [("ps.mpg", "mpeg2video", "mpeg"), ("b.ts", "libx264", "mpegts"), ("vp9.webm", "libvpx-vp9", "webm")],
)
def test_segments_decode_the_same_pictures_as_one_pass(
    tmp_path: Path, bicubic: object, name: str, codec: str, fmt: str
) -> None:
    """Seeking differs per demuxer (MPEG-PS re-delivered a packet after a seek, decoded differently):
    every segment must still decode exactly the pictures a single pass decodes."""
    src = make_clip(tmp_path / name, width=64, height=48, frames=60, fps=25, audio=False, codec=codec, fmt=fmt)
    lossless = EncodeOptions(codec="libx264", crf=0, preset="ultrafast", pix_fmt="yuv444p")
    (many,) = run([VideoJob(src, tmp_path / "many.mkv", lossless)], bicubic, seconds=0.3)
    (one,) = run([VideoJob(src, tmp_path / "one.mkv", lossless)], bicubic, seconds=100)
    assert many.ok and one.ok and many.segments >= 6 and one.segments == 1
    a, ta = frames_of(tmp_path / "many.mkv")
    b, tb = frames_of(tmp_path / "one.mkv")
    assert ta == tb and len(a) == 60
    assert [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not np.array_equal(x, y)] == []


# ------------------------------------------------------------------ the library call


def test_upscale_videos_is_the_video_command_as_a_library_call(tmp_path: Path, tiny_weights: Path) -> None:
    from srgan_deploy.jobs import Reporter as Events
    from srgan_deploy.jobs import VideoJobOptions, upscale_videos

    clip = make_clip(tmp_path / "in.mp4", width=32, height=24, frames=8)
    out = tmp_path / "made" / "out.mp4"  # its folder is made
    lines: list[str] = []
    counts: list[tuple[int, int]] = []
    options = VideoJobOptions(
        backend="torch", weights=str(tiny_weights), device="cpu", encode=FAST, segment_seconds=0.1
    )
    result = upscale_videos([clip], [out], options, Events(progress=lambda *c: counts.append(c), status=lines.append))
    (outcome,) = result.outcomes
    assert result.backend == "torch" and outcome.ok and not result.failed, outcome.error
    assert (outcome.frames, outcome.width, outcome.height, outcome.segments) == (8, 128, 96, 3)
    frames, _, _, _ = read_video(out)
    assert len(frames) == 8 and {f.shape for f in frames} == {(96, 128, 3)}
    assert any(line.startswith("backend: torch on cpu") for line in lines), lines
    assert counts[-1] == (8, 8)
    assert not work_dir_for(out).exists()
    with pytest.raises(OutputExistsError, match="--overwrite"):  # checked before any work
        upscale_videos([clip], [out], options)
    with pytest.raises(ConfigError, match="one output per input"):
        upscale_videos([clip, clip], [out], options)


def test_upscale_videos_into_a_folder_finishes_the_good_inputs(tmp_path: Path) -> None:
    from srgan_deploy.jobs import Reporter as Events
    from srgan_deploy.jobs import VideoJobOptions, outputs_in_folder, upscale_videos

    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mp4", width=32, height=24, frames=6, audio=False)
    (tmp_path / "in" / "b.mp4").write_bytes(b"not a video at all")
    inputs, outputs = outputs_in_folder([tmp_path / "in"], tmp_path / "out")
    assert [p.name for p in outputs] == ["a.mp4", "b.mp4"]
    failed: list[str] = []
    options = VideoJobOptions(backend="bicubic", encode=FAST, side_by_side=True)
    result = upscale_videos(inputs, outputs, options, Events(failed=failed.append))
    good, bad = result.outcomes
    assert good.ok and (good.frames, good.width, good.height) == (6, 2 * 128, 96)  # bicubic | model, side by side
    assert len(read_video(tmp_path / "out" / "a.mp4")[0]) == 6
    assert not bad.ok and result.failed == [bad] and len(failed) == 1 and "b.mp4" in failed[0]


def test_video_job_options_are_checked_when_made() -> None:
    from srgan_deploy.jobs import VideoJobOptions

    with pytest.raises(ConfigError, match="--workers"):
        VideoJobOptions(workers=0)
    with pytest.raises(ConfigError, match="--ray-transfer"):
        VideoJobOptions(ray_transfer="objects")
    with pytest.raises(ConfigError, match="not a Ray address"):
        VideoJobOptions(ray="http://nope")
    with pytest.raises(ConfigError, match="--batch"):
        VideoJobOptions(batch=0)
    with pytest.raises(ConfigError, match="GPUs only"):
        VideoJobOptions(device="cuda:0,cpu")
    assert VideoJobOptions(ray=" local ").ray == "local"
    assert VideoJobOptions(device="cuda:0,cuda:1").worker_count == 2  # one worker per GPU
    assert VideoJobOptions(device="cuda:0,cuda:1", workers=3).worker_count == 3


def test_backend_notices_inside_a_job_are_events_shown_once(
    vfr_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An out-of-memory retry inside a job reaches the job's display, once, instead of the process's
    stderr (in a worker process stderr is not the display at all)."""
    from srgan_deploy.backends.bicubic import BicubicBackend
    from srgan_deploy.backends.options import BicubicOptions
    from srgan_deploy.notices import say_on_stderr

    class Tight(BicubicBackend):
        def _infer(self, frames: np.ndarray) -> np.ndarray:
            if frames.shape[1:3] == (48, 64):  # a whole frame does not fit; its tiles do
                raise MemoryError("cannot allocate")
            return super()._infer(frames)

    backend = Tight(BicubicOptions(), lambda: 4)
    warnings: list[str] = []
    with backend:
        (outcome,) = run_queue(
            [VideoJob(vfr_clip, tmp_path / "tight.mp4", FAST)],
            QueueOptions(0.2),
            InProcess(backend),
            Reporter(warn=warnings.append),
        )
    assert outcome.ok and outcome.frames == len(VFR_MS), outcome.error
    assert [w for w in warnings if "out of memory" in w] == ["out of memory on a 64x48 frame; retrying with 32px tiles"]
    assert "out of memory" not in capsys.readouterr().err
    assert backend.notify is say_on_stderr  # outside the job, stderr again


# ------------------------------------------------------------------ reliability (issue 29)
# 1. the work folder is evidence, 2. bounded scale-out, 3. errors in the user's words, 4. nothing left behind


class _StopsAfter(InProcess):
    """Renders ``n`` segments, then stops as a kill would (the finished ones are in the manifest)."""

    def __init__(self, backend: object, n: int) -> None:
        super().__init__(backend)  # type: ignore[arg-type]
        self.n = n

    def run(self, tasks, on_event, should_run):  # type: ignore[no-untyped-def]
        done = 0

        def counting(event: object) -> None:
            nonlocal done
            on_event(event)
            if isinstance(event, Done):
                done += 1
                if done >= self.n:
                    raise KeyboardInterrupt

        super().run(tasks, counting, should_run)


def _partly_done(clip: Path, out: Path, backend: object, n: int) -> WorkDir:
    from srgan_deploy.errors import Interrupted

    with pytest.raises(Interrupted, match="run the same command again"):
        run_queue([VideoJob(clip, out, FAST)], QueueOptions(0.2), _StopsAfter(backend, n))
    work = WorkDir(out)
    saved = work.load()
    assert saved is not None and len(saved.done) == n
    return work


def test_a_segment_changed_in_place_is_rendered_again(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    """Only the size was checked: a segment overwritten in the middle at the same size was reused, and the
    output had decode errors. Its checksum no longer matches: it is rendered again, with a line."""
    out = tmp_path / "o.mp4"
    work = _partly_done(vfr_clip, out, bicubic, 2)
    segment = work.path / "seg-00000.mp4"
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(255 - b for b in data[middle : middle + 256])
    segment.write_bytes(bytes(data))
    warnings: list[str] = []
    (outcome,) = run_queue(
        [VideoJob(vfr_clip, out, FAST)],
        QueueOptions(0.2),
        InProcess(bicubic),  # type: ignore[arg-type]
        Reporter(warn=warnings.append),
    )
    assert outcome.ok and outcome.reused == 1, (outcome, warnings)
    assert any("segment 0" in w and "checksum" in w and "rendering it again" in w for w in warnings), warnings
    run([VideoJob(vfr_clip, tmp_path / "clean.mp4", FAST)], bicubic, seconds=0.2)
    a, ta = frames_of(out)
    b, tb = frames_of(tmp_path / "clean.mp4")
    assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _damage(kind: str, manifest: Path) -> None:
    import json

    data = json.loads(manifest.read_text())
    if kind == "truncated":
        manifest.write_text(manifest.read_text()[:40])
        return
    if kind == "empty":
        manifest.write_text("")
        return
    if kind == "folder":
        manifest.unlink()
        manifest.mkdir()
        return
    if kind == "list":
        data = [data]
    elif kind == "done-is-a-list":
        data["done"] = list(data["done"].values())
    elif kind == "segments-text":
        data["segments"] = str(data["segments"])
    elif kind == "record-names-another-file":
        data["done"]["0"]["file"] = "../../o.mp4"
    elif kind == "record-without-checksum":
        del data["done"]["0"]["sha256"]
    elif kind == "first-time-not-a-time":
        data["done"]["0"]["first_time"] = "soon"
    elif kind == "older-version":
        data["version"] = 1
    manifest.write_text(json.dumps(data))


MANIFEST_DAMAGE = [
    "truncated",
    "empty",
    "folder",
    "list",
    "done-is-a-list",
    "segments-text",
    "record-names-another-file",
    "record-without-checksum",
    "first-time-not-a-time",
    "older-version",
]


@pytest.mark.parametrize("kind", MANIFEST_DAMAGE)
def test_a_manifest_that_cannot_be_used_is_set_aside_and_the_job_starts_over(
    kind: str, vfr_clip: Path, tmp_path: Path, bicubic: object
) -> None:
    """Valid JSON of the wrong shape crashed every later run ("internal error"), --restart included; a corrupt,
    truncated or old manifest restarted silently. Now it is set aside, with a line that says why."""
    out = tmp_path / "o.mp4"
    work = _partly_done(vfr_clip, out, bicubic, 1)
    _damage(kind, work.path / "manifest.json")
    warnings: list[str] = []
    report = Reporter(warn=warnings.append)
    runner = _StopsAfter(bicubic, 1)  # stop again, to look at the folder before the job ends
    from srgan_deploy.errors import Interrupted

    with pytest.raises(Interrupted):
        run_queue([VideoJob(vfr_clip, out, FAST)], QueueOptions(0.2), runner, report)
    assert any("cannot be used" in w and "starts over" in w for w in warnings), warnings
    assert (work.path / "manifest.rejected.json").exists()  # kept for a look
    (outcome,) = run_queue([VideoJob(vfr_clip, out, FAST)], QueueOptions(0.2), InProcess(bicubic))  # type: ignore[arg-type]
    assert outcome.ok and outcome.frames == len(VFR_MS), outcome.error
    assert not work.path.exists()


def test_restart_works_whatever_the_work_folder_holds(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    for kind in ("done-is-a-list", "folder"):
        out = tmp_path / f"{kind}.mp4"
        work = _partly_done(vfr_clip, out, bicubic, 1)
        _damage(kind, work.path / "manifest.json")
        result = _cli_run(str(vfr_clip), str(out), "-b", "bicubic", "--preset", "ultrafast", "--restart")
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        assert not work.path.exists()


def test_segments_without_their_manifest_are_not_trusted(vfr_clip: Path, tmp_path: Path, bicubic: object) -> None:
    out = tmp_path / "o.mp4"
    work = _partly_done(vfr_clip, out, bicubic, 2)
    (work.path / "manifest.json").unlink()
    warnings: list[str] = []
    (outcome,) = run_queue(
        [VideoJob(vfr_clip, out, FAST)],
        QueueOptions(0.2),
        InProcess(bicubic),  # type: ignore[arg-type]
        Reporter(warn=warnings.append),
    )
    assert outcome.ok and outcome.reused == 0
    assert any("no manifest" in w and "starts over" in w for w in warnings), warnings


def test_machine_caps_the_worker_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--workers 999 on a 1-second clip started hundreds of processes (236 and 7 GB after 40 s)."""
    from srgan_deploy import memory
    from srgan_deploy.jobs import Reporter as Events
    from srgan_deploy.jobs import VideoJobOptions, upscale_videos, videos, workers
    from srgan_deploy.jobs.workers import machine_cap

    monkeypatch.setattr(workers, "usable_cpus", lambda: 4)  # affinity, or a container's CPU quota
    monkeypatch.setattr(memory, "available_memory", lambda: 100 * 2**30)
    assert machine_cap(999, None) == (4, "this machine has 4 core(s)")
    assert machine_cap(3, None) == (3, "")
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * 2**30)
    count, why = machine_cap(999, 2**30)  # 1 GiB budget each + what a worker process needs itself
    assert count == 2 and "memory" in why

    started: list[int] = []

    class Pool:
        def __init__(self, specs: list[object], respec: object = None) -> None:
            started.append(len(specs))

        def run(self, tasks, on_event, should_run):  # type: ignore[no-untyped-def]
            return None

    monkeypatch.setattr(videos, "ProcessPool", Pool)
    monkeypatch.setattr(memory, "available_memory", lambda: 100 * 2**30)
    clip = make_clip(tmp_path / "in.mp4", width=32, height=24, frames=4, audio=False)
    warnings: list[str] = []
    options = VideoJobOptions(backend="bicubic", encode=FAST, workers=999)
    upscale_videos([clip], [tmp_path / "out.mp4"], options, Events(warn=warnings.append))
    assert started == [4]
    assert warnings == ["--workers 999: starting 4, as this machine has 4 core(s)"]
    assert not list(tmp_path.glob(".*.srgan-work"))  # the pool rendered nothing: nothing kept


def test_no_more_worker_processes_than_segments(vfr_clip: Path, tmp_path: Path) -> None:
    import multiprocessing

    from srgan_deploy.backends.registry import choose
    from srgan_deploy.jobs.workers import ProcessPool, worker_specs
    from srgan_deploy.sources import Weights

    alive: list[int] = []
    notes: list[str] = []

    class Counting(ProcessPool):
        def run(self, tasks, on_event, should_run):  # type: ignore[no-untyped-def]
            def spy(event: object) -> None:
                if isinstance(event, Done):
                    alive.append(sum(c.name.startswith("srgan-worker") for c in multiprocessing.active_children()))
                on_event(event)  # type: ignore[arg-type]

            super().run(tasks, spy, should_run)

    pool = Counting(worker_specs(choose("bicubic"), Weights(None), 3, ["cpu"]))
    (outcome,) = run_queue(
        [VideoJob(vfr_clip, tmp_path / "one.mp4", FAST)],
        QueueOptions(100.0),  # the whole clip is one segment
        pool,
        Reporter(status=notes.append),
    )
    assert outcome.ok and outcome.segments == 1, outcome.error
    assert alive == [1]
    assert "1 segment(s) to render: starting 1 worker process(es), not 3" in notes


def _silent_server() -> tuple[object, int]:
    """A TCP port that accepts connections and never says a word (a firewall's tarpit, a wrong service)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[object] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept())
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("where", ["closed-port", "no-answer"])
def test_ray_that_cannot_be_reached_fails_fast_in_one_line(where: str, vfr_clip: Path, tmp_path: Path) -> None:
    """--ray to a closed local port retried for minutes without an error; to an address that does not
    answer it failed after 22 s with about 20 lines of Ray's C++ warnings first."""
    pytest.importorskip("ray")
    server = None
    if where == "closed-port":
        address = f"127.0.0.1:{_closed_port()}"
    else:
        server, port = _silent_server()
        address = f"127.0.0.1:{port}"
    out = tmp_path / "r.mp4"
    args = [str(vfr_clip), str(out), "-b", "bicubic", "--ray", address, "--ray-timeout", "4"]
    began = time.monotonic()
    try:
        done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=90)
    finally:
        if server is not None:
            server.close()  # type: ignore[attr-defined]
    assert time.monotonic() - began < 40
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and address in errors[0], done.stderr
    assert ("--ray-timeout" in errors[0]) == (where == "no-answer"), errors[0]
    assert not [line for line in lines if "rpc_client" in line or line.startswith("[20")], done.stderr
    assert not work_dir_for(out).exists() and not out.exists()


def test_a_queue_reports_every_failure_and_its_summary(vfr_clip: Path, tmp_path: Path) -> None:
    """An undecodable mp4 failed with our temp file's name (.seg-00000.<pid>.partial.mp4: No such file)
    and took the queue's per-file lines and its "N of M failed" summary with it."""
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.mp4", width=32, height=24, frames=6, audio=False)
    data = bytearray((folder / "a.mp4").read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    (folder / "b-zeroed.mp4").write_bytes(bytes(data))
    (folder / "c-text.mp4").write_text("not a video")
    result = _cli_run(str(folder), "-o", str(tmp_path / "out"), "-b", "bicubic", "--preset", "ultrafast")
    err = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert any("b-zeroed.mp4" in line and "could be decoded" in line for line in lines), err
    assert any("c-text.mp4" in line for line in lines), err
    assert "2 of 3 video(s) failed: b-zeroed.mp4, c-text.mp4" in lines[-1]
    assert ".partial" not in err
    assert "1 of 3 videos done" in result.stdout  # type: ignore[attr-defined]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4"]  # no work folders left


def test_a_bug_in_one_input_fails_that_input_only(tmp_path: Path) -> None:
    from srgan_deploy.backends.bicubic import BicubicBackend
    from srgan_deploy.backends.options import BicubicOptions

    class Buggy(BicubicBackend):
        def _infer(self, frames: np.ndarray) -> np.ndarray:
            if frames.shape[2] == 32:
                raise RuntimeError("boom")
            return super()._infer(frames)

    bad = make_clip(tmp_path / "bad.mp4", width=32, height=24, frames=4, audio=False)
    good = make_clip(tmp_path / "good.mp4", width=48, height=32, frames=4, audio=False)
    failed: list[str] = []
    with Buggy(BicubicOptions(), lambda: 4) as backend:
        first, second = run_queue(
            [VideoJob(bad, tmp_path / "o1.mp4", FAST), VideoJob(good, tmp_path / "o2.mp4", FAST)],
            QueueOptions(0.1),
            InProcess(backend),
            Reporter(failed=failed.append),
        )
    assert not first.ok and "internal error: RuntimeError: boom" in str(first.error)
    assert isinstance(first.cause, RuntimeError)  # re-raised as it was for a single input (exit 1, --debug)
    assert second.ok and second.frames == 4, second.error
    assert len(failed) == 1 and "bad.mp4" in failed[0]
    assert not list(tmp_path.glob(".*.srgan-work"))


def x264_settings(path: Path) -> str:
    """The option string x264 writes into the stream it encodes (its SEI): what the encoder really ran with."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\x00", start)].decode("latin-1")


def test_preset_auto_is_veryfast_when_the_model_shares_the_cpu(vfr_clip: Path, tmp_path: Path) -> None:
    """--preset auto (the CLI default): the encoder takes its cycles from a CPU model, so it runs veryfast
    (subme=2); an explicit preset is kept; outside a job (no backend known) auto means medium (subme=7)."""
    from srgan_deploy.jobs import VideoJobOptions, upscale_videos
    from srgan_deploy.video import with_auto_preset
    from srgan_deploy.video_job import upscale_video

    auto = EncodeOptions(preset="auto")
    assert with_auto_preset(auto, model_on_cpu=True).preset == "veryfast"
    assert with_auto_preset(auto, model_on_cpu=False).preset == "medium"
    assert with_auto_preset(EncodeOptions(preset="slow"), model_on_cpu=True).preset == "slow"
    out = tmp_path / "auto.mp4"
    upscale_videos([vfr_clip], [out], VideoJobOptions(backend="bicubic", encode=auto, max_frames=4))
    assert "subme=2 " in x264_settings(out)
    explicit = tmp_path / "fast.mp4"
    upscale_videos([vfr_clip], [explicit], VideoJobOptions(backend="bicubic", encode=EncodeOptions(preset="fast")))
    assert "subme=6 " in x264_settings(explicit)
    alone = tmp_path / "alone.mp4"
    with make_backend("bicubic") as backend:
        upscale_video(VideoJob(vfr_clip, alone, auto, max_frames=4), backend)
    assert "subme=7 " in x264_settings(alone)
