"""The README's commands keep working (issue 26, item 5).

* Every ``srgan-deploy`` command in README.md and docs/*.md (code blocks and inline code) parses against the
  real command line: the command exists, every option exists, every value has the right type or choice.
* Every other command line in their code blocks names something that exists: a Makefile target, a Python
  module, a script; an unknown kind of command fails until it is classified here.
* Every file, results file and link they name exists, and every README anchor a link points at is a heading.
* The README's example of each command is there, and the ones that need no GPU, no data set and only seconds
  of CPU run as written (inputs made up beside them): ``info``, ``upscale``, ``video``, ``export``, the
  Python call, and the bring-your-own-model examples on a small Real-ESRGAN-compact-shaped network.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from srgan_deploy.cli import app
from tests.clips import make_clip
from tests.conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
TEXTS = [README, *DOCS]
COMMANDS = ("video", "upscale", "export", "bench", "eval", "train", "info")

# Lines in a ```bash block that are not srgan-deploy, make, python or torchrun: what each kind may be.
OTHER_COMMANDS = {
    "pip": "an install line",
    "sudo": "the NFS mount of the Ray example",
    "export": "a shell variable (RAY_AUTH_MODE)",
    "ray": "Ray's own command line",
}


def _blocks(text: str, lang: str) -> Iterator[str]:
    yield from re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def _lines(block: str) -> Iterator[list[str]]:
    """Shell lines of a block, continuations joined, comments dropped, split as the shell would."""
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield words


def _bash_lines(path: Path) -> list[list[str]]:
    return [words for block in _blocks(path.read_text(), "bash") for words in _lines(block)]


def _is_template(text: str) -> bool:
    """A command written as a pattern (IMG..., `…`, [optional]) rather than one to type."""
    return any(mark in text for mark in ("...", "…", "[", "<"))


def _inline_commands(path: Path) -> list[list[str]]:
    """``srgan-deploy ...`` in inline code, also where the span wraps over lines."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    spans = re.findall(r"`(srgan-deploy [^`]+)`", text)
    return [shlex.split(" ".join(s.split())) for s in spans if not _is_template(s)]


def _srgan_commands(path: Path) -> list[tuple[str, list[str]]]:
    block = [("block", w) for w in _bash_lines(path) if w[0] == "srgan-deploy"]
    return block + [("inline", w) for w in _inline_commands(path)]


def _parse(args: list[str]) -> str:
    """Parse a command line with the real click command, without running it; returns the command's name."""
    group = get_command(app)
    ctx = group.make_context("srgan-deploy", list(args))
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    name, command, sub_args = group.resolve_command(ctx, rest)  # type: ignore[attr-defined]
    assert command is not None and name is not None, args
    command.make_context(name, list(sub_args), parent=ctx)
    return name


def _all_srgan_commands() -> list[tuple[str, str, list[str]]]:
    return [(str(p.relative_to(ROOT)), kind, words) for p in TEXTS for kind, words in _srgan_commands(p)]


_COMMAND_CASES = _all_srgan_commands()


def test_docs_exist() -> None:
    names = {p.name for p in DOCS}
    for name in ("model-card.md", "training.md", "video.md", "performance.md", "design-notes.md"):
        assert name in names, name


@pytest.mark.parametrize(
    ("where", "kind", "words"),
    _COMMAND_CASES,
    ids=[f"{where}-{kind}-{i}" for i, (where, kind, _) in enumerate(_COMMAND_CASES)],
)
def test_every_srgan_deploy_command_parses(where: str, kind: str, words: list[str]) -> None:
    """A command in a code block must be complete. Inline code may name a command or a few of its options
    in a sentence (`srgan-deploy video`, `srgan-deploy export --triton-repo REPO`): what it names must
    exist and its values must be valid, but it may leave out required arguments."""
    import typer

    try:
        _parse(words[1:])
    except typer.TyperException as exc:
        if kind == "inline" and type(exc).__name__ == "MissingParameter":
            return
        pytest.fail(f"{where}: {shlex.join(words)}\n{type(exc).__name__}: {exc}")


def test_the_readme_gives_one_example_of_every_command() -> None:
    text = README.read_text()
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    examples = [w for block in _blocks(section, "bash") for w in _lines(block) if w[0] == "srgan-deploy"]
    named = [_parse(w[1:]) for w in examples]
    assert sorted(set(named)) == sorted(COMMANDS), named
    # and every command the program has is among them
    group = get_command(app)
    assert set(group.list_commands(None)) == set(COMMANDS)  # type: ignore[attr-defined,arg-type]


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def test_every_other_command_names_what_exists() -> None:
    import importlib.util

    targets = _makefile_targets()
    seen = 0
    for path in TEXTS:
        for words in _bash_lines(path):
            where = f"{path.relative_to(ROOT)}: {shlex.join(words)}"
            head = words[0]
            if head == "srgan-deploy":
                continue
            seen += 1
            if head == "make":
                assert all(t in targets for t in words[1:]), where
            elif head in ("python", "torchrun") or head.endswith("/python"):
                if "-m" in words:
                    module = words[words.index("-m") + 1]
                    assert importlib.util.find_spec(module) is not None, where
                else:
                    script = next(w for w in words[1:] if w.endswith(".py"))
                    assert (ROOT / script).is_file(), where
            else:
                assert head in OTHER_COMMANDS, f"{where}: a new kind of command; check it and list it here"
        for module in re.findall(r"`python -m ([\w.]+)", path.read_text()):
            seen += 1
            assert importlib.util.find_spec(module) is not None, f"{path.relative_to(ROOT)}: python -m {module}"
    assert seen >= 10


def _expand(ref: str) -> list[str]:
    brace = re.search(r"\{([^{}]*)\}", ref)
    if brace:
        return [
            x for alt in brace.group(1).split(",") for x in _expand(ref[: brace.start()] + alt + ref[brace.end() :])
        ]
    return [ref]


# Paths named on purpose although they do not exist (yet, or any more).
NOT_FILES = {
    "srgan_deploy/cuda_rt.py": "design-notes.md: where a module lived before a move",
    "training-state/srgan-x4/snapshots/generator-step-0008000.safetensors": "written by the resume command above it",
}


def test_every_file_named_exists() -> None:
    prefixes = "benchmarks|docs|tools|tests|srgan_deploy|samples|training-state"
    pattern = re.compile(rf"(?<![\w./…-])((?:{prefixes})/[\w./*{{}},-]*[\w}}])")
    missing = []
    for path in TEXTS:
        for ref in pattern.findall(path.read_text()):
            if "<" in ref or ref in NOT_FILES:
                continue
            for one in _expand(ref):
                if not glob.glob(str(ROOT / one)):
                    missing.append(f"{path.relative_to(ROOT)}: {one}")
    assert not missing, missing


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_link_resolves() -> None:
    broken = []
    for path in TEXTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", dest.read_text(), flags=re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


# ------------------------------------------------------------------ the README's commands that run on a CPU

runner = CliRunner()


def _readme_line(command: str) -> list[str]:
    """The README's command, as written there (the test fails when it is no longer there)."""
    words = shlex.split(command)
    assert words in _bash_lines(README), f"not in the README any more: {command}"
    return words


def _photo(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), smooth_image(h, w, seed)[:, :, ::-1])
    return path


def _compact_onnx(path: Path) -> Path:
    """A small network of Real-ESRGAN-compact's shape (convs + PReLU, PixelShuffle 4, nearest residual)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Compact(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 48, 3, padding=1), nn.PixelShuffle(4)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) + F.interpolate(x, scale_factor=4, mode="nearest")

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Compact().eval(),
            (torch.rand(1, 3, 24, 24),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "H", 3: "W"}},
            opset_version=11,
            dynamo=False,
        )
    return path


def _shape(path: Path) -> tuple[int, ...]:
    image = cv2.imread(str(path))
    assert image is not None, path
    return tuple(image.shape)


def _check_info(here: Path, out: str) -> None:
    data = json.loads(out)
    assert data["backends"]["torch"]["available"] is True and data["default_model"] in data["models"]


def _check_upscale(here: Path, out: str) -> None:
    assert _shape(here / "upscaled" / "photo.jpg") == (96, 128, 3)
    assert _shape(here / "upscaled" / "beach.png") == (64, 80, 3)


def _check_video(here: Path, out: str) -> None:
    import av

    with av.open(str(here / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (256, 192)
        assert sum(1 for _ in container.decode(stream)) == 6


def _check_export(here: Path, out: str) -> None:
    assert list((here / "exported").glob("*.onnx")), sorted(p.name for p in (here / "exported").iterdir())


def _check_byom_info(here: Path, out: str) -> None:
    assert "x4 RGB, float32 NCHW" in out and "scale: 4" in out, out


def _check_byom_upscale(here: Path, out: str) -> None:
    assert _shape(here / "out" / "photo.jpg") == (96, 128, 3)


def _inputs(here: Path) -> None:
    _photo(here / "photo.jpg")
    _photo(here / "holiday" / "beach.png", 16, 20, seed=1)
    make_clip(here / "in.mp4", width=64, height=48, frames=6)


def _inputs_and_model(here: Path) -> None:
    _inputs(here)
    _compact_onnx(here / "model.onnx")


RUN: dict[str, tuple[Callable[[Path], object], Callable[[Path, str], None]]] = {
    "srgan-deploy info --json": (lambda here: None, _check_info),
    "srgan-deploy upscale photo.jpg holiday/ -o upscaled/": (_inputs, _check_upscale),
    "srgan-deploy video in.mp4 out.mp4": (_inputs, _check_video),
    "srgan-deploy export -o exported/ --format onnx --io uint8": (lambda here: None, _check_export),
    "srgan-deploy info -w RealESRGAN_x4_compact.onnx": (
        lambda here: _compact_onnx(here / "RealESRGAN_x4_compact.onnx"),
        _check_byom_info,
    ),
    "srgan-deploy upscale photo.jpg -o out -w model.onnx": (_inputs_and_model, _check_byom_upscale),
}


@pytest.fixture
def here(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SRGAN_DEPLOY_CACHE", str(cache_dir / "readme"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", sorted(RUN))
def test_the_readme_command_runs_as_written(command: str, here: Path) -> None:
    words = _readme_line(command)
    setup, check = RUN[command]
    setup(here)
    result = runner.invoke(app, words[1:])
    assert result.exit_code == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    check(here, result.stdout)


def test_the_readme_python_call_runs_as_written(here: Path) -> None:
    sections = README.read_text().split("\n## ")
    blocks = [b for section in sections for b in _blocks(section, "python")]
    assert len(blocks) == 1, "the README's one Python example"
    make_clip(here / "in.mp4", width=64, height=48, frames=6)
    scope: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert (here / "out.mp4").is_file()
    assert scope["result"] is not None
