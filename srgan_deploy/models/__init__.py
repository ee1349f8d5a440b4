"""SRGAN architectures (Ledig et al. 2017): one architecture per module."""

from srgan_deploy.models.discriminator import Discriminator
from srgan_deploy.models.fold import fold_batchnorm
from srgan_deploy.models.generator import Generator, InferenceGenerator
from srgan_deploy.models.subpixel import DeployGenerator

__all__ = ["DeployGenerator", "Discriminator", "Generator", "InferenceGenerator", "fold_batchnorm"]
