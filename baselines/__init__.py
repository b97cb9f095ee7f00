"""The baseline files shipped with gpu-burnin: one TOML file per GPU model.

The format is in docs/baselines.md; `harness.baselines` reads them.
"""
