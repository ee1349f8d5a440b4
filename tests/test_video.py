from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.cli import app
from srgan_deploy.errors import InputFileError, OutputExistsError, VideoError
from srgan_deploy.metrics import psnr
from srgan_deploy.video import EncodeOptions
from srgan_deploy.video_job import VideoJob, upscale_video
from tests.clips import audio_duration, make_clip, read_video
from tests.conftest import make_backend

FAST = EncodeOptions(codec="libx264", crf=12, preset="ultrafast")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "in.mp4", frames=20)


@pytest.fixture(scope="module")
def model() -> object:
    """The bundled default model on the torch CPU backend: a real upscaler, so content can be checked."""
    backend = make_backend("torch", device="cpu")
    backend.open()
    yield backend
    backend.close()


def run_job(src: Path, dst: Path, backend: object, **kw: object) -> object:
    job = VideoJob(source=src, target=dst, encode=FAST, **kw)  # type: ignore[arg-type]
    return upscale_video(job, backend)  # type: ignore[arg-type]


def test_round_trip_keeps_frames_timing_audio_and_upscales(clip: Path, tmp_path: Path, model: object) -> None:
    out = tmp_path / "out.mp4"
    result = run_job(clip, out, model, batch=3)
    src_frames, src_pts, src_tb, src_facts = read_video(clip)
    frames, pts, tb, facts = read_video(out)
    assert result.frames == len(frames) == len(src_frames) == 20  # type: ignore[attr-defined]
    assert frames[0].shape == (48 * 4, 64 * 4, 3)
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert [p * tb for p in pts] == [p * src_tb for p in src_pts]  # same timestamps
    assert facts["rate"] == src_facts["rate"]
    assert abs(float(facts["duration"]) - float(src_facts["duration"])) <= 1 / 24 + 1e-6  # type: ignore[arg-type]
    assert [a[0] for a in facts["audio"]] == ["aac"]  # type: ignore[union-attr]
    assert abs(audio_duration(out) - audio_duration(clip)) < 0.05
    # content: close to a bicubic upscale of the source frame, but not the same thing
    bicubic = cv2.resize(src_frames[5], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    assert psnr(bicubic, frames[5]) > 24
    assert np.abs(bicubic.astype(int) - frames[5].astype(int)).mean() > 0.5


def test_variable_frame_rate_timestamps_survive(tmp_path: Path, model: object) -> None:
    pts_ms = [0, 40, 60, 140, 150, 230, 300, 310, 400, 480]
    src = make_clip(tmp_path / "vfr.mkv", frames=len(pts_ms), pts=pts_ms)
    out = tmp_path / "vfr_out.mkv"
    run_job(src, out, model)
    _, pts, tb, _ = read_video(out)
    assert [round(float(p * tb) * 1000) for p in pts] == pts_ms


def test_odd_dimensions(tmp_path: Path, model: object) -> None:
    src = make_clip(tmp_path / "odd.mkv", width=33, height=25, frames=5, codec="ffv1", pix_fmt="yuv444p", audio=False)
    out = tmp_path / "odd_out.mp4"
    run_job(src, out, model)
    frames, _, _, _ = read_video(out)
    assert len(frames) == 5 and frames[0].shape == (100, 132, 3)


def test_segment_side_by_side_and_max_frames(clip: Path, tmp_path: Path, model: object) -> None:
    out = tmp_path / "seg.mp4"
    result = run_job(clip, out, model, start=0.25, duration=0.5, side_by_side=True)
    frames, pts, tb, _ = read_video(out)
    assert len(frames) == 12 and result.frames == 12  # type: ignore[attr-defined]
    assert frames[0].shape == (192, 512, 3)
    assert float(pts[0] * tb) == 0.0
    preview = tmp_path / "preview.mp4"
    run_job(clip, preview, model, max_frames=4)
    assert len(read_video(preview)[0]) == 4


def test_side_by_side_halves_are_labelled() -> None:
    from srgan_deploy.video_job import burn_label

    frame = np.full((96, 128, 3), 200, np.uint8)
    left, right = burn_label(frame.copy(), "bicubic"), burn_label(frame.copy(), "srgan-x4-lite (openvino)")
    for out in (left, right):
        corner = out[:20, :40].astype(int)
        assert (corner < 120).mean() > 0.3 and (corner > 220).any()  # a dark box with white text in it
        assert np.array_equal(out[60:], frame[60:])  # the picture below the label is untouched
    assert (right[:20] != frame[:20]).any(axis=2).sum() > (left[:20] != frame[:20]).any(axis=2).sum()


def test_mkv_and_webm_outputs_carry_audio(clip: Path, tmp_path: Path, model: object) -> None:
    mkv = tmp_path / "o.mkv"
    run_job(clip, mkv, model, max_frames=6)
    assert [a[0] for a in read_video(mkv)[3]["audio"]] == ["aac"]  # type: ignore[union-attr]
    webm = tmp_path / "o.webm"
    warnings: list[str] = []
    job = VideoJob(source=clip, target=webm, encode=EncodeOptions(crf=40, preset=None), max_frames=6)
    upscale_video(job, model, warn=warnings.append)  # type: ignore[arg-type]
    facts = read_video(webm)[3]
    assert [a[0] for a in facts["audio"]] == ["opus"]  # type: ignore[union-attr]
    assert any("re-encoding" in w for w in warnings)


def test_refuses_overwrite_and_same_file(clip: Path, tmp_path: Path, model: object) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_job(clip, out, model)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(OutputExistsError, match="same file"):
        run_job(clip, clip, model, overwrite=True)


def test_bad_inputs(tmp_path: Path, model: object) -> None:
    with pytest.raises(InputFileError):
        run_job(tmp_path / "missing.mp4", tmp_path / "o.mp4", model)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(VideoError, match="not a readable media file"):
        run_job(text, tmp_path / "o.mp4", model)
    audio_only = tmp_path / "audio.mka"
    import av

    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        run_job(audio_only, tmp_path / "o.mp4", model)
    assert not list(tmp_path.glob("o.mp4")) and not list(tmp_path.glob(".o.partial*"))


def test_zero_frame_input(tmp_path: Path, model: object) -> None:
    import av

    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height = 16, 16
        stream.pix_fmt = "yuv420p"
        out.start_encoding()  # header only, not a single frame
    assert empty.stat().st_size > 0
    with pytest.raises(VideoError):  # FFmpeg cannot even open a header-only file
        run_job(empty, tmp_path / "o.mp4", model)
    clip = make_clip(tmp_path / "short.mp4", frames=5, audio=False)
    with pytest.raises(VideoError, match="no video frames"):  # a segment past the end holds zero frames
        run_job(clip, tmp_path / "o.mp4", model, start=10.0)
    assert not any(p.name.startswith(".o.partial") or p.name == "o.mp4" for p in tmp_path.iterdir())


def test_corrupt_stream_skips_bad_packets(tmp_path: Path, model: object) -> None:
    src = make_clip(tmp_path / "in.ts", frames=30, fmt="mpegts", audio=False)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(len(data) // 3, 2 * len(data) // 3, 40):
        data[int(pos)] ^= 0xFF
    bad = tmp_path / "bad.ts"
    bad.write_bytes(bytes(data))
    out = tmp_path / "bad_out.mp4"
    warnings: list[str] = []
    job = VideoJob(source=bad, target=out, encode=FAST)
    result = upscale_video(job, model, warn=warnings.append)  # type: ignore[arg-type]
    frames, _, _, _ = read_video(out)  # decodes to the end without errors
    assert 0 < len(frames) == result.frames <= 30


def test_truncated_file(tmp_path: Path, model: object) -> None:
    src = make_clip(tmp_path / "t.mkv", frames=24)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    out = tmp_path / "cut_out.mp4"
    result = run_job(cut, out, model)
    assert 0 < result.frames < 24  # type: ignore[attr-defined]
    assert len(read_video(out)[0]) == result.frames  # type: ignore[attr-defined]


def test_cli_video_and_errors(clip: Path, tmp_path: Path, tiny_weights: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.mp4"
    args = [
        "video",
        str(clip),
        str(out),
        "-w",
        str(tiny_weights),
        "-b",
        "torch",
        "--max-frames",
        "3",
        "--preset",
        "ultrafast",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "3 frames 256x192" in result.stdout
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    bad = runner.invoke(app, ["video", str(tmp_path / "nope.mp4"), str(tmp_path / "x.mp4")])
    assert bad.exit_code == 2 and "no such file" in bad.stderr
    ext = runner.invoke(app, ["video", str(clip), str(tmp_path / "x.avi")])
    assert ext.exit_code == 2 and ".mp4" in ext.stderr


@pytest.mark.parametrize("finished", [False, True], ids=["before-any-segment", "after-a-segment"])
def test_sigint_leaves_no_output(tmp_path: Path, tiny_weights: Path, finished: bool) -> None:
    """Ctrl-C never leaves a partial file; the work folder stays only when it holds a finished segment to
    resume from (one segment for the whole clip: nothing is finished when the signal comes)."""
    from srgan_deploy.jobs.manifest import WorkDir

    src = make_clip(tmp_path / "long.mp4", frames=400, width=96, height=64)
    out = tmp_path / "never.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "srgan_deploy.cli",
        "video",
        str(src),
        str(out),
        "-w",
        str(tiny_weights),
        "-b",
        "torch",
        "--preset",
        "ultrafast",
        "--segment-seconds",
        "0.5" if finished else "100",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = tmp_path / ".never.mp4.srgan-work"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        saved = WorkDir(out).load()
        if list(work.glob(".seg-*partial*")) and (not finished or (saved is not None and saved.done)):
            break
        time.sleep(0.05)
    assert list(work.glob(".seg-*partial*")), "the run never started writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert not out.exists()
    assert not list(work.glob(".seg-*partial*"))  # no half-written segment left behind
    if finished:
        assert b"resume" in err
        assert (work / "manifest.json").exists()  # the finished ones are kept for the next run
    else:
        assert b"nothing is kept" in err
        assert not work.exists()  # nothing a re-run could use: no folder left behind


def test_nvenc_without_a_gpu_falls_back_to_x264(clip: Path, tmp_path: Path, model: object) -> None:
    from srgan_deploy.video import encoder_opens

    out = tmp_path / "nv.mp4"
    warnings: list[str] = []
    job = VideoJob(source=clip, target=out, encode=EncodeOptions(codec="h264_nvenc", preset=None), max_frames=3)
    result = upscale_video(job, model, warn=warnings.append)  # type: ignore[arg-type]
    if encoder_opens("h264_nvenc", 256, 192, "yuv420p"):
        assert result.codec == "h264_nvenc"  # type: ignore[attr-defined]
    else:
        assert result.codec == "libx264" and any("falling back" in w for w in warnings)  # type: ignore[attr-defined]
    assert len(read_video(out)[0]) == 3


def test_rotation_metadata_is_kept(tmp_path: Path, model: object) -> None:
    import av

    src = make_clip(tmp_path / "rot.mp4", 32, 24, frames=4, audio=False, configure=lambda v: v.set_display_rotation(90))
    dst = tmp_path / "rot_out.mp4"
    run_job(src, dst, model)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        rot_in = next(a.decode(video=0)).rotation
        rot_out = next(b.decode(video=0)).rotation
    assert rot_in != 0 and rot_out == rot_in


def test_colour_metadata_is_kept(tmp_path: Path, model: object) -> None:
    import av

    def bt709(video: av.VideoStream) -> None:
        cc = video.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range

    src = make_clip(tmp_path / "bt709.mkv", 32, 24, frames=3, audio=False, configure=bt709)
    dst = tmp_path / "bt709_out.mkv"
    run_job(src, dst, model)
    with av.open(str(dst)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)


def test_encoder_presets_go_only_to_encoders_that_take_them() -> None:
    """x264's preset names (the default, auto) are not SVT-AV1's numbers: SVT-AV1 gets a preset only when it
    is a number, x264/x265 get the name (auto resolved to medium outside a job), NVENC its own p4."""
    from srgan_deploy.video import encoder_settings

    assert "preset" not in encoder_settings("libsvtav1", EncodeOptions(preset="medium"))
    assert "preset" not in encoder_settings("libsvtav1", EncodeOptions(preset="auto"))
    assert encoder_settings("libsvtav1", EncodeOptions(preset="8"))["preset"] == "8"
    assert encoder_settings("libx264", EncodeOptions(preset="auto"))["preset"] == "medium"
    assert encoder_settings("libx265", EncodeOptions(preset="slow"))["preset"] == "slow"
    assert encoder_settings("h264_nvenc", EncodeOptions(preset="slow"))["preset"] == "p4"


def test_side_by_side_of_a_rotated_clip_is_composed_upright(tmp_path: Path, model: object) -> None:
    """A phone clip stored landscape with a 90-degree display rotation: the pair is composed as the player
    shows the clip (portrait halves side by side, labels upright) and written without a rotation. Before,
    the halves were joined in the stored orientation and the player turned the pair into a sideways stack.
    The convention (np.rot90 by rotation/90 = what ffmpeg's autorotate shows) was checked against ffmpeg."""
    import av
    import numpy as np

    from srgan_deploy.jobs import Reporter, VideoJobOptions, upscale_videos

    stored = np.zeros((24, 32, 3), np.uint8)
    stored[:, :, 1] = 90
    stored[:8, :8] = (250, 40, 40)  # a red block top-left in the stored frame: bottom-left once upright
    src = tmp_path / "rot.mp4"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt, video.options = 32, 24, "yuv444p", {"crf": "0"}
        video.set_display_rotation(90)
        for _ in range(3):
            for packet in video.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    upright = np.rot90(stored, 1)  # what a player shows: 24 wide, 32 high
    one_pass = tmp_path / "one.mp4"
    run_job(src, one_pass, model, side_by_side=True)
    segmented = tmp_path / "seg.mp4"
    options = VideoJobOptions(backend="bicubic", encode=FAST, side_by_side=True)
    assert upscale_videos([src], [segmented], options, Reporter()).outcomes[0].ok
    for path in (one_pass, segmented):
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (2 * 24 * 4, 32 * 4) and not frame.rotation
            rgb = frame.to_ndarray(format="rgb24")
        for half in (rgb[:, : 24 * 4], rgb[:, 24 * 4 :]):
            red = (half[:, :, 0] > 150) & (half[:, :, 1] < 100)
            ys, xs = np.nonzero(red[40:])  # below the label box
            expected = np.argwhere(upright[:, :, 0] > 150)
            assert abs(ys.mean() + 40 - 4 * expected[:, 0].mean() - 1.5) < 4, path
            assert abs(xs.mean() - 4 * expected[:, 1].mean() - 1.5) < 4, path
