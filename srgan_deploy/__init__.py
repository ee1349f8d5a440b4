"""srgan-deploy: SRGAN 4x super-resolution from training to low-latency video upscaling."""

__version__ = "0.1.0"
