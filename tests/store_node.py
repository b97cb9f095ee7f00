"""`gpu-burnin` with the store's patience cut to a few seconds, for these tests only.

A run gives a failing store PATIENCE_S (60 s) before it goes on (harness/outbox.py); the tests
that take the store away run the real command in a process where that one constant is shorter,
and where preflight and periodic may run the CPU self-test (as tests/cpu_node.py):
`python -m tests.store_node run --device cpu --results-url s3://... ...`.
"""

import sys

from harness import cli, entrypoints, outbox

PATIENCE_S = 3.0

if __name__ == "__main__":
    outbox.PATIENCE_S = PATIENCE_S
    entrypoints.NODE_DEVICES = ("cuda", "cpu")
    sys.exit(cli.main())
