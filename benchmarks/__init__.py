"""Reproducible benchmark scripts; results are kept, dated, in benchmarks/results/."""
