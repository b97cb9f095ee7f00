"""Loads the burn-in plugin from a checkout, so `pytest -m matmul` works before (or
without) installing the project. Installed, the `pytest11` entry point loads the
same module under the same name, and pytest registers it once."""

pytest_plugins = ["gputests.plugin", "pytester"]
