"""Generator weights as ``.safetensors``: tensors plus config and provenance in the metadata.

Loading never unpickles, so a weights file from a stranger cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError, WeightsError
from srgan_deploy.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from srgan_deploy.models import Generator

FORMAT = "srgan-deploy/generator"
FORMAT_VERSION = "1"
DEFAULT_MODEL = "srgan-x4-lite"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself, readable without torch."""

    path: Path
    config: ModelConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def name(self) -> str:
        return str(self.provenance.get("name", self.path.stem))

    @property
    def is_placeholder(self) -> bool:
        return bool(self.provenance.get("placeholder", False))


def bundled_weights_dir() -> Path:
    return Path(str(resources.files("srgan_deploy") / "weights"))


def bundled_models() -> dict[str, Path]:
    """Name -> path of every weights file shipped inside the package."""
    return {p.stem: p for p in sorted(bundled_weights_dir().glob("*.safetensors"))}


def resolve_weights(weights: str | Path | None) -> Path:
    """Turn ``None`` (the default model), a bundled model name or a path into an existing file."""
    models = bundled_models()
    if weights is None:
        weights = DEFAULT_MODEL
    if isinstance(weights, str) and weights in models:
        return models[weights]
    path = Path(weights)
    if not path.exists():
        names = ", ".join(models) or "none"
        raise WeightsError(f"weights file not found: {path} (bundled models: {names})")
    if path.is_dir():
        raise WeightsError(f"weights path is a folder, not a .safetensors file: {path}")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors JSON header by hand so a broken file gives our error, not a Rust panic."""
    try:
        with path.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) != 8:
                raise WeightsError(
                    f"{path} is not a safetensors file (too short); pass a .safetensors file written by srgan-deploy"
                )
            n = int.from_bytes(raw_len, "little")
            size = path.stat().st_size
            if n <= 0 or n > min(size - 8, 100 << 20):
                raise WeightsError(
                    f"{path} is not a safetensors file (bad header length); pass a .safetensors file written by srgan-deploy"
                )
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(
            f"{path} is not a safetensors file (corrupt header); pass a .safetensors file written by srgan-deploy"
        ) from exc
    if not isinstance(header, dict):
        raise WeightsError(f"{path} has a corrupt safetensors header")
    return header


def read_info(path: str | Path | None = None) -> WeightsInfo:
    """Config and provenance of a weights file, without loading tensors or importing torch."""
    resolved = resolve_weights(path)
    header = _read_header(resolved)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise WeightsError(
            f"{resolved} is a safetensors file but not srgan-deploy generator weights (no '{FORMAT}' metadata)"
        )
    try:
        config = ModelConfig.from_json(meta.get("config", "{}"))
        provenance = json.loads(meta.get("provenance", "{}"))
    except (ConfigError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{resolved} has invalid metadata: {exc}") from exc
    return WeightsInfo(path=resolved, config=config, provenance=provenance, sha256=file_sha256(resolved))


def save_generator(
    generator: Generator,
    path: str | Path,
    provenance: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write the generator's state dict with its config and provenance; atomic (temp file + rename)."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for key, value in generator.state_dict().items():
        tensor = value.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor.contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": generator.config.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    return atomic_write_bytes(path, save(state, metadata=meta))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is corrupt or truncated ({exc}); re-export or re-download the weights") from exc


def load_generator(weights: str | Path | None = None) -> tuple[Generator, WeightsInfo]:
    """Build the generator from a weights file, checking every tensor name and shape against its config."""
    import torch

    from srgan_deploy.models import Generator

    info = read_info(weights)
    _check_header_shapes(info)
    generator = Generator(info.config)
    state = load_state(info.path)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise WeightsError(
            f"{info.path} does not match its config {info.config} ({detail}); the file is damaged or from another model"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{info.path}: tensor {key} has shape {tuple(state[key].shape)}, config needs {tuple(tensor.shape)}"
            )
        if tensor.is_floating_point():
            if not state[key].is_floating_point():
                raise WeightsError(
                    f"{info.path}: tensor {key} is {state[key].dtype}, not floating point; the file is not generator weights"
                )
            state[key] = state[key].to(torch.float32)
            if not bool(torch.isfinite(state[key]).all()):
                raise WeightsError(
                    f"{info.path}: tensor {key} holds NaN or infinite values (a diverged training run?); "
                    "use an earlier checkpoint"
                )
    generator.load_state_dict(state)
    return generator.eval(), info


def _check_header_shapes(info: WeightsInfo) -> None:
    """The file's tensor names and shapes against its config, from the header alone and on torch's meta
    device: nothing is allocated until they agree (a config claiming 200000 channels would otherwise ask for
    1.4 TB before the mismatch could be seen)."""
    import torch

    from srgan_deploy.models import Generator

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Generator(info.config).state_dict().items()}
    header = _read_header(info.path)
    stored = {k: tuple(v.get("shape") or ()) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise WeightsError(
            f"{info.path} does not match its config {info.config} ({detail}); the file is damaged or from another model"
        )
    for key, shape in expected.items():
        if stored[key] != shape:
            raise WeightsError(f"{info.path}: tensor {key} has shape {stored[key]}, config needs {shape}")
