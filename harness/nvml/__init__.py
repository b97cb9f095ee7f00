"""NVML: GPU identity and health, from the driver, from nvidia-smi, or from a simulation.

`binding` is the only module that imports pynvml; `facts` reads identities and the
driver version; `snapshot` holds the health snapshot's types.
"""

from harness.nvml.facts import NvmlDevice, NvmlFacts, read_facts

__all__ = ["NvmlDevice", "NvmlFacts", "read_facts"]
