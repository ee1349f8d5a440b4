from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import WeightsError
from srgan_deploy.weights import bundled_models, load_generator, read_info, save_generator
from tests.conftest import TINY, make_generator


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    gen = make_generator()
    path = save_generator(gen, tmp_path / "w.safetensors", {"name": "t", "steps": 7})
    loaded, info = load_generator(path)
    assert info.config == TINY
    assert info.provenance["steps"] == 7
    for (k, a), (k2, b) in zip(gen.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2
        assert torch.equal(a, b), k


def test_loading_does_not_unpickle(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsError):
        load_generator(path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:100],  # truncated
        lambda b: b[:8] + b"{not json" + b[17:],  # broken header
        lambda b: b"",  # empty
        lambda b: b[: len(b) // 2],  # data cut short
    ],
)
def test_corrupt_file_gives_typed_error(tmp_path: Path, tiny_weights: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(mutate(tiny_weights.read_bytes()))
    with pytest.raises(WeightsError):
        load_generator(bad)


def test_foreign_safetensors_is_rejected(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match="not srgan-deploy"):
        load_generator(path)


def test_config_shape_mismatch_is_detected(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    gen = make_generator()
    path = save_generator(gen, tmp_path / "w.safetensors")
    state = load_file(str(path))
    meta = {
        "format": "srgan-deploy/generator",
        "format_version": "1",
        "config": ModelConfig(channels=16, blocks=2).to_json(),
        "provenance": "{}",
    }
    save_file(state, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="shape"):
        load_generator(path)


def test_missing_file_names_bundled_models(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_generator(tmp_path / "nope.safetensors")


def test_fp16_storage_loads_as_float32(tmp_path: Path) -> None:
    gen = make_generator()
    path = save_generator(gen, tmp_path / "h.safetensors", half=True)
    loaded, _ = load_generator(path)
    w = loaded.head.weight
    assert w.dtype == torch.float32
    assert torch.allclose(w, gen.head.weight, atol=1e-3)


def test_bundled_default_model_loads() -> None:
    models = bundled_models()
    assert models, "the package must ship a default model"
    info = read_info(None)
    gen, _ = load_generator(None)
    assert info.config.scale == 4
    assert sum(p.numel() for p in gen.parameters()) > 0
