"""The install extras for NVIDIA GPUs (issue 24, defect 15): each pins one CUDA major, with upper bounds,
and every install hint names both."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> dict[str, list[str]]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as handle:
        return dict(tomllib.load(handle)["project"]["optional-dependencies"])


def test_gpu_extras_pin_one_cuda_major_each_with_upper_bounds() -> None:
    from packaging.requirements import Requirement

    extras = _extras()
    for extra, major, other in (("gpu-cu12", 12, 13), ("gpu-cu13", 13, 12)):
        reqs = {Requirement(r).name: Requirement(r).specifier for r in extras[extra]}
        assert not any(f"cu{other}" in name for name in reqs), (extra, reqs)
        assert f"tensorrt-cu{major}" in reqs, (extra, reqs)
        for name, spec in reqs.items():
            assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"{extra}: {name} has no upper bound"
        assert reqs["cuda-python"].contains(f"{major}.9") and not reqs["cuda-python"].contains(f"{other}.0")
        assert "onnxruntime-gpu" in reqs
    # onnxruntime-gpu's PyPI wheels are CUDA 12 up to 1.26, CUDA 13 from 1.27 on
    cu12 = {Requirement(r).name: Requirement(r).specifier for r in extras["gpu-cu12"]}
    cu13 = {Requirement(r).name: Requirement(r).specifier for r in extras["gpu-cu13"]}
    assert cu12["onnxruntime-gpu"].contains("1.26.0") and not cu12["onnxruntime-gpu"].contains("1.27.0")
    assert cu13["onnxruntime-gpu"].contains("1.27.0") and not cu13["onnxruntime-gpu"].contains("1.26.0")
    if "gpu" in extras:  # kept only as an alias of one consistent set
        assert sorted(extras["gpu"]) in (sorted(extras["gpu-cu12"]), sorted(extras["gpu-cu13"]))


def test_install_hints_name_both_cuda_extras() -> None:
    texts = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "srgan_deploy").rglob("*.py"))]}
    stale = [str(p.relative_to(ROOT)) for p, text in texts.items() if "srgan-deploy[gpu]" in text]
    assert not stale, stale
    from srgan_deploy.gpu.trt_runtime import TRT_INSTALL

    assert "gpu-cu12" in TRT_INSTALL and "gpu-cu13" in TRT_INSTALL
