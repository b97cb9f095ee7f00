"""The devices under test and the facts of the host they sit in.

GPUs are listed by a short-lived worker process (a broken driver can hang CUDA's
initialisation, and the pytest process must not be the one that hangs), then
joined with NVML's view for serial numbers and the driver version. In CPU
self-test mode the CPU is the one device.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
from harness import nvml
from harness.records import Code, Finding, Remediation, Severity
from harness.workers import Channel, Message, WorkerGroup


@dataclasses.dataclass(frozen=True, kw_only=True)
class Device:
    index: int
    """The GPU's index as nvidia-smi and DCGM show it (NVML's), or its CUDA ordinal when NVML is not
    available; 0 for the CPU. Faults (`--inject hang:3`) name devices by it."""
    kind: str
    """"cuda" or "cpu"."""
    name: str
    """As the driver reports it ("NVIDIA H100 80GB HBM3"); baselines match on it."""
    uuid: str
    serial: str = ""
    pci_bus_id: str = ""
    memory_bytes: int = 0
    sm_count: int = 0
    """Streaming multiprocessors; logical cores for the CPU."""
    compute_capability: str = ""

    @property
    def label(self) -> str:
        return f"GPU {self.index}" if self.kind == "cuda" else f"CPU {self.index}"

    @property
    def visible_as(self) -> str:
        """What CUDA_VISIBLE_DEVICES names it by: its UUID, or its ordinal when torch gave none."""
        return self.uuid if self.uuid.startswith("GPU-") else self.uuid.removeprefix("cuda:")

    @property
    def model_key(self) -> tuple[str, str, int, str]:
        """Devices with equal keys must compute bitwise-equal matmul results."""
        return (self.kind, self.name, self.sm_count, self.compute_capability)

    def finding(
        self,
        code: Code,
        severity: Severity,
        text: str,
        remediation: Remediation = Remediation.NONE,
        *,
        test: str,
        metric: str = "",
        **details: Any,
    ) -> Finding:
        """A finding about this device; its message names the device by label and UUID."""
        return Finding(
            code=code,
            severity=severity,
            gpu=self.uuid,
            message=f"{self.label} ({self.uuid}): {text}",
            remediation=remediation,
            test=test,
            metric=metric,
            details=details,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Device:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inventory:
    devices: tuple[Device, ...]
    host: dict[str, str]
    """hostname, node, kernel, python, gpu_burnin, torch, cuda, cuda_driver, driver, nccl, cpu_model, nvml."""
    problem: str = ""
    """Why no device is listed, in one line; empty when there are devices."""


DRIVER_MARKERS = (Path("/proc/driver/nvidia/version"), Path("/dev/nvidiactl"))
PCI_ORDER = "PCI_BUS_ID"
"""CUDA_DEVICE_ORDER everywhere: CUDA ordinals, and indices in CUDA_VISIBLE_DEVICES, then count
GPUs as nvidia-smi does."""


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA kernel driver is installed, without calling into it (a wedged driver
    can hang the first call). A machine with a driver that finds no GPU must not be
    mistaken for one without: the GPU run then ends as NO_GPUS, incomplete."""
    return any(marker.exists() for marker in DRIVER_MARKERS)


def node_name() -> str:
    """The Kubernetes node name from the downward API, else the host name."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


CPU_DEVICES = 2
"""Stand-in devices the CPU self-test lists by default: two, so that the tests between devices
(copies, all-reduce) run their orchestration and checks on any machine."""


def discover(kind: str, *, startup_timeout_s: float, cpu_devices: int = CPU_DEVICES) -> Inventory:
    host = _host_facts()
    if kind == "cpu":
        model = host["cpu_model"]
        return Inventory(devices=tuple(_cpu_device(model, i) for i in range(cpu_devices)), host=host)
    listing = _probe_cuda(startup_timeout_s)
    host.update({k: v for k, v in listing.facts.items() if v})
    facts = listing.nvml
    host["nvml"] = "available" if facts.available else facts.reason
    host["driver"] = facts.driver_version
    host["cuda_driver"] = facts.cuda_driver_version
    by_uuid = {d.uuid: d for d in facts.devices}
    devices = []
    for device in listing.devices:
        seen = by_uuid.get(device.uuid)
        if seen is not None:  # label it as nvidia-smi and DCGM do
            device = dataclasses.replace(
                device, index=seen.index, serial=seen.serial, pci_bus_id=seen.pci_bus_id or device.pci_bus_id
            )
        devices.append(device)
    devices.sort(key=lambda d: d.index)
    return Inventory(devices=tuple(devices), host=host, problem=listing.problem)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Listing(Message):
    """What the probe worker found."""

    devices: tuple[Device, ...]
    facts: dict[str, str]
    problem: str = ""
    nvml: nvml.NvmlFacts = nvml.NvmlFacts(available=False, reason="NVML was not read")


def _probe_cuda(startup_timeout_s: float) -> Listing:
    with WorkerGroup(
        probe_worker,
        [None],
        startup_s=startup_timeout_s,
        stall_s=startup_timeout_s,
        limit_s=startup_timeout_s,
    ) as group:
        for _, message in group.messages(until=Listing):
            if isinstance(message, Listing):
                return message
        end = group.end(0)
    return Listing(devices=(), facts={}, problem=f"listing the GPUs failed: {end.status}: {end.last_line}")


def probe_worker(job: None, channel: Channel) -> None:
    """Runs in a worker, under the startup limit: reads NVML, then lists the CUDA devices torch can see.
    A wedged driver can block either for ever; here it costs the limit, not the run."""
    channel.progress("reading NVML")
    seen = nvml.read_facts()
    channel.progress("starting CUDA")
    os.environ["CUDA_DEVICE_ORDER"] = PCI_ORDER
    import torch

    facts = {
        "torch": str(torch.__version__),
        "cuda": str(torch.version.cuda or ""),
    }  # plain str: no torch in the parent
    if not torch.cuda.is_available():
        try:
            torch.cuda.init()  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
            reason = "torch.cuda.is_available() is False"
        except Exception as err:  # noqa: BLE001 - the reason is what we are after
            reason = str(err) or type(err).__name__
        channel.send(
            Listing(
                devices=(),
                facts=facts,
                problem=f"no CUDA device ({reason})",
                nvml=seen,
            )
        )
        return
    try:
        version = torch.cuda.nccl.version()  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
        facts["nccl"] = ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)
    except Exception:  # noqa: BLE001 - a torch built without NCCL
        facts["nccl"] = ""
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            Device(
                index=index,
                kind="cuda",
                name=str(props.name),
                uuid=f"GPU-{props.uuid}" if getattr(props, "uuid", None) else f"cuda:{index}",
                pci_bus_id=_pci_bus_id(props),
                memory_bytes=int(props.total_memory),
                sm_count=int(props.multi_processor_count),
                compute_capability=f"{props.major}.{props.minor}",
            )
        )
    problem = "" if devices else "torch lists no CUDA device"
    channel.send(Listing(devices=tuple(devices), facts=facts, problem=problem, nvml=seen))


def _pci_bus_id(props: Any) -> str:
    """In NVML's form, 00000000:19:00.0, so the two views can be matched."""
    if not hasattr(props, "pci_bus_id"):
        return ""
    return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"


def _cpu_device(model: str, index: int) -> Device:
    """One stand-in device of the CPU self-test; each worker takes an equal share of the cores."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Device(
        index=index,
        kind="cpu",
        name=model,
        uuid=f"CPU-{socket.gethostname()}-{index}",
        memory_bytes=int(pages),
        sm_count=len(os.sched_getaffinity(0)),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class NumaPlacement:
    """The host CPUs nearest a PCI device, from sysfs: where its host memory and thread belong."""

    node: int | None
    """The NUMA node, or None where the host does not say (one node, a VM, no sysfs)."""
    cpus: frozenset[int] = frozenset()

    def describe(self) -> str:
        if self.node is None:
            return "no NUMA node reported: host memory not placed"
        return f"NUMA node {self.node} ({len(self.cpus)} CPUs)"


SYSFS = Path("/sys")


def numa_placement(pci_bus_id: str, sysfs: Path = SYSFS) -> NumaPlacement:
    """The NUMA node of a GPU by its PCI bus id (NVML's 00000000:19:00.0 or sysfs' 0000:19:00.0)."""
    domain, _, rest = pci_bus_id.strip().lower().partition(":")
    if not rest:
        return NumaPlacement(node=None)
    address = f"{int(domain, 16):04x}:{rest}"
    try:
        node = int((sysfs / "bus" / "pci" / "devices" / address / "numa_node").read_text())
        listed = (sysfs / "devices" / "system" / "node" / f"node{node}" / "cpulist").read_text()
    except (OSError, ValueError):
        return NumaPlacement(node=None)
    if node < 0:
        return NumaPlacement(node=None)
    return NumaPlacement(node=node, cpus=frozenset(_cpu_list(listed)))


def _cpu_list(text: str) -> list[int]:
    """The kernel's list format: 0-31,64-95."""
    found: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        found.extend(range(int(first), int(last or first) + 1))
    return found


def _host_facts() -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "node": node_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gpu_burnin": harness.__version__,
        "torch": _version("torch"),
        "cuda": "",
        "cuda_driver": "",
        "driver": "",
        "nccl": "",
        "cpu_model": _cpu_model(),
        "nvml": "not used in CPU mode",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""
