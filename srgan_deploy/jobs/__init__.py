"""Segmented, resumable video jobs: index -> plan -> render segments (anywhere) -> join.

A job's work lives in a hidden folder beside its output, described by a manifest, so a killed run
resumes where it stopped and segments can be rendered by local worker processes or Ray actors.
"""
