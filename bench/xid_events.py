"""Can NVML deliver Xid events here? Every run's health monitor listens for them
(harness/nvml/monitor.py), and where registering fails it goes on without them and the
result file does not say so: this script does.

    python bench/xid_events.py                    # the driver's NVML
    python bench/xid_events.py --nvml sim:FILE    # a simulated NVML (the CPU dry run)

For every GPU NVML lists: register it for Xid critical-error events in one event set, as
the monitor does; then wait 200 ms on the set, where NVML's normal answer is Timeout (no
Xid due). One line per GPU, then `xid events: registered on N of M GPUs; ...`. Exit 0 when
every GPU registered and the wait answered as it should, 1 when not, 2 when there is no
NVML (no nvidia-ml-py, no driver).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from harness.nvml import binding, read  # noqa: E402

WAIT_MS = 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvml", default=binding.REAL, metavar="real|sim:FILE")
    args = parser.parse_args()
    try:
        nv = binding.load(args.nvml)
        nv.nvmlInit()
    except Exception as err:  # noqa: BLE001 - Unavailable, or NVMLError from a machine without a driver
        print(f"xid events: no NVML: {type(err).__name__}: {err}")
        return 2
    try:
        return listen(nv)
    finally:
        nv.nvmlShutdown()


def listen(n: Any) -> int:
    """`n`: NVML's functions by nvidia-ml-py's names, the real module's or the simulation's."""
    count = n.nvmlDeviceGetCount()
    events = n.nvmlEventSetCreate()
    registered = 0
    try:
        for index in range(count):
            try:
                handle = n.nvmlDeviceGetHandleByIndex(index)
                uuid = read.text(n.nvmlDeviceGetUUID(handle))
                n.nvmlDeviceRegisterEvents(handle, n.nvmlEventTypeXidCriticalError, events)
            except n.NVMLError as err:
                print(f"GPU {index}: NOT registered for Xid events: {type(err).__name__}: {err}")
                continue
            registered += 1
            print(f"GPU {index} ({uuid}): registered for Xid events")
        began = time.monotonic()
        try:
            data = n.nvmlEventSetWait_v2(events, WAIT_MS)
            waited = f"an Xid {data.eventData} was waiting (the kernel log says which)"
            ok = True
        except n.NVMLError as err:
            ok = getattr(err, "value", None) == n.NVML_ERROR_TIMEOUT
            waited = (
                f"a {WAIT_MS} ms wait timed out normally in {time.monotonic() - began:.2f} s"
                if ok
                else f"the wait failed: {type(err).__name__}: {err}"
            )
    finally:
        n.nvmlEventSetFree(events)
    print(f"xid events: registered on {registered} of {count} GPUs; {waited}")
    return 0 if ok and count and registered == count else 1


if __name__ == "__main__":
    sys.exit(main())
