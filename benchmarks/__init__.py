"""Benchmarks behind every number in the README and docs/benchmarks.md: ``python -m
benchmarks.<name>`` from the repository root. Grid-shaped ones read their settings from
``grids/*.yaml`` (the files ``bouquet grid`` runs) and resume where they stopped."""
