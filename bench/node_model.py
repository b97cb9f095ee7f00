"""A GPU node of realistic size, as `kubectl get node -o json` shows an 8-GPU H100 node (about 19 KB):
some 80 labels from node-feature-discovery and GPU feature discovery with their managed fields, the
annotations those and the CSI drivers add, 60 container images, conditions, node info. For the
remediator's scale benchmark (bench/remediator_scale.py), where the size of the objects it never reads
whole is the point.
"""

from __future__ import annotations

import json
from typing import Any


def node_parts(index: int) -> dict[str, Any]:
    """One GPU node's labels, annotations, managed fields and status, as an 8-GPU H100 node carries them."""
    name = f"gpu-{index:05d}"
    zone = f"us-east-1{'abcdef'[index % 6]}"
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": "p5.48xlarge",
        "beta.kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "p5.48xlarge",
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": zone,
        "failure-domain.beta.kubernetes.io/region": "us-east-1",
        "failure-domain.beta.kubernetes.io/zone": zone,
        "topology.k8s.aws/network-node-layer-1": f"nn-{index % 97:04x}a1b2c3d4",
        "topology.k8s.aws/network-node-layer-2": f"nn-{index % 13:04x}e5f6a7b8",
        "topology.k8s.aws/network-node-layer-3": f"nn-{index % 3:04x}c9d0e1f2",
        "node-pool": "h100-training",
        "team": "research",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.memory": "81559",
        "nvidia.com/gpu.family": "hopper",
        "nvidia.com/gpu.machine": "p5.48xlarge",
        "nvidia.com/gpu.compute.major": "9",
        "nvidia.com/gpu.compute.minor": "0",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.deploy.container-toolkit": "true",
        "nvidia.com/gpu.deploy.dcgm": "true",
        "nvidia.com/gpu.deploy.dcgm-exporter": "true",
        "nvidia.com/gpu.deploy.device-plugin": "true",
        "nvidia.com/gpu.deploy.driver": "true",
        "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
        "nvidia.com/gpu.deploy.node-status-exporter": "true",
        "nvidia.com/gpu.deploy.operator-validator": "true",
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/cuda.driver.minor": "90",
        "nvidia.com/cuda.driver.rev": "07",
        "nvidia.com/cuda.runtime.major": "12",
        "nvidia.com/cuda.runtime.minor": "4",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/mps.capable": "false",
        "nvidia.com/vgpu.present": "false",
        "nvidia.com/gfd.timestamp": "1732780800",
    }
    features = [
        "cpu-cpuid.ADX",
        "cpu-cpuid.AESNI",
        "cpu-cpuid.AMXBF16",
        "cpu-cpuid.AMXINT8",
        "cpu-cpuid.AMXTILE",
        "cpu-cpuid.AVX",
        "cpu-cpuid.AVX2",
        "cpu-cpuid.AVX512BF16",
        "cpu-cpuid.AVX512BITALG",
        "cpu-cpuid.AVX512BW",
        "cpu-cpuid.AVX512CD",
        "cpu-cpuid.AVX512DQ",
        "cpu-cpuid.AVX512F",
        "cpu-cpuid.AVX512FP16",
        "cpu-cpuid.AVX512IFMA",
        "cpu-cpuid.AVX512VBMI",
        "cpu-cpuid.AVX512VBMI2",
        "cpu-cpuid.AVX512VL",
        "cpu-cpuid.AVX512VNNI",
        "cpu-cpuid.AVX512VPOPCNTDQ",
        "cpu-cpuid.FMA3",
        "cpu-cpuid.GFNI",
        "cpu-cpuid.SHA",
        "cpu-cpuid.VAES",
        "cpu-cpuid.VPCLMULQDQ",
        "cpu-cpuid.WAITPKG",
        "cpu-hardware_multithreading",
        "cpu-model.family",
        "cpu-model.id",
        "cpu-model.vendor_id",
        "kernel-config.NO_HZ",
        "kernel-version.full",
        "kernel-version.major",
        "kernel-version.minor",
        "memory-numa",
        "pci-10de.present",
        "pci-1d0f.present",
        "rdma.available",
        "rdma.capable",
        "storage-nonrotationaldisk",
        "system-os_release.ID",
        "system-os_release.VERSION_ID",
    ]
    for feature in features:
        labels[f"feature.node.kubernetes.io/{feature}"] = "true"
    annotations = {
        "alpha.kubernetes.io/provided-node-ip": f"10.{index // 65536}.{index // 256 % 256}.{index % 256}",
        "csi.volume.kubernetes.io/nodeid": json.dumps(
            {"ebs.csi.aws.com": f"i-0{index:016x}", "fsx.csi.aws.com": f"i-0{index:016x}"}
        ),
        "nfd.node.kubernetes.io/feature-labels": ",".join(features),
        "nfd.node.kubernetes.io/extended-resources": "",
        "nfd.node.kubernetes.io/master.version": "v0.16.3",
        "nfd.node.kubernetes.io/worker.version": "v0.16.3",
        "nvidia.com/gpu-driver-upgrade-enabled": "true",
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }

    def fields(keys: list[str]) -> dict[str, Any]:
        return {"f:metadata": {"f:labels": {f"f:{k}": {} for k in keys}}}

    stamp = "2026-11-01T00:00:00Z"
    managed = [
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": stamp,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields(
                [k for k in labels if k.startswith(("beta.", "kubernetes.io", "node.", "topology.", "failure"))]
            ),
        },
        {
            "manager": "nfd-master",
            "operation": "Update",
            "apiVersion": "v1",
            "time": stamp,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields([k for k in labels if k.startswith("feature.node")]),
        },
        {
            "manager": "gpu-feature-discovery",
            "operation": "Update",
            "apiVersion": "v1",
            "time": stamp,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields([k for k in labels if k.startswith("nvidia.com/")]),
        },
    ]
    images = [
        {
            "names": [
                f"registry.example.com/ml/{repo}@sha256:{(index * 31 + n) % 10**12:064d}",
                f"registry.example.com/ml/{repo}:v{n}.{index % 7}",
            ],
            "sizeBytes": 1_000_000_000 + n * 7_654_321,
        }
        for n, repo in enumerate(f"image-{k:02d}" for k in range(60))
    ]
    conditions = [
        {"type": kind, "status": "False", "reason": f"Kubelet{reason}", "message": f"kubelet has {words}"}
        for kind, reason, words in (
            ("MemoryPressure", "HasSufficientMemory", "sufficient memory available"),
            ("DiskPressure", "HasNoDiskPressure", "no disk pressure"),
            ("PIDPressure", "HasSufficientPID", "sufficient PID available"),
        )
    ]
    status = {
        "images": images,
        "nodeInfo": {
            "architecture": "amd64",
            "bootID": f"{index:08x}-0000-4000-8000-000000000000",
            "containerRuntimeVersion": "containerd://1.7.22",
            "kernelVersion": "6.1.112-124.190.amzn2023.x86_64",
            "kubeProxyVersion": "v1.31.2-eks-7f9249a",
            "kubeletVersion": "v1.31.2-eks-7f9249a",
            "machineID": f"ec2{index:029x}",
            "operatingSystem": "linux",
            "osImage": "Amazon Linux 2023.6.20241111",
            "systemUUID": f"ec2{index:05x}-0000-0000-0000-000000000000",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "addresses": [
            {"type": "InternalIP", "address": annotations["alpha.kubernetes.io/provided-node-ip"]},
            {"type": "Hostname", "address": f"{name}.ec2.internal"},
            {"type": "InternalDNS", "address": f"{name}.ec2.internal"},
        ],
    }
    return {
        "name": name,
        "labels": labels,
        "annotations": annotations,
        "managed": managed,
        "status": status,
        "conditions": conditions,
    }
