from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_only_working_commands() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in ("upscale", "info"):
        assert command in out


def test_upscale_file_and_folder(tmp_path: Path, image_dir: Path, tiny_weights: Path) -> None:
    out = tmp_path / "out"
    code, _stdout, stderr = run("upscale", str(image_dir), "-o", str(out), "-w", str(tiny_weights), "-b", "torch")
    assert code == 0, stderr
    a = cv2.imread(str(out / "a.png"))
    assert a.shape == (37 * 4, 53 * 4, 3)
    b = cv2.imread(str(out / "b.jpg"))
    assert b.shape == (24 * 4, 32 * 4, 3)
    assert "backend: torch" in stderr


def test_upscale_keeps_alpha_and_grey(tmp_path: Path, tiny_weights: Path) -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = np.linspace(0, 255, 12, dtype=np.uint8)[None, :]
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((9, 7), 128, np.uint8))
    out = tmp_path / "out"
    code, _, stderr = run(
        "upscale",
        str(tmp_path / "alpha.png"),
        str(tmp_path / "grey.png"),
        "-o",
        str(out),
        "-w",
        str(tiny_weights),
        "-b",
        "torch",
    )
    assert code == 0, stderr
    alpha = cv2.imread(str(out / "alpha.png"), cv2.IMREAD_UNCHANGED)
    assert alpha.shape == (40, 48, 4)
    assert alpha[..., 3][:, 0].mean() < 30 and alpha[..., 3][:, -1].mean() > 225
    grey = cv2.imread(str(out / "grey.png"), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (36, 28)


def test_refuses_to_overwrite(tmp_path: Path, image_dir: Path, tiny_weights: Path) -> None:
    out = tmp_path / "out"
    args = ["upscale", str(image_dir / "a.png"), "-o", str(out), "-w", str(tiny_weights), "-b", "torch"]
    assert run(*args)[0] == 0
    code, _, stderr = run(*args)
    assert code == 2
    assert "--overwrite" in stderr
    assert run(*args, "--overwrite")[0] == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["upscale", "missing.png", "-o", "OUT"], "no such file"),
        (["upscale", "NOTIMG", "-o", "OUT"], "cannot decode"),
        (["upscale", "IMG", "-o", "OUT", "-w", "BADW"], "not a safetensors file"),
        (["upscale", "IMG", "-o", "OUT", "-b", "warp-drive"], "unknown backend"),
        (["upscale", "IMG", "-o", "OUT", "-w", "nope.safetensors"], "weights file not found"),
    ],
)
def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path, image_dir: Path, args: list[str], message: str) -> None:
    (tmp_path / "not-an-image.png").write_text("hello")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    subst = {
        "OUT": str(tmp_path / "out"),
        "NOTIMG": str(tmp_path / "not-an-image.png"),
        "IMG": str(image_dir / "a.png"),
        "BADW": str(tmp_path / "bad.safetensors"),
        "missing.png": str(tmp_path / "missing.png"),
        "nope.safetensors": str(tmp_path / "nope.safetensors"),
    }
    code, _, stderr = run(*[subst.get(a, a) for a in args])
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]  # one unwrapped line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "upscale", str(tmp_path / "x.png"), "-o", str(tmp_path)])
    from srgan_deploy.errors import InputFileError

    assert result.exit_code != 0
    assert isinstance(result.exception, InputFileError)  # re-raised (a traceback), not turned into a line
    plain = runner.invoke(app, ["upscale", str(tmp_path / "x.png"), "-o", str(tmp_path)])
    assert isinstance(plain.exception, SystemExit) and plain.exit_code == 2


def test_info_json_reports_backends_and_default_model() -> None:
    code, out, _ = run("info", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["backends"]["torch"]["available"] is True
    assert data["default_model"] in data["models"]
    model = data["models"][data["default_model"]]
    assert "provenance" in model and "placeholder" in model
    assert data["versions"]["torch"]
    cpu = data["cpu"]  # what a quoted bench figure needs beside it: the CPU kind changes between machines
    from srgan_deploy.cpus import usable_cpus

    assert cpu["name"] and cpu["usable_cpus"] == usable_cpus() and 1 <= cpu["physical_cores"] <= cpu["usable_cpus"]
    assert isinstance(cpu["features"], list)


def test_info_table() -> None:
    code, out, _ = run("info")
    assert code == 0
    assert "backends" in out and "model" in out and "CPU: " in out


def test_eval_json_schema(tmp_path: Path, image_dir: Path, tiny_weights: Path) -> None:
    out = tmp_path / "eval.json"
    code, stdout, stderr = run("eval", str(image_dir), "-w", str(tiny_weights), "-b", "torch", "--json", str(out))
    assert code == 0, stderr
    data = json.loads(out.read_text())
    assert data["dataset"] == "images" and data["scale"] == 4 and data["protocol"] == "y-shave4"
    for key in ("bicubic", "model"):
        assert set(data["mean"][key]) == {"psnr", "ssim"}
    assert [i["name"] for i in data["images"]] == ["a", "b"]
    assert all(set(i) >= {"name", "bicubic", "model"} for i in data["images"])
    assert all(set(i["texture"]) == {"bicubic", "model"} for i in data["images"])
    assert set(data["texture"]) == {"bicubic", "model"} and data["texture_protocol"].startswith("y-shave4")
    assert "model - bicubic" in stdout and "texture (fine detail vs HR" in stdout


def test_eval_of_several_sets_reports_each_and_their_mean(tmp_path: Path, image_dir: Path, tiny_weights: Path) -> None:
    """Each set's mean counts once in the mean of sets, however many images it has."""
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(next(image_dir.iterdir()), other / "only.png")
    out = tmp_path / "both.json"
    args = ("eval", str(image_dir), str(other), "-w", str(tiny_weights), "-b", "torch", "--json", str(out))
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    data = json.loads(out.read_text())
    assert [s["dataset"] for s in data["sets"]] == ["images", "other"] and data["backend"] == "torch"
    set_means = [s["mean"]["model"]["psnr"] for s in data["sets"]]
    assert data["mean_of_sets"]["model"]["psnr"] == pytest.approx(sum(set_means) / 2)
    assert "summary" in stdout and "mean of sets" in stdout
    code, _, stderr = run("eval", str(image_dir), str(tmp_path / "nope"), "-b", "bicubic")
    assert code == 2 and "nope is not a folder" in stderr


SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "set5"


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared not present")
def test_eval_protocol_reproduces_the_papers_bicubic_set5(tmp_path: Path) -> None:
    out = tmp_path / "set5.json"
    code, _, stderr = run("eval", str(SET5), "-b", "bicubic", "--json", str(out))
    assert code == 0, stderr
    bicubic = json.loads(out.read_text())["mean"]["bicubic"]["psnr"]
    assert abs(bicubic - 28.43) <= 0.3  # Ledig et al. 2017, Table 2


def test_user_text_with_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    """Paths like ``[/x]`` or ``a[rtx]`` are rich-markup look-alikes: they must neither vanish nor crash."""
    odd = tmp_path / "[/x]" / "photo[rtx].png"
    result = CliRunner().invoke(app, ["upscale", str(odd), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "photo[rtx].png" in result.stderr and "[/x]" in result.stderr
    assert "Traceback" not in result.stderr
