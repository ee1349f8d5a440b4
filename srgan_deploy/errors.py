"""Typed errors: each carries a one-line message that tells the user what to do.

The CLI turns any ``SrganDeployError`` into exit code 2 and that line on stderr.
"""

from __future__ import annotations


class SrganDeployError(Exception):
    """Base class of every error a user can act on."""

    exit_code = 2


class ConfigError(SrganDeployError):
    """An option or model configuration is invalid."""


class InputFileError(SrganDeployError):
    """An input path is missing, unreadable or not what it should be."""


class ImageReadError(InputFileError):
    """An image file could not be decoded."""


class OutputExistsError(SrganDeployError):
    """Refusing to overwrite an existing output without --overwrite."""


class OutputError(SrganDeployError):
    """An output could not be written."""


class WeightsError(SrganDeployError):
    """A weights file is missing, corrupt, or does not match the model config."""


class BackendUnavailableError(SrganDeployError):
    """A backend was requested that cannot run on this machine."""


class BackendStateError(SrganDeployError):
    """A backend was used outside its open/close lifecycle."""


class UnknownBackendError(SrganDeployError):
    """A backend name that does not exist."""


class ModelError(WeightsError):
    """A model file (-w) the runtime cannot run: unreadable, or its inputs, outputs, shape or scale are outside
    what the runtime handles."""


class ExportError(SrganDeployError):
    """Exporting or verifying a model artifact failed."""


class ParityError(ExportError):
    """An exported artifact does not match the PyTorch reference within its budget."""


class EngineError(SrganDeployError):
    """A TensorRT engine could not be built, loaded or run."""


class VideoError(SrganDeployError):
    """A video could not be decoded or encoded."""


class TrainingError(SrganDeployError):
    """Training could not start or continue."""


class ServerError(SrganDeployError):
    """An inference server (-b triton) could not be reached, stopped answering, or does not serve the model asked
    for. The message names the server and the model."""


class ShapeError(SrganDeployError):
    """A frame or shape is outside what the backend or engine profile accepts."""


class Interrupted(SrganDeployError):
    """The user pressed Ctrl-C or the process got SIGTERM."""

    exit_code = 130
