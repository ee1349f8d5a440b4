"""The package's shape: one installed namespace, imports one way, no cycles (lazy imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "srgan_deploy"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every srgan_deploy module this file imports anywhere: top level, inside functions, TYPE_CHECKING blocks."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name in known:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> modules it causes to run. Importing a.b.c also runs a/__init__ and a/b/__init__,
    unless the importer lives inside that package (then it is already running)."""
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges: set[str] = set()
        for target in imports_of(path, known):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in known and not (name == ancestor or name.startswith(ancestor + ".")):
                    edges.add(ancestor)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_anywhere_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 40
    assert cycles(graph) == []


EXPORT_COMMAND = ("srgan_deploy.export.command", "srgan_deploy.export.triton")  # `srgan-deploy export` itself


def test_runtime_backends_never_import_the_export_stage() -> None:
    graph = import_graph()
    offenders = {
        name: sorted(t for t in targets if t.startswith("srgan_deploy.export"))
        for name, targets in graph.items()
        if name.startswith("srgan_deploy.backends")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # the one runtime module that composes export loaders
    composers = sorted(
        n
        for n, t in graph.items()
        if any(x.startswith("srgan_deploy.export") for x in t) and not n.startswith("srgan_deploy.export")
    )
    assert composers == ["srgan_deploy.cli", "srgan_deploy.sources"]
    # and it composes the builders' loaders, never the command
    assert [t for t in graph["srgan_deploy.sources"] if t in EXPORT_COMMAND] == []


RUNTIME = (
    "srgan_deploy.backends",
    "srgan_deploy.gpu",
    "srgan_deploy.artifacts",
    "srgan_deploy.tiling",
    "srgan_deploy.memory",
    "srgan_deploy.cache",
    "srgan_deploy.files",
    "srgan_deploy.notices",
    "srgan_deploy.cpus",
)
STAGES = (
    "srgan_deploy.cli",
    "srgan_deploy.jobs",
    "srgan_deploy.train",
    "srgan_deploy.export",
    "srgan_deploy.bench",
    "srgan_deploy.evaluate",
    "srgan_deploy.info",
    "srgan_deploy.image_jobs",
    "srgan_deploy.video_job",
    "srgan_deploy.flicker",
)


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_layer_lists_name_modules_that_exist() -> None:
    """A renamed module must be renamed here too, or the checks below would pass by checking nothing."""
    names = set(modules())
    assert [n for n in (*RUNTIME, *STAGES, *EXPORT_COMMAND) if n not in names] == []


# file names two packages share, each clear in its package: a backend and the export that writes its
# model repository (``triton``), the model's configuration and training's options (``config``)
SHARED_FILE_NAMES = {"config.py", "triton.py"}


def test_no_two_modules_share_a_file_name() -> None:
    """A module's file name says what it holds wherever it is met (a traceback, an editor tab, a diff):
    no second ``run.py`` (the video queue and the export command once were both ``run.py``)."""
    names = sorted(p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    shared = {n for n in names if names.count(n) > 1}
    assert shared == SHARED_FILE_NAMES


def test_the_runtime_never_imports_a_stage() -> None:
    """Arrows run cli -> stages -> runtime; ``sources`` is the one runtime module allowed to compose the
    export stage's loaders (checked above), which point back at nothing (checked below)."""
    graph = import_graph()
    offenders = {
        n: sorted(t for t in targets if within(t, STAGES)) for n, targets in graph.items() if within(n, RUNTIME)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module importing ``start`` causes to run, through any number of modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_reachable_follows_chains() -> None:
    assert reachable({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, "a") == {"b", "c"}


def test_export_builders_never_point_back_up() -> None:
    """The rest of ``export`` (ONNX export, fp16 conversion, wrapping, the TensorRT builder and the loaders
    over them) is what the runtime composes to get an engine or a graph on first use, so it sits below
    ``sources`` and every backend (Polygraphy's loaders: a runner takes a loader, no loader knows a runner).
    Nothing it imports, directly or through other modules, may reach back: not ``sources``, not a backend,
    not the runtime's own rules (``memory``: a runtime-built engine's profile; ``cache``: where things go),
    not a stage, not the export command."""
    graph = import_graph()
    builders = sorted(n for n in graph if n.startswith("srgan_deploy.export.") and n not in EXPORT_COMMAND)
    assert {"srgan_deploy.export.loaders", "srgan_deploy.export.tensorrt", "srgan_deploy.export.onnx"} <= set(builders)
    above = (
        "srgan_deploy.sources",
        "srgan_deploy.backends",
        "srgan_deploy.memory",
        "srgan_deploy.cache",
        *EXPORT_COMMAND,
        *(s for s in STAGES if s != "srgan_deploy.export"),
    )
    offenders = {n: sorted(t for t in reachable(graph, n) if within(t, above)) for n in builders}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_export_command_runs_engines_through_the_registry_only() -> None:
    """It verifies an engine on the backend ``registry.create`` makes, on the loader every backend gets for
    a plan file: what ``upscale`` runs, not a backend class it builds with options of its own."""
    graph = import_graph()
    for name in EXPORT_COMMAND:
        backends = sorted(t for t in graph[name] if within(t, ("srgan_deploy.backends",)))
        assert backends in ([], ["srgan_deploy.backends", "srgan_deploy.backends.registry"]), (name, backends)
    assert sorted(n for n, t in graph.items() if "srgan_deploy.export.command" in t) == ["srgan_deploy.cli"]
    assert sorted(n for n, t in graph.items() if "srgan_deploy.export.triton" in t) == ["srgan_deploy.export.command"]


def test_files_and_notices_are_leaves() -> None:
    """Every layer writes files and passes notices on through them, so they may import nothing of the package."""
    graph = import_graph()
    assert graph["srgan_deploy.files"] == set()
    assert graph["srgan_deploy.notices"] == set()
    assert graph["srgan_deploy.cpus"] == set()  # sizes threads for every layer: imports nothing of ours


def test_the_cli_reaches_video_jobs_through_the_jobs_package_only() -> None:
    """``srgan_deploy.jobs`` (``upscale_videos``) is the front door; executors, the queue and workers are
    the stage's own business."""
    graph = import_graph()
    assert sorted(t for t in graph["srgan_deploy.cli"] if t.startswith("srgan_deploy.jobs")) == ["srgan_deploy.jobs"]


def test_stages_never_import_the_cli() -> None:
    graph = import_graph()
    assert [n for n, t in graph.items() if "srgan_deploy.cli" in t] == []


def test_editable_install_exposes_only_srgan_deploy() -> None:
    from importlib import metadata

    dist = metadata.distribution("srgan-deploy")
    top = (dist.read_text("top_level.txt") or "").split()
    assert top == ["srgan_deploy"]


@pytest.mark.slow
def test_built_wheel_contains_only_srgan_deploy(tmp_path: Path) -> None:
    # build from a copy, so setuptools' build/ and egg-info folders never land in the working tree
    import shutil

    source = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "runs", "training-state", "*.egg-info", "__pycache__"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("srgan_deploy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith("top_level.txt"))
        assert archive.read(top_level).decode().split() == ["srgan_deploy"]
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"srgan_deploy"}
    assert "srgan_deploy/train/loop.py" in names and "srgan_deploy/export/tensorrt.py" in names
    assert any(n.startswith("srgan_deploy/weights/") and n.endswith(".safetensors") for n in names)
