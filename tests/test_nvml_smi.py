"""harness.nvml.smi against real nvidia-smi captures (tests/data/nvidia-smi, see tests/data/SOURCES.md).

Each expected value is read off the capture by hand; the comment beside it says where (file line).
The health rules are checked against these snapshots, so a parser that reads a fault as healthy,
or an unreadable field as zero, would let a bad node pass.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.nvml import smi
from harness.nvml.snapshot import Ecc, GpuHealth, PcieLink, RetiredPages, RowRemap, Snapshot, decode_clock_events

DATA = Path(__file__).parent / "data" / "nvidia-smi"
WHEN = dt.datetime(2024, 7, 31, 11, 22, 39, tzinfo=dt.UTC)

H100 = "NVIDIA H100 80GB HBM3"

# file -> (attached_gpus, GPUs listed, product name of every listed GPU, driver)
FILES: dict[str, tuple[int, int, str, str]] = {
    "pai_v100-sxm3-32gb_retired-pages-pending_TRIMMED-1of16.xml": (16, 1, "Tesla V100-SXM3-32GB", "410.104"),
    "pai_4xk80_aggregate-dbe-retired-pages.xml": (4, 4, "Tesla K80", "430.26"),
    "telegraf_a100-sxm4-v12.xml": (4, 1, "NVIDIA A100-SXM4-80GB", "535.54.03"),
    "telegraf_a10g.xml": (1, 1, "NVIDIA A10G", "515.105.01"),
    "telegraf_tesla-t4.xml": (1, 1, "Tesla T4", "515.105.01"),
    "telegraf_rtx-4000-sff-ada-v13.xml": (1, 1, "NVIDIA RTX 4000 SFF Ada Generation", "595.84"),
    "netdata_a100-sxm4-40gb-mig.xml": (1, 1, "NVIDIA A100-SXM4-40GB", "510.47.03"),
    "netdata_tesla-p100-pcie.xml": (1, 1, "Tesla P100-PCIE-16GB", "510.47.03"),
    "gpud_8xH100_535.161.08_hw-slowdown-power-brake.txt": (8, 8, H100, "535.161.08"),
    "gpud_8xH100_535.183.01_sw-thermal-slowdown.txt": (8, 8, H100, "535.183.01"),
    "gpud_A10_535.129.03_remapped-rows-pending.txt": (1, 1, "NVIDIA A10", "535.129.03"),
    "gpud_8xRTX4090_535.154.05_sw-power-cap.txt": (8, 8, "NVIDIA GeForce RTX 4090", "535.154.05"),
    # -q -d PAGE_RETIREMENT: no product names in the output.
    "azurehpc_8gpu_535.86.10_retired-pages_orig.txt": (8, 8, "", "535.86.10"),
    "azurehpc_8gpu_535.86.10_retired-pages_bad-EDITED.txt": (8, 8, "", "535.86.10"),
}


def load(name: str) -> Snapshot:
    text = (DATA / name).read_text()
    return smi.parse_xml(text, taken_at=WHEN) if name.endswith(".xml") else smi.parse_text(text, taken_at=WHEN)


def test_every_capture_in_the_data_directory_is_listed_here() -> None:
    assert sorted(p.name for p in DATA.iterdir()) == sorted(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_capture_parses_with_its_gpu_count_names_and_driver(name: str) -> None:
    attached, listed, product, driver = FILES[name]
    snap = load(name)
    assert snap.source == "nvidia-smi" and snap.taken_at == WHEN
    assert snap.gpu_count == attached
    assert len(snap.gpus) == listed
    assert [gpu.name for gpu in snap.gpus] == [product] * listed
    assert [gpu.index for gpu in snap.gpus] == list(range(listed))
    assert snap.driver == driver
    assert all(gpu.pci_bus_id and gpu.pci_bus_id == gpu.pci_bus_id.upper() for gpu in snap.gpus)
    assert all(len(gpu.pci_bus_id.split(":")[0]) == 8 for gpu in snap.gpus)
    # JSON both ways, as the result file keeps it.
    assert Snapshot.from_dict(snap.to_dict()) == snap


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_capture_that_lists_fewer_gpus_than_attached_says_so(name: str) -> None:
    attached, listed, product, _ = FILES[name]
    problem = load(name).problem
    assert ("lists 1 of the" in problem) == (listed < attached)
    assert ("no UUID" in problem) == (product == "")


# --- nvidia-smi -q -x --------------------------------------------------------------------------------


def test_v100_trimmed_retired_pages_pending() -> None:
    snap = load("pai_v100-sxm3-32gb_retired-pages-pending_TRIMMED-1of16.xml")
    assert snap.cuda_driver == "10.0"  # line 6
    assert snap.problem == "nvidia-smi lists 1 of the 16 attached GPUs"  # line 7: attached_gpus 16, one <gpu>
    (gpu,) = snap.gpus
    assert gpu.uuid == "GPU-ef23ffa6-c9fd-93d5-aeb8-612c087255ff"  # line 21
    assert gpu.serial == "0323218034307"  # line 20
    assert gpu.pci_bus_id == "00000000:34:00.0"  # line 48
    assert gpu.persistence is True  # line 13
    assert gpu.ecc_enabled is True  # line 109
    assert gpu.ecc == Ecc(
        volatile_corrected=1,  # line 122: volatile/single_bit/total
        volatile_uncorrected=1,  # line 132: volatile/double_bit/total
        aggregate_corrected=291,  # line 144: aggregate/single_bit/total
        aggregate_uncorrected=7627,  # line 154: aggregate/double_bit/total
        volatile_dram_corrected=1,  # line 115: volatile/single_bit/device_memory
        volatile_dram_uncorrected=1,  # line 125: volatile/double_bit/device_memory
        aggregate_dram_corrected=291,  # line 137
        aggregate_dram_uncorrected=7627,  # line 147
    )
    # lines 160, 165, 177: 0 pages for single-bit, 2 for double-bit errors, a retirement pending
    assert gpu.retired == RetiredPages(single_bit=0, double_bit=2, pending=True)
    assert gpu.remap == RowRemap()  # Volta: no <remapped_rows>
    assert gpu.clock_event_names == ("gpu_idle",)  # line 71
    assert gpu.pcie == PcieLink(gen=3, gen_max=3, width=16, width_max=16)  # lines 52-57
    assert (gpu.temperature_c, gpu.memory_temperature_c) == (33.0, 33.0)  # lines 180, 184
    assert (gpu.power_w, gpu.power_limit_w) == (50.60, 350.00)  # lines 190, 193 (enforced_power_limit)
    assert (gpu.sm_clock_mhz, gpu.memory_clock_mhz) == (135.0, 958.0)  # lines 199, 200


def test_k80_lifetime_dbe_on_the_right_gpus_with_indices_in_file_order_not_minor_numbers() -> None:
    snap = load("pai_4xk80_aggregate-dbe-retired-pages.xml")
    assert snap.cuda_driver == ""  # line 6: cuda_version "Not Found"
    assert snap.problem == ""
    # <gpu id> lines 8, 269, 530, 779 are in PCI order; <minor_number> lines 22, 283, 544, 793 say 1, 2, 3, 0.
    assert [g.pci_bus_id for g in snap.gpus] == [
        "00001580:00:00.0",
        "00002DF7:00:00.0",
        "00004968:00:00.0",
        "0000F8D6:00:00.0",
    ]
    assert [g.uuid for g in snap.gpus] == [
        "GPU-c3b26f7a-8dcb-619c-fa1b-8029265a4db0",  # minor 1
        "GPU-b01b80eb-0f18-1df0-cf88-0725bd90f1e1",  # minor 2
        "GPU-30bc2701-3bc2-5f35-0ebd-9867a077e138",  # minor 3
        "GPU-3341aba2-f01d-2c1f-7dd4-e389779faec2",  # minor 0
    ]
    # Lifetime DBE 7 (line 155) and 4 (line 416) on minors 1 and 2 = indices 0 and 1; SBE 7 (145), 34 (406).
    assert [g.ecc.aggregate_uncorrected for g in snap.gpus] == [7, 4, 0, 0]
    assert [g.ecc.aggregate_corrected for g in snap.gpus] == [7, 34, 0, 0]
    # No volatile errors on any (lines 123/133, 384/394, 645/655, 894/904).
    assert all(g.ecc.volatile_corrected == 0 and g.ecc.volatile_uncorrected == 0 for g in snap.gpus)
    # Retired pages 1 + 1 on indices 0 and 1 (lines 161/169, 422/430); <pending_blacklist> No everywhere.
    assert [g.retired for g in snap.gpus] == [
        RetiredPages(single_bit=1, double_bit=1, pending=False),
        RetiredPages(single_bit=1, double_bit=1, pending=False),
        RetiredPages(single_bit=0, double_bit=0, pending=False),
        RetiredPages(single_bit=0, double_bit=0, pending=False),
    ]
    # Idle GPUs 2 and 3 down-trained to gen1 of gen3 (lines 575, 824).
    assert [(g.pcie.gen, g.pcie.gen_max) for g in snap.gpus] == [(3, 3), (3, 3), (1, 3), (1, 3)]
    # applications_clocks_setting Active on the busy two, gpu_idle on the idle two; hw_thermal_slowdown and
    # hw_power_brake_slowdown are N/A on a K80 and count as not set.
    assert [g.clock_event_names for g in snap.gpus] == [
        ("applications_clocks_setting",),
        ("applications_clocks_setting",),
        ("gpu_idle",),
        ("gpu_idle",),
    ]
    assert all(g.persistence is False and g.memory_temperature_c is None for g in snap.gpus)
    assert [g.temperature_c for g in snap.gpus] == [64.0, 69.0, 28.0, 26.0]


def test_a100_v12_mig_takes_gpu_level_values_and_event_reason_tags() -> None:
    snap = load("telegraf_a100-sxm4-v12.xml")
    assert snap.problem == "nvidia-smi lists 1 of the 4 attached GPUs"  # line 7
    (gpu,) = snap.gpus
    assert gpu.index == 0  # its <minor_number> is 1 (line 154)
    assert gpu.uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert gpu.pci_bus_id == "00000000:01:00.0"
    assert gpu.ecc_enabled is True  # line 264
    # GPU-level <ecc_errors> (lines 267-280), SRAM and DRAM all 0; the per-MIG-device counts are not summed in.
    zeros = {f: 0 for f in Ecc.__dataclass_fields__}
    assert gpu.ecc == Ecc(**zeros)
    assert gpu.remap == RowRemap()  # line 293: <remapped_rows>N/A</remapped_rows>
    assert gpu.retired == RetiredPages()  # lines 283-291: all N/A
    assert gpu.clock_events == 0  # line 217: <clocks_event_reasons>, all Not Active
    assert (gpu.power_w, gpu.power_limit_w) == (67.03, 500.0)  # lines 310-311: gpu_power_readings, current_power_limit
    assert gpu.pcie == PcieLink(gen=4, gen_max=4, width=16, width_max=16)  # lines 193-201
    assert (gpu.temperature_c, gpu.memory_temperature_c) == (27.0, 44.0)  # lines 295, 301


def test_a100_mig_netdata_volatile_ecc_na_stays_none() -> None:
    (gpu,) = load("netdata_a100-sxm4-40gb-mig.xml").gpus
    # lines 188-193: volatile sram/dram all N/A in MIG mode; lines 194-199: aggregate all 0.
    assert gpu.ecc == Ecc(
        aggregate_corrected=0,
        aggregate_uncorrected=0,
        aggregate_sram_corrected=0,
        aggregate_sram_uncorrected=0,
        aggregate_dram_corrected=0,
        aggregate_dram_uncorrected=0,
    )
    assert gpu.ecc.volatile_uncorrected is None and gpu.ecc.volatile_corrected is None
    assert gpu.remap == RowRemap()  # line 213
    assert gpu.clock_events == 0  # line 143: old clocks_throttle_reasons, all Not Active
    assert (gpu.power_w, gpu.power_limit_w) == (66.92, 400.0)  # lines 230, 233
    assert (gpu.sm_clock_mhz, gpu.memory_clock_mhz) == (1410.0, 1215.0)


def test_a10g_link_downtrained_and_full_remapped_rows() -> None:
    (gpu,) = load("telegraf_a10g.xml").gpus
    assert gpu.pci_bus_id == "00000000:00:1E.0"
    assert gpu.pcie == PcieLink(gen=1, gen_max=4, width=8, width_max=16)  # lines 63-68
    assert gpu.remap == RowRemap(corrected=0, uncorrected=0, pending=False, failure=False)  # lines 152-155
    assert gpu.clock_event_names == ("gpu_idle",)  # line 83, old clocks_throttle_reason_* tags
    assert gpu.ecc.volatile_uncorrected == 0 and gpu.ecc.aggregate_dram_uncorrected == 0
    assert gpu.retired == RetiredPages()  # Ampere: retired pages N/A


def test_t4_retired_pages_and_no_row_remapping() -> None:
    (gpu,) = load("telegraf_tesla-t4.xml").gpus
    assert gpu.retired == RetiredPages(single_bit=0, double_bit=0, pending=False)  # lines 141, 146, 151
    assert gpu.remap == RowRemap()  # line 153: N/A
    assert gpu.pcie == PcieLink(gen=3, gen_max=3, width=8, width_max=16)  # lines 63-68
    assert gpu.clock_events == 0  # lines 82-92: all Not Active
    assert gpu.ecc.volatile_sram_corrected == 0 and gpu.ecc.aggregate_uncorrected == 0
    assert (gpu.power_w, gpu.power_limit_w) == (26.78, 70.0)  # lines 170, 173


def test_rtx_4000_ada_v13_layout() -> None:
    snap = load("telegraf_rtx-4000-sff-ada-v13.xml")
    assert snap.cuda_driver == "13.2"
    (gpu,) = snap.gpus
    assert gpu.clock_event_names == ("gpu_idle",)  # line 110: clocks_event_reason_gpu_idle Active
    assert gpu.ecc_enabled is False  # line 168
    # lines 171-197: sram_uncorrectable_parity/_secded and the rest all N/A: nothing read as zero.
    assert gpu.ecc == Ecc()
    assert gpu.remap == RowRemap(corrected=0, uncorrected=0, pending=False, failure=False)  # lines 211-216
    assert gpu.retired == RetiredPages()  # lines 200-208: N/A
    # lines 241-243: no power_draw in v13, instant_power_draw 8.44 W (average 8.81 W), current_power_limit 70 W
    assert (gpu.power_w, gpu.power_limit_w) == (8.44, 70.0)
    assert gpu.pcie == PcieLink(gen=1, gen_max=4, width=16, width_max=16)  # lines 85-93
    assert gpu.persistence is True  # line 15
    assert gpu.serial == "REDACTED"  # line 30, as published


def test_p100_old_ecc_layout_and_retired_pages() -> None:
    (gpu,) = load("netdata_tesla-p100-pcie.xml").gpus
    assert gpu.clock_event_names == ("gpu_idle",)  # line 83
    assert gpu.retired == RetiredPages(single_bit=0, double_bit=0, pending=False)  # lines 173, 178, 183
    assert gpu.remap == RowRemap()  # line 185
    # Aggregate single-bit device memory 3 (line 150): corrected; no SRAM figure in the old layout.
    assert gpu.ecc.aggregate_corrected == 3 and gpu.ecc.aggregate_dram_corrected == 3
    assert gpu.ecc.aggregate_uncorrected == 0 and gpu.ecc.volatile_corrected == 0
    assert gpu.ecc.aggregate_sram_corrected is None


# --- nvidia-smi -q -------------------------------------------------------------------------------------


def test_h100_hw_slowdown_and_power_brake_on_all_eight() -> None:
    snap = load("gpud_8xH100_535.161.08_hw-slowdown-power-brake.txt")
    assert snap.cuda_driver == "12.2"
    # "HW Slowdown : Active" and, indented under it, "HW Power Brake Slowdown : Active" (lines 87/89, 292/294, ...)
    assert [g.clock_event_names for g in snap.gpus] == [("hw_slowdown", "hw_power_brake_slowdown")] * 8
    first = snap.gpus[0]  # lines 9-212
    assert first.uuid == "GPU-ee7954ec-da95-fd7a-ddfd-c6b32cc2f8aa"  # line 26
    assert first.serial == "1650124031592"  # line 25
    assert first.pci_bus_id == "00000000:19:00.0"  # lines 9, 60
    assert first.persistence is True and first.ecc_enabled is True  # lines 15, 124
    assert first.ecc == Ecc(**{f: 0 for f in Ecc.__dataclass_fields__})  # lines 126-145: Hopper SRAM parity/SEC-DED
    assert first.remap == RowRemap(corrected=0, uncorrected=0, pending=False, failure=False)  # lines 150-154
    assert first.retired == RetiredPages()  # lines 146-149: N/A
    assert first.pcie == PcieLink(gen=5, gen_max=5, width=16, width_max=16)  # lines 63-71
    assert (first.temperature_c, first.memory_temperature_c) == (29.0, 39.0)  # lines 162, 168
    assert (first.power_w, first.power_limit_w) == (67.74, 700.0)  # line 171: GPU Power Readings, not Module (178)
    assert (first.sm_clock_mhz, first.memory_clock_mhz) == (86.0, 2619.0)  # Clocks, not Max/Applications Clocks
    assert [g.pci_bus_id[9:11] for g in snap.gpus] == ["19", "3B", "4C", "5D", "9B", "BB", "CB", "DB"]


def test_h100_sw_power_cap_thermal_and_power_brake_on_one_gpu_only() -> None:
    snap = load("gpud_8xH100_535.183.01_sw-thermal-slowdown.txt")
    names = [g.clock_event_names for g in snap.gpus]
    # GPU 00000000:75:00.0 (third section, line 418): SW Power Cap line 495, HW Power Brake 498, SW Thermal 500.
    assert names[2] == ("sw_power_cap", "sw_thermal_slowdown", "hw_power_brake_slowdown")
    assert decode_clock_events(snap.gpus[2].clock_events) == names[2]
    assert snap.gpus[2].pci_bus_id == "00000000:75:00.0"
    assert names[:2] + names[3:] == [("gpu_idle",)] * 7  # "Idle : Active" on the others
    assert all(g.ecc.volatile_uncorrected == 0 and g.ecc.aggregate_uncorrected == 0 for g in snap.gpus)
    assert snap.gpus[2].power_w == 118.01


def test_a10_remapped_rows_pending() -> None:
    (gpu,) = load("gpud_A10_535.129.03_remapped-rows-pending.txt").gpus
    # lines 140-143: Correctable 0, Uncorrectable 4, Pending Yes, Remapping Failure Occurred No
    assert gpu.remap == RowRemap(corrected=0, uncorrected=4, pending=True, failure=False)
    assert gpu.uuid == "GPU-73d12ef7-f589-f867-4259-c7090ab44736"
    assert gpu.ecc.volatile_uncorrected == 0  # lines 126-134: Ampere SRAM/DRAM layout
    assert gpu.ecc.volatile_sram_uncorrected == 0 and gpu.ecc.aggregate_dram_corrected == 0
    assert gpu.temperature_c == 33.0 and gpu.memory_temperature_c is None  # lines 151, 157
    assert (gpu.power_w, gpu.power_limit_w) == (43.89, 150.0)  # lines 160-161
    assert gpu.clock_event_names == ("gpu_idle",)


def test_rtx_4090_no_ecc_sw_power_cap_on_two_and_minor_numbers_out_of_order() -> None:
    snap = load("gpud_8xRTX4090_535.154.05_sw-power-cap.txt")
    # ECC Mode Current Disabled (line 123 and each section), every counter N/A: None, never 0.
    assert all(g.ecc_enabled is False and g.ecc == Ecc() for g in snap.gpus)
    assert all(g.serial == "" for g in snap.gpus)  # "Serial Number : N/A"
    # SW Power Cap Active at lines 281 (GPU 00000000:23:00.0) and 872 (GPU 00000000:81:00.0).
    capped = [g.index for g in snap.gpus if "sw_power_cap" in g.clock_event_names]
    assert capped == [1, 4]
    assert [snap.gpus[i].pci_bus_id for i in capped] == ["00000000:23:00.0", "00000000:81:00.0"]
    # Minor numbers 3, 2, 1, 0, 7, 6, 5, 4 in bus order: the index is the position.
    assert snap.gpus[0].uuid == "GPU-370465f5-30e0-6877-b85c-16729f41b90f"  # line 26, Minor Number 3
    assert snap.gpus[3].uuid == "GPU-4387c558-c1f1-5370-3c65-e0135e9803f2"  # line 617, Minor Number 0
    assert snap.gpus[0].pcie == PcieLink(gen=1, gen_max=4, width=16, width_max=16)  # idle at gen1


def test_azure_page_retirement_only_output() -> None:
    snap = load("azurehpc_8gpu_535.86.10_retired-pages_orig.txt")
    assert [g.pci_bus_id for g in snap.gpus] == [f"0000000{n}:00:00.0" for n in range(1, 9)]
    assert all(g.retired == RetiredPages(single_bit=0, double_bit=0, pending=False) for g in snap.gpus)
    # Nothing else is in a -d PAGE_RETIREMENT dump: all None, nothing read as healthy.
    blank = GpuHealth(index=0, uuid="", pci_bus_id="00000001:00:00.0", retired=snap.gpus[0].retired)
    assert snap.gpus[0] == blank
    assert snap.problem == "no UUID for 8 of 8 GPUs (partial nvidia-smi output)"


def test_azure_edited_injected_retired_pages_and_pending_blacklist() -> None:
    snap = load("azurehpc_8gpu_535.86.10_retired-pages_bad-EDITED.txt")
    # lines 11-13, 17-19, 23-25, 29-31, 35-37, 41-43, 47-49, 53-55 (EDITED upstream)
    assert [g.retired for g in snap.gpus] == [
        RetiredPages(single_bit=60, double_bit=5, pending=False),
        RetiredPages(single_bit=2, double_bit=61, pending=True),
        RetiredPages(single_bit=0, double_bit=0, pending=False),
        RetiredPages(single_bit=6, double_bit=0, pending=True),
        RetiredPages(single_bit=0, double_bit=0, pending=False),
        RetiredPages(single_bit=20, double_bit=45, pending=True),
        RetiredPages(single_bit=0, double_bit=0, pending=False),
        RetiredPages(single_bit=8, double_bit=56, pending=True),
    ]


# --- layouts the captures do not cover (hand-written, not captures) -----------------------------------


def test_text_old_ecc_layout_throttle_reasons_and_pending_retirement() -> None:
    """The pre-Ampere text layout, written here by hand in nvidia-smi's shape: Single/Double Bit
    sections, the old "Clocks Throttle Reasons" heading, "Pending : Yes", "Remapped Rows : N/A"."""
    text = """
Attached GPUs                       : 1
GPU 0000:3B:00.0
    Product Name                    : Tesla V100-SXM2-16GB
    GPU UUID                        : GPU-00000000-0000-0000-0000-000000000001
    Clocks Throttle Reasons
        Idle                        : Not Active
        HW Slowdown                 : Active
        HW Thermal Slowdown         : Active
        Display Clock Setting       : Active
    ECC Errors
        Volatile
            Single Bit
                Device Memory       : 2
                Register File       : 1
                Total               : 3
            Double Bit
                Device Memory       : 1
                Total               : 1
        Aggregate
            Single Bit
                Total               : N/A
            Double Bit
                Total               : Unknown Error
    Retired Pages
        Single Bit ECC              : 0
        Double Bit ECC              : 1
        Pending                     : Yes
    Remapped Rows                   : N/A
    Power Readings
        Power Draw                  : [N/A]
        Power Limit                 : 300.00 W
        Enforced Power Limit        : 250.00 W
"""
    (gpu,) = smi.parse_text(text, taken_at=WHEN).gpus
    assert gpu.pci_bus_id == "00000000:3B:00.0"
    assert gpu.clock_event_names == ("hw_slowdown", "hw_thermal_slowdown", "display_clock_setting")
    assert gpu.ecc == Ecc(
        volatile_corrected=3, volatile_uncorrected=1, volatile_dram_corrected=2, volatile_dram_uncorrected=1
    )
    assert gpu.retired == RetiredPages(single_bit=0, double_bit=1, pending=True)
    assert gpu.remap == RowRemap()
    assert (gpu.power_w, gpu.power_limit_w) == (None, 250.0)


def test_xml_unreadable_values_are_none_and_partial_sram_makes_no_total() -> None:
    text = """<?xml version="1.0" ?>
<nvidia_smi_log><driver_version>550.54.15</driver_version><attached_gpus>1</attached_gpus>
<gpu id="0000:19:00.0"><product_name>NVIDIA H100 80GB HBM3</product_name><uuid>GPU-x</uuid>
<persistence_mode>[Not Supported]</persistence_mode>
<ecc_errors><volatile><sram_correctable>0</sram_correctable><sram_uncorrectable_parity>2</sram_uncorrectable_parity>
<sram_uncorrectable_secded>1</sram_uncorrectable_secded><dram_correctable>5</dram_correctable>
<dram_uncorrectable>Unknown Error</dram_uncorrectable></volatile></ecc_errors>
<retired_pages><pending_blacklist>No</pending_blacklist><pending_retirement>Yes</pending_retirement></retired_pages>
<clocks_event_reasons><clocks_event_reason_sw_power_cap>Active</clocks_event_reason_sw_power_cap>
<clocks_event_reason_hw_slowdown>N/A</clocks_event_reason_hw_slowdown></clocks_event_reasons>
<temperature><gpu_temp>N/A</gpu_temp></temperature></gpu></nvidia_smi_log>"""
    (gpu,) = smi.parse_xml(text, taken_at=WHEN).gpus
    assert gpu.pci_bus_id == "00000000:19:00.0"  # from <gpu id>, widened to NVML's form
    assert gpu.persistence is None and gpu.temperature_c is None
    assert gpu.ecc == Ecc(
        volatile_corrected=5,
        volatile_sram_corrected=0,
        volatile_sram_uncorrected=3,
        volatile_dram_corrected=5,
        volatile_uncorrected=None,  # DRAM unreadable: no total that would read as 3
    )
    assert gpu.retired.pending is True
    assert gpu.clock_event_names == ("sw_power_cap",)


@pytest.mark.parametrize("text", ["", "not xml", "<other/>", "<nvidia_smi_log><gpu>"])
def test_parse_xml_refuses_what_is_not_nvidia_smi_xml(text: str) -> None:
    with pytest.raises(ValueError):
        smi.parse_xml(text)


def test_taken_at_defaults_to_now_not_the_files_zoneless_timestamp() -> None:
    before = dt.datetime.now(dt.UTC)
    snap = smi.parse_xml((DATA / "telegraf_a10g.xml").read_text())
    assert before <= snap.taken_at <= dt.datetime.now(dt.UTC)


# --- read() --------------------------------------------------------------------------------------------


class FakeRunner:
    """Stands in for subprocess.run: records the call, then returns or raises as told."""

    def __init__(self, *, stdout: str = "", returncode: int = 0, stderr: str = "", error: Exception | None = None):
        self.stdout, self.returncode, self.stderr, self.error = stdout, returncode, stderr, error
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return subprocess.CompletedProcess(args, self.returncode, self.stdout, self.stderr)


def test_read_runs_nvidia_smi_q_x_with_the_timeout_and_parses_it() -> None:
    runner = FakeRunner(stdout=(DATA / "pai_4xk80_aggregate-dbe-retired-pages.xml").read_text())
    snap = smi.read(timeout_s=12.5, runner=runner)
    ((args, kwargs),) = runner.calls
    assert args == ["nvidia-smi", "-q", "-x"]
    assert kwargs["timeout"] == 12.5 and kwargs["capture_output"] is True
    assert snap.source == "nvidia-smi" and snap.problem == ""
    assert snap.gpu_count == 4 and [g.ecc.aggregate_uncorrected for g in snap.gpus] == [7, 4, 0, 0]
    assert snap.taken_at.tzinfo is not None


@pytest.mark.parametrize(
    ("runner", "problem"),
    [
        (FakeRunner(error=FileNotFoundError(2, "No such file or directory")), "nvidia-smi not found"),
        (
            FakeRunner(error=subprocess.TimeoutExpired(["nvidia-smi"], 30)),
            "nvidia-smi -q -x did not finish within 30 s",
        ),
        (FakeRunner(error=PermissionError(13, "Permission denied")), "nvidia-smi could not run: "),
        (
            FakeRunner(
                returncode=9,
                stdout="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                "driver. Make sure that the latest NVIDIA driver is installed and running.\n\n",
            ),
            "nvidia-smi -q -x exited with 9: NVIDIA-SMI has failed because it couldn't communicate",
        ),
        (
            FakeRunner(returncode=255, stderr="Unable to determine the device handle for GPU0000:19:00.0\nmore"),
            "nvidia-smi -q -x exited with 255: Unable to determine the device handle for GPU0000:19:00.0",
        ),
        (FakeRunner(stdout="<html>"), "nvidia-smi -q -x output unreadable: ValueError: not XML"),
    ],
)
def test_read_never_raises_and_says_why_in_one_line(runner: FakeRunner, problem: str) -> None:
    snap = smi.read(runner=runner)
    assert snap.source == "nvidia-smi"
    assert snap.gpus == () and snap.gpu_count == 0
    assert snap.problem.startswith(problem)
    assert "\n" not in snap.problem


def test_mig_mode_is_read_from_both_formats_current_not_pending() -> None:
    assert [g.mig for g in load("netdata_a100-sxm4-40gb-mig.xml").gpus] == [True]  # lines 15-18: current Enabled
    assert [g.mig for g in load("telegraf_a100-sxm4-v12.xml").gpus] == [True]
    text = load("gpud_8xH100_535.161.08_hw-slowdown-power-brake.txt")
    assert [g.mig for g in text.gpus] == [False] * 8  # MIG Mode / Current : Disabled (line 18)
    assert [g.mig for g in load("telegraf_tesla-t4.xml").gpus] == [None]  # a T4 has no MIG: N/A
