"""The processes that touch the devices: one worker per device, which the parent can always stop.

`process` runs workers and passes their messages; `devicetest` is the scaffolding a
device test is built on (limits, messages, findings, fault points); `faults` are the
injected faults that prove the pipeline fails closed.
"""

from harness.workers.process import (
    Channel,
    Done,
    Failed,
    Message,
    Overdue,
    Progress,
    WorkerEnd,
    WorkerGroup,
    WorkerStatus,
)

__all__ = [
    "Channel",
    "Done",
    "Failed",
    "Message",
    "Overdue",
    "Progress",
    "WorkerEnd",
    "WorkerGroup",
    "WorkerStatus",
]
