import sys
import types

import pytest

from harness import devices, nvml
from tests.helpers import ON_GPU_BOX

no_driver_here = pytest.mark.skipif(ON_GPU_BOX, reason="an NVIDIA driver is installed here")
gpu_box_only = pytest.mark.skipif(not ON_GPU_BOX, reason="needs an NVIDIA driver")


def test_the_cpu_stands_in_for_two_devices_of_its_own_model_by_default():
    found = devices.discover("cpu", startup_timeout_s=30)
    first, second = found.devices
    assert (first.label, second.label) == ("CPU 0", "CPU 1") and first.kind == second.kind == "cpu"
    assert first.uuid != second.uuid and first.model_key == second.model_key
    assert first.name == found.host["cpu_model"] and first.name
    assert first.sm_count >= 1 and first.memory_bytes > 0
    assert found.host["torch"] and found.host["python"] and found.problem == ""
    assert [d.index for d in devices.discover("cpu", startup_timeout_s=30, cpu_devices=3).devices] == [0, 1, 2]


@no_driver_here
def test_without_cuda_the_inventory_is_empty_and_says_why():
    found = devices.discover("cuda", startup_timeout_s=60)
    assert found.devices == ()
    assert found.problem.startswith("no CUDA device (")
    assert "--gpu-" not in found.problem  # the front end in use adds its own hint (gputests/session.py)
    assert found.host["nvml"].startswith("NVML could not start: NVMLError_LibraryNotFound")


@no_driver_here
def test_nvml_missing_driver_is_an_answer_not_an_exception():
    facts = nvml.read_facts()
    assert not facts.available and "LibraryNotFound" in facts.reason and facts.devices == ()


@gpu_box_only
def test_on_a_gpu_box_every_gpu_is_listed_with_its_identity_and_the_driver():
    found = devices.discover("cuda", startup_timeout_s=120)
    assert found.devices and found.problem == ""
    assert [d.index for d in found.devices] == list(range(len(found.devices)))
    for gpu in found.devices:
        assert gpu.kind == "cuda" and gpu.uuid.startswith("GPU-") and gpu.name and gpu.memory_bytes > 0
        assert gpu.sm_count > 0 and gpu.compute_capability.count(".") == 1
    assert found.host["nvml"] == "available" and found.host["driver"] and found.host["torch"]
    assert len(nvml.read_facts().devices) == len(found.devices)


class FakeNvml(types.ModuleType):
    """Just enough of pynvml for read_facts(); errors raised as the real module raises them."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return 12040

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}"

    def nvmlDeviceGetSerial(self, h):
        if h == 1:
            raise self.NVMLError("Not Supported")
        return "1650123456789"

    def nvmlDeviceGetPciInfo(self, h):
        return types.SimpleNamespace(busId=f"00000000:{0x19 + h:02X}:00.0")

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(total=85899345920)


def test_nvml_facts_are_read_decoded_and_the_library_shut_down(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    facts = nvml.read_facts()
    assert facts.available and facts.driver_version == "550.54.15" and facts.cuda_driver_version == "12.4"
    assert [(d.uuid, d.serial, d.pci_bus_id) for d in facts.devices] == [
        ("GPU-0", "1650123456789", "00000000:19:00.0"),
        ("GPU-1", "", "00000000:1A:00.0"),  # serial unsupported: empty, not an error
    ]
    assert fake.shut


def test_a_failing_nvml_query_is_reported_with_its_reason(monkeypatch):
    fake = FakeNvml()

    def broken():
        raise fake.NVMLError("GPU is lost")

    fake.nvmlDeviceGetCount = broken
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    facts = nvml.read_facts()
    assert not facts.available and facts.reason == "NVML query failed: NVMLError: GPU is lost"
    assert fake.shut


@pytest.mark.parametrize("node", ["", "k8s-node-7"])
def test_the_node_name_comes_from_the_downward_api_when_set(monkeypatch, node):
    monkeypatch.setenv("NODE_NAME", node)
    assert devices.node_name() == (node or devices.socket.gethostname())
