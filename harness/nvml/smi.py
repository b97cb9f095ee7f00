"""The health snapshot from nvidia-smi: the fallback when NVML cannot load but `nvidia-smi` runs,
and the parser the tests use to check the health rules against real captures.

`read` runs `nvidia-smi -q -x`; `parse_xml` reads that XML (DTD v10 to v13, the old
`clocks_throttle_reasons` and the new `clocks_event_reasons`, the single/double-bit and the
SRAM/DRAM ECC layouts); `parse_text` reads the plain `nvidia-smi -q` dump, whole or partial
(`-q -d PAGE_RETIREMENT`), which is what people paste into tickets and what other tools keep as
test data.

Whatever nvidia-smi cannot tell ("N/A", "[Not Supported]", "Unknown Error", a missing tag) is None,
never zero or False: the health rules skip what they cannot see rather than passing it.

A GPU's index is its position in nvidia-smi's output. nvidia-smi lists the GPUs in its own
enumeration order, PCI bus order, the order of its table and of NVML's indices; `minor_number` is
the kernel's /dev/nvidiaN number, given out at probe time, and does not follow that order (the K80
capture lists minors 1, 2, 3, 0 in bus order; the 8x RTX 4090 one 3, 2, 1, 0, 7, 6, 5, 4).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess

# The standard library's parser: the XML is nvidia-smi's own output on this machine (or a test
# capture), local and trusted. ElementTree does not fetch the DTD it names.
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from harness.nvml.snapshot import CLOCK_EVENTS, Ecc, GpuHealth, PcieLink, RetiredPages, RowRemap, Snapshot

SOURCE = "nvidia-smi"
COMMAND = ("nvidia-smi", "-q", "-x")

Runner = Callable[..., subprocess.CompletedProcess[Any]]
Getter = Callable[[str], str | None]
"""Reads one value of a section by its XML-style path (`single_bit/total`); None when absent."""

_UNKNOWN = {
    "",
    "n/a",
    "not supported",
    "unknown error",
    "not found",
    "requested functionality has been deprecated",
    "insufficient permissions",
    "gpu requires reset",
    "gpu is lost",
    "not available",
}
"""Values that say nvidia-smi could not read a field (brackets removed, lower case)."""

_TRUE = {"yes", "enabled", "active"}
_FALSE = {"no", "disabled", "not active"}

_BITS = {name: bit for bit, name in CLOCK_EVENTS.items()}
_REASON_ALIASES = {
    # nvidia-smi's names that differ from snapshot.CLOCK_EVENTS (XML tag or plain-text label).
    "idle": "gpu_idle",
    "display_clocks_setting": "display_clock_setting",
}
_REASON_PREFIXES = ("clocks_event_reason_", "clocks_throttle_reason_")

_NUMBER = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*[A-Za-z%]*$")
_BUS_ID = re.compile(r"^([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])$")
_TEXT_LINE = re.compile(r"^(?P<key>\S.*?)\s+:(?:\s+(?P<value>.*))?$")
_TEXT_GPU = re.compile(r"^GPU\s+(\S+:\S+)$")


# --- reading nvidia-smi --------------------------------------------------------------------------


def read(*, timeout_s: float = 30.0, runner: Runner = subprocess.run) -> Snapshot:
    """Run `nvidia-smi -q -x` and parse it. Never raises: a missing binary, a timeout, a failed
    run or output it cannot read gives a snapshot with no GPUs and a one-line `problem`, which
    the health rules report as unknown health rather than a healthy node."""
    taken = _now()
    try:
        done = runner(list(COMMAND), capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False)
    except FileNotFoundError:
        return _empty(taken, "nvidia-smi not found")
    except subprocess.TimeoutExpired:
        return _empty(taken, f"nvidia-smi -q -x did not finish within {timeout_s:g} s")
    except OSError as err:
        return _empty(taken, f"nvidia-smi could not run: {err}")
    if done.returncode != 0:
        detail = _first_line(done.stderr) or _first_line(done.stdout) or "no output"
        return _empty(taken, f"nvidia-smi -q -x exited with {done.returncode}: {detail}")
    try:
        return parse_xml(_decoded(done.stdout), taken_at=taken)
    except Exception as err:  # a health fallback must not end the run: it reports, and the run is incomplete
        return _empty(taken, f"nvidia-smi -q -x output unreadable: {type(err).__name__}: {err}")


def _empty(taken: dt.datetime, problem: str) -> Snapshot:
    return Snapshot(source=SOURCE, taken_at=taken, problem=_one_line(problem))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _decoded(output: str | bytes | None) -> str:
    """A fake or a caller's runner may hand back bytes."""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


def _first_line(output: str | bytes | None) -> str:
    return next((line.strip() for line in _decoded(output).splitlines() if line.strip()), "")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- nvidia-smi -q -x ----------------------------------------------------------------------------


def parse_xml(text: str, *, taken_at: dt.datetime | None = None) -> Snapshot:
    """A snapshot from `nvidia-smi -q -x` output (root `<nvidia_smi_log>`).

    `taken_at` defaults to now: the file's own `<timestamp>` is local time without a time zone.
    Raises ValueError for text that is not such a document.
    """
    try:
        root = ET.fromstring(text.lstrip())
    except ET.ParseError as err:
        raise ValueError(f"not XML: {err}") from err
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"root element is <{root.tag}>, expected <nvidia_smi_log>")
    gpus = tuple(_xml_gpu(index, gpu) for index, gpu in enumerate(root.findall("gpu")))
    count = _count(root.findtext("attached_gpus"))
    return _snapshot(
        taken_at=taken_at,
        driver=_name(root.findtext("driver_version")),
        cuda=_name(root.findtext("cuda_version")),
        count=count,
        gpus=gpus,
    )


def _xml_gpu(index: int, gpu: ET.Element) -> GpuHealth:
    def get(path: str) -> str | None:
        return gpu.findtext(path)

    def power(*names: str) -> float | None:
        # gpu_power_readings from DTD v12 on, power_readings before.
        return _first(_number(get(f"{section}/{name}")) for name in names for section in _XML_POWER)

    pending = (get("retired_pages/pending_retirement"), get("retired_pages/pending_blacklist"))
    return GpuHealth(
        index=index,
        uuid=_name(get("uuid")),
        name=_name(get("product_name")),
        serial=_name(get("serial")),
        pci_bus_id=_bus_id(get("pci/pci_bus_id") or gpu.get("id")),
        ecc_enabled=_flag(get("ecc_mode/current_ecc")),
        ecc=_ecc(_xml_getter(gpu.find("ecc_errors/volatile")), _xml_getter(gpu.find("ecc_errors/aggregate"))),
        retired=RetiredPages(
            single_bit=_count(get("retired_pages/multiple_single_bit_retirement/retired_count")),
            double_bit=_count(get("retired_pages/double_bit_retirement/retired_count")),
            pending=_any_flag(pending),
        ),
        remap=RowRemap(
            corrected=_count(get("remapped_rows/remapped_row_corr")),
            uncorrected=_count(get("remapped_rows/remapped_row_unc")),
            pending=_flag(get("remapped_rows/remapped_row_pending")),
            failure=_flag(get("remapped_rows/remapped_row_failure")),
        ),
        clock_events=_xml_clock_events(gpu),
        temperature_c=_number(get("temperature/gpu_temp")),
        memory_temperature_c=_number(get("temperature/memory_temp")),
        power_w=power("power_draw", "instant_power_draw", "average_power_draw"),
        power_limit_w=power("enforced_power_limit", "current_power_limit", "power_limit"),
        sm_clock_mhz=_first(_number(get(path)) for path in ("clocks/sm_clock", "clocks/graphics_clock")),
        memory_clock_mhz=_number(get("clocks/mem_clock")),
        pcie=PcieLink(
            gen=_count(get("pci/pci_gpu_link_info/pcie_gen/current_link_gen")),
            gen_max=_count(get("pci/pci_gpu_link_info/pcie_gen/max_link_gen")),
            width=_count(get("pci/pci_gpu_link_info/link_widths/current_link_width")),
            width_max=_count(get("pci/pci_gpu_link_info/link_widths/max_link_width")),
        ),
        persistence=_flag(get("persistence_mode")),
        mig=_flag(get("mig_mode/current_mig")),
    )


_XML_POWER = ("gpu_power_readings", "power_readings")


def _xml_getter(section: ET.Element | None) -> Getter:
    def get(path: str) -> str | None:
        return None if section is None else section.findtext(path)

    return get


def _xml_clock_events(gpu: ET.Element) -> int | None:
    section = gpu.find("clocks_event_reasons")
    if section is None:
        section = gpu.find("clocks_throttle_reasons")
    if section is None:
        return None
    return _clock_mask((child.tag, child.text) for child in section)


# --- nvidia-smi -q -------------------------------------------------------------------------------


class _Node:
    """One line of `nvidia-smi -q`, `Key : Value` or a heading (value None), with the lines
    indented under it. A line can be both: "HW Slowdown : Active" has the HW thermal and power
    brake lines under it."""

    __slots__ = ("label", "value", "children")

    def __init__(self, label: str, value: str | None) -> None:
        self.label = label
        self.value = value
        self.children: list[_Node] = []

    @property
    def key(self) -> str:
        return _text_key(self.label)

    def find(self, path: str) -> _Node | None:
        """The first node down `path`, keys as _text_key makes them, joined by /."""
        node: _Node | None = self
        for part in path.split("/"):
            if node is None:
                return None
            node = next((child for child in node.children if child.key == part), None)
        return node

    def get(self, path: str) -> str | None:
        node = self.find(path)
        return None if node is None else node.value

    def walk(self) -> Iterator[_Node]:
        for child in self.children:
            yield child
            yield from child.walk()


def _text_key(label: str) -> str:
    """ "SRAM Uncorrectable SEC-DED" -> "sram_uncorrectable_secded": the plain-text labels in the
    shape of the XML tags, so that the ECC and clock reason code serves both."""
    return "_".join(label.lower().replace("-", "").replace(".", "").split())


def _text_tree(text: str) -> _Node:
    root = _Node("", None)
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.expandtabs(8).rstrip()
        body = line.lstrip(" ")
        if not body:
            continue
        indent = len(line) - len(body)
        match = _TEXT_LINE.match(body)
        node = _Node(match["key"], (match["value"] or "").strip()) if match else _Node(body, None)
        while stack[-1][0] >= indent:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((indent, node))
    return root


def parse_text(text: str, *, taken_at: dt.datetime | None = None) -> Snapshot:
    """A snapshot from plain `nvidia-smi -q` output: the `GPU 00000000:19:00.0` sections, whole or
    as far as a partial query (`-q -d PAGE_RETIREMENT`) shows them; what a section does not show
    is None. `taken_at` defaults to now, as in parse_xml."""
    root = _text_tree(text)
    gpus: list[GpuHealth] = []
    for node in root.children:
        heading = _TEXT_GPU.match(node.label) if node.value is None else None
        if heading:
            gpus.append(_text_gpu(len(gpus), heading[1], node))
    return _snapshot(
        taken_at=taken_at,
        driver=_name(root.get("driver_version")),
        cuda=_name(root.get("cuda_version")),
        count=_count(root.get("attached_gpus")),
        gpus=tuple(gpus),
    )


def _text_gpu(index: int, bus_id: str, gpu: _Node) -> GpuHealth:
    get = gpu.get

    def power(*names: str) -> float | None:
        return _first(_number(get(f"{section}/{name}")) for name in names for section in _TEXT_POWER)

    retired = gpu.find("retired_pages")
    pending = [child.value for child in retired.children if child.key.startswith("pending")] if retired else []
    reasons = gpu.find("clocks_event_reasons") or gpu.find("clocks_throttle_reasons")
    volatile, aggregate = gpu.find("ecc_errors/volatile"), gpu.find("ecc_errors/aggregate")
    return GpuHealth(
        index=index,
        uuid=_name(get("gpu_uuid")),
        name=_name(get("product_name")),
        serial=_name(get("serial_number")),
        pci_bus_id=_bus_id(get("pci/bus_id") or bus_id),
        ecc_enabled=_flag(get("ecc_mode/current")),
        ecc=_ecc(volatile.get if volatile else _nothing, aggregate.get if aggregate else _nothing),
        retired=RetiredPages(
            single_bit=_count(get("retired_pages/single_bit_ecc")),
            double_bit=_count(get("retired_pages/double_bit_ecc")),
            pending=_any_flag(pending),
        ),
        remap=RowRemap(
            corrected=_count(get("remapped_rows/correctable_error")),
            uncorrected=_count(get("remapped_rows/uncorrectable_error")),
            pending=_flag(get("remapped_rows/pending")),
            failure=_flag(get("remapped_rows/remapping_failure_occurred")),
        ),
        clock_events=_clock_mask((n.key, n.value) for n in reasons.walk()) if reasons else None,
        temperature_c=_number(get("temperature/gpu_current_temp")),
        memory_temperature_c=_number(get("temperature/memory_current_temp")),
        power_w=power("power_draw", "instant_power_draw", "average_power_draw"),
        power_limit_w=power("enforced_power_limit", "current_power_limit", "power_limit"),
        sm_clock_mhz=_first(_number(get(path)) for path in ("clocks/sm", "clocks/graphics")),
        memory_clock_mhz=_number(get("clocks/memory")),
        pcie=PcieLink(
            gen=_count(get("pci/gpu_link_info/pcie_generation/current")),
            gen_max=_count(get("pci/gpu_link_info/pcie_generation/max")),
            width=_count(get("pci/gpu_link_info/link_width/current")),
            width_max=_count(get("pci/gpu_link_info/link_width/max")),
        ),
        persistence=_flag(get("persistence_mode")),
        mig=_flag(get("mig_mode/current")),
    )


_TEXT_POWER = ("gpu_power_readings", "power_readings")


def _nothing(path: str) -> str | None:
    return None


# --- shared by both formats ----------------------------------------------------------------------


def _snapshot(
    *, taken_at: dt.datetime | None, driver: str, cuda: str, count: int | None, gpus: tuple[GpuHealth, ...]
) -> Snapshot:
    """`gpu_count` is what nvidia-smi says is attached; `problem` says when it lists fewer GPUs,
    none, or GPUs without a UUID (a partial query), since the snapshot then covers less than
    the node."""
    attached = len(gpus) if count is None else count
    problems = []
    if not gpus:
        problems.append("nvidia-smi lists no GPUs")
    elif attached > len(gpus):
        problems.append(f"nvidia-smi lists {len(gpus)} of the {attached} attached GPUs")
    nameless = sum(1 for gpu in gpus if not gpu.uuid)
    if nameless:
        problems.append(f"no UUID for {nameless} of {len(gpus)} GPUs (partial nvidia-smi output)")
    return Snapshot(
        source=SOURCE,
        taken_at=_now() if taken_at is None else taken_at,
        driver=driver,
        cuda_driver=cuda,
        gpu_count=attached,
        gpus=gpus,
        problem="; ".join(problems),
    )


def _ecc(volatile: Getter, aggregate: Getter) -> Ecc:
    """ECC counts from either layout nvidia-smi has used, into the snapshot's fields.

    Old layout (Kepler to Volta/Turing drivers, DTD v10/v11: `single_bit` and `double_bit`, each
    with per-location counts and a `total`): single-bit errors are the corrected ones (SEC) and
    double-bit errors the detected, uncorrected ones (DED), so `single_bit/total` is
    `*_corrected` and `double_bit/total` is `*_uncorrected`. Their `device_memory` counts (the
    framebuffer, NVML's NVML_MEMORY_LOCATION_DEVICE_MEMORY, the same location as its
    NVML_MEMORY_LOCATION_DRAM) are `*_dram_*`. The SRAM fields stay None: the layout splits the
    on-chip memories by structure (register file, L1, L2, texture, CBU), not as one SRAM
    figure, and NVML has no SRAM location for those GPUs either.

    New layout (Ampere on, DTD v11 to v13): `sram_correctable`, `sram_uncorrectable`,
    `dram_correctable`, `dram_uncorrectable` go to the matching `*_sram_*`/`*_dram_*` fields.
    Hopper drivers (and v13) split SRAM uncorrectable into `sram_uncorrectable_parity` and
    `sram_uncorrectable_secded`: their sum is `*_sram_uncorrected`. The all-locations fields are
    SRAM + DRAM, and None unless both parts are known, since a total that leaves out an
    unreadable part would read as fewer errors than there are.
    """
    return Ecc(**_ecc_counts("volatile", volatile), **_ecc_counts("aggregate", aggregate))


def _ecc_counts(kind: str, get: Getter) -> dict[str, int | None]:
    if any(get(path) is not None for path in ("single_bit/total", "double_bit/total")):
        return {
            f"{kind}_corrected": _count(get("single_bit/total")),
            f"{kind}_uncorrected": _count(get("double_bit/total")),
            f"{kind}_dram_corrected": _count(get("single_bit/device_memory")),
            f"{kind}_dram_uncorrected": _count(get("double_bit/device_memory")),
        }
    split = [get("sram_uncorrectable_parity"), get("sram_uncorrectable_secded")]
    if any(value is not None for value in split):
        sram_uncorrected = _sum(_count(value) for value in split)
    else:
        sram_uncorrected = _count(get("sram_uncorrectable"))
    sram_corrected = _count(get("sram_correctable"))
    dram_corrected, dram_uncorrected = _count(get("dram_correctable")), _count(get("dram_uncorrectable"))
    return {
        f"{kind}_corrected": _sum([sram_corrected, dram_corrected]),
        f"{kind}_uncorrected": _sum([sram_uncorrected, dram_uncorrected]),
        f"{kind}_sram_corrected": sram_corrected,
        f"{kind}_sram_uncorrected": sram_uncorrected,
        f"{kind}_dram_corrected": dram_corrected,
        f"{kind}_dram_uncorrected": dram_uncorrected,
    }


def _clock_mask(reasons: Iterable[tuple[str, str | None]]) -> int | None:
    """The bitmask of the Active reasons, nvidia-smi's names (XML tags `clocks_event_reason_hw_slowdown`,
    `clocks_throttle_reason_hw_slowdown`, text labels "HW Slowdown", "Idle") mapped onto
    snapshot.CLOCK_EVENTS. None when no reason could be read; names it has no bit for are skipped."""
    mask, known = 0, False
    for name, value in reasons:
        key = name
        for prefix in _REASON_PREFIXES:
            key = key.removeprefix(prefix)
        bit = _BITS.get(_REASON_ALIASES.get(key, key))
        state = _flag(value)
        if bit is None or state is None:
            continue
        known = True
        if state:
            mask |= bit
    return mask if known else None


def _unknown(value: str | None) -> bool:
    return value is None or value.strip().strip("[]").strip().lower() in _UNKNOWN


def _name(value: str | None) -> str:
    """A text field, "" where nvidia-smi could not read it."""
    return "" if value is None or _unknown(value) else value.strip()


def _number(value: str | None) -> float | None:
    """ "50.60 W", "33 C", "1410 MHz" -> the number; anything else (N/A, a message) -> None."""
    if value is None:
        return None
    match = _NUMBER.match(value.strip())
    return float(match[1]) if match else None


def _count(value: str | None) -> int | None:
    """A whole count or a link generation or width ("16x" -> 16)."""
    number = _number(value)
    return int(number) if number is not None and number == int(number) and number >= 0 else None


def _flag(value: str | None) -> bool | None:
    """Yes/No, Enabled/Disabled, Active/Not Active; None for anything else."""
    if value is None:
        return None
    word = " ".join(value.split()).lower()
    return True if word in _TRUE else False if word in _FALSE else None


def _any_flag(values: Iterable[str | None]) -> bool | None:
    """Several tags for one fact (pending_retirement and its older name pending_blacklist)."""
    flags = [flag for flag in map(_flag, values) if flag is not None]
    return any(flags) if flags else None


def _sum(values: Iterable[int | None]) -> int | None:
    parts = list(values)
    return None if any(part is None for part in parts) else sum(part for part in parts if part is not None)


def _first(values: Iterable[float | None]) -> float | None:
    return next((value for value in values if value is not None), None)


def _bus_id(value: str | None) -> str:
    """NVML's form, `00000000:19:00.0`: an eight-digit domain and upper-case hex, whatever nvidia-smi
    printed (the legacy `0000:19:00.0` included)."""
    text = _name(value)
    match = _BUS_ID.match(text)
    if not match:
        return text
    domain, bus, device, function = (int(part, 16) for part in match.groups())
    return f"{domain:08X}:{bus:02X}:{device:02X}.{function:X}"
