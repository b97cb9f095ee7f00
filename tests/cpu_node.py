"""`gpu-burnin` with preflight and periodic allowed on the CPU self-test, for these tests only.

A real node's verdict must come from its GPUs (harness.entrypoints.NODE_DEVICES), so the
product refuses `preflight --device cpu`. To drive the node flows end to end on a machine
without a GPU, the tests run the real command in a process where that one constant is
widened: `python -m tests.cpu_node preflight --device cpu ...`. Nothing outside this
process can do the same.
"""

import sys

from harness import cli, entrypoints

if __name__ == "__main__":
    entrypoints.NODE_DEVICES = ("cuda", "cpu")
    sys.exit(cli.main())
