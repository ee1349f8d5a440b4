"""Segmented, resumable video jobs: index -> plan -> render segments (anywhere) -> join.

A job's work lives in a hidden folder beside its output, described by a manifest, so a killed run
resumes where it stopped and segments can be rendered by local worker processes or Ray actors.
``upscale_videos`` is the one call that runs a job the way ``srgan-deploy video`` does.
"""

from srgan_deploy.jobs.coordinator import Outcome, Reporter
from srgan_deploy.jobs.videos import VideoJobOptions, VideoJobResult, outputs_in_folder, upscale_videos

__all__ = ["Outcome", "Reporter", "VideoJobOptions", "VideoJobResult", "outputs_in_folder", "upscale_videos"]
