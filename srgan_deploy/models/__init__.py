"""SRGAN architectures (Ledig et al. 2017): one architecture per module."""

from srgan_deploy.models.discriminator import Discriminator
from srgan_deploy.models.fold import fold_batchnorm
from srgan_deploy.models.generator import Generator, InferenceGenerator

__all__ = ["Discriminator", "Generator", "InferenceGenerator", "fold_batchnorm"]
