"""gpu-burnin's GPU tests and the pytest plugin that runs them.

Run the suite with `pytest --pyargs gputests` (installed) or `pytest` (in a
checkout); `--gpu-device cpu` runs it as a CPU self-test.
"""
