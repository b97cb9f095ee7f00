import re
from pathlib import Path

import pytest

from gputests.work.memory import metric_name
from gputests.work.memory_patterns import PATTERNS
from harness import baselines, results
from harness.errors import ConfigError
from harness.records import Direction
from tests.helpers import REPO

GOOD = """
schema_version = 1
model = "Test GPU"
device = "cuda"
names = ["NVIDIA Test*"]

[metrics."matmul.bf16.tflops"]
unit = "TFLOP/s"
direction = "higher"
floor = 100.0
node_tolerance = 0.1
required = true
[metrics."matmul.bf16.tflops".provenance]
kind = "measured"
source = "a run"
date = "2026-11-27"
card = "Test GPU"
driver = "550.54.15"
"""


def write(tmp_path: Path, text: str, name: str = "test.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_packaged_baseline_loads_and_says_where_its_numbers_came_from():
    loaded = baselines.load_dir(baselines.default_dir())
    models = {b.model: b for b in loaded.baselines}
    assert set(models) == {"H100 SXM 80GB", "H200 141GB", "A100 SXM 80GB", "CPU self-test"}
    for baseline in loaded.baselines:
        assert len(baseline.sha256) == 64
        for spec in baseline.metrics.values():
            assert spec.provenance.source


def test_packaged_baselines_cover_the_names_drivers_report():
    loaded = baselines.load_dir(baselines.default_dir())
    assert loaded.for_device("cuda", "NVIDIA H100 80GB HBM3").model == "H100 SXM 80GB"
    assert loaded.for_device("cuda", "NVIDIA H200").model == "H200 141GB"
    assert loaded.for_device("cuda", "NVIDIA A100-SXM4-80GB").model == "A100 SXM 80GB"
    assert loaded.for_device("cpu", "AMD EPYC").model == "CPU self-test"
    assert loaded.for_device("cuda", "NVIDIA H200 NVL") is None  # another model, another power limit
    assert loaded.for_device("cuda", "NVIDIA H100 PCIe") is None


@pytest.mark.parametrize("name", ["h100-sxm-80gb.toml", "h200-141gb.toml", "a100-sxm-80gb.toml"])
def test_boards_built_with_nvlink_require_every_dtype_and_their_links(name):
    model = baselines.load_file(baselines.default_dir() / name)
    dtypes = ("bf16", "fp16", "tf32", "fp32") + (() if name.startswith("a100") else ("fp8",))  # no fp8 on Ampere
    matmul = {f"matmul.{d}.tflops" for d in dtypes}
    memory = {"memory.coverage", "memory.verify.gbps", "memory.bad_words"} | {metric_name(p) for p in PATTERNS}
    pcie = {f"pcie.{d}.gbps" for d in ("h2d", "d2h", "bidir")}
    nvlink = {"nvlink.p2p.gbps", "nvlink.p2p.bidir.gbps"}
    large = {"nccl.allreduce.4gib.busbw", "nccl.allreduce.8gib.busbw"}
    small = {f"nccl.allreduce.{s}.busbw" for s in ("8mib", "64mib", "512mib")}
    assert set(model.metrics) == matmul | memory | pcie | nvlink | large | small
    assert {n for n, spec in model.metrics.items() if spec.required} == matmul | memory | pcie | nvlink | large


def test_the_all_reduce_metrics_are_the_profiles_sizes():
    from gputests.work import nccl_run
    from harness.profiles import GPU_NCCL, quick

    h200 = baselines.load_file(baselines.default_dir() / "h200-141gb.toml")
    cpu = baselines.load_file(baselines.default_dir() / "cpu-selftest.toml")
    assert {n for n in h200.metrics if n.startswith("nccl.")} == {nccl_run.metric_name(m) for m in GPU_NCCL.sizes_mib}
    cpu_sizes = quick().for_cpu().nccl.sizes_mib
    assert {n for n in cpu.metrics if n.startswith("nccl.")} == {nccl_run.metric_name(m) for m in cpu_sizes}


def test_floors_leave_healthy_cards_at_least_10_percent_of_margin():
    """Against every passing run on a real GPU committed under bench/results: a floor within 10% of
    what a healthy card sustained would cordon healthy nodes on a warm day."""
    packaged = baselines.load_dir(baselines.default_dir())
    checked = 0
    for path in sorted((REPO / "bench" / "results").glob("*/results/*.json")):
        doc = results.load(path)
        if doc.verdict.status != "pass" or doc.device_kind != "cuda":
            continue
        for m in doc.measurements:
            device = next(d for d in doc.devices if d.uuid == m.gpu)
            spec = packaged.for_device(device.kind, device.name).metrics[m.metric]
            assert spec.limit <= 0.9 * m.value, (path.parent.parent.name, m.metric, spec.limit, m.value)
            assert m.low is not None and m.low > spec.limit, (m.metric, m.low)
            checked += 1
    assert checked >= 5  # the H200 runs of 2026-11-28 at least


def test_a_good_file_parses_into_typed_values(tmp_path):
    b = baselines.load_file(write(tmp_path, GOOD))
    spec = b.metrics["matmul.bf16.tflops"]
    assert spec.direction is Direction.HIGHER and spec.limit == 100.0 and spec.required
    assert spec.node_bound(200.0) == pytest.approx(180.0)
    assert spec.provenance.card == "Test GPU"
    assert b.covers("cuda", "NVIDIA Test 9000") and not b.covers("cpu", "NVIDIA Test 9000")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("floor = 100.0", 'floor = "fast"'), "metrics.'matmul.bf16.tflops'.floor"),
        (("floor = 100.0", "flor = 100.0"), "metrics.'matmul.bf16.tflops'.flor"),
        (("floor = 100.0", "ceiling = 100.0"), "metrics.'matmul.bf16.tflops'.ceiling"),
        (('direction = "higher"', 'direction = "up"'), "metrics.'matmul.bf16.tflops'.direction"),
        (("node_tolerance = 0.1", "node_tolerance = 1.5"), "metrics.'matmul.bf16.tflops'.node_tolerance"),
        (("required = true", 'required = "yes"'), "metrics.'matmul.bf16.tflops'.required"),
        (('date = "2026-11-27"', 'date = "27/11/2026"'), "metrics.'matmul.bf16.tflops'.provenance.date"),
        (('driver = "550.54.15"', ""), "metrics.'matmul.bf16.tflops'.provenance.driver"),
        (('kind = "measured"', 'kind = "guess"'), "metrics.'matmul.bf16.tflops'.provenance.kind"),
        (("schema_version = 1", "schema_version = 2"), "schema_version"),
        (('device = "cuda"', 'device = "tpu"'), "device"),
        (('names = ["NVIDIA Test*"]', "names = []"), "names"),
        (('model = "Test GPU"', 'model = ""'), "model"),
        (('[metrics."matmul.bf16.tflops"]', '[metrics."Matmul BF16"]'), "metrics.'Matmul BF16'"),
    ],
)
def test_a_malformed_file_names_the_file_and_the_field(tmp_path, change, field):
    old, new = change
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        baselines.load_file(path)
    assert caught.value.file == str(path)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{path}: {field}: ")


def test_a_missing_provenance_is_an_error(tmp_path):
    text = re.sub(r'\[metrics\."matmul\.bf16\.tflops"\.provenance\][^\[]*$', "", GOOD)
    with pytest.raises(ConfigError, match="say where this threshold came from"):
        baselines.load_file(write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "schema_version = [")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        baselines.load_file(path)
    assert caught.value.file == str(path)


def test_a_directory_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        baselines.load_dir(tmp_path / "nowhere")


def test_an_empty_directory_covers_nothing(tmp_path):
    assert baselines.load_dir(tmp_path).for_device("cuda", "NVIDIA H100 80GB HBM3") is None


def test_an_explicit_file_for_another_model_is_an_error_not_a_silent_skip(tmp_path):
    chosen = baselines.load_one(write(tmp_path, GOOD))
    assert chosen.for_device("cuda", "NVIDIA Test 1").model == "Test GPU"
    with pytest.raises(ConfigError, match="this node's device is 'NVIDIA H100 80GB HBM3'") as caught:
        chosen.for_device("cuda", "NVIDIA H100 80GB HBM3")
    assert caught.value.field == "names"


def test_two_baselines_for_one_model_is_an_error(tmp_path):
    write(tmp_path, GOOD, "a.toml")
    write(tmp_path, GOOD, "b.toml")
    with pytest.raises(ConfigError, match="more than one baseline"):
        baselines.load_dir(tmp_path).for_device("cuda", "NVIDIA Test 1")


@pytest.mark.parametrize(
    ("name", "peak"), [("h100-sxm-80gb.toml", 3350.0), ("h200-141gb.toml", 4800.0), ("a100-sxm-80gb.toml", 2039.0)]
)
def test_memory_verify_floors_sit_near_0_8_of_what_the_models_hbm_reads(name, peak):
    """Every verify figure's floor is about 0.8 of what the model's HBM reads (about 0.88 of its
    datasheet peak): memory at 75% of its speed fails, not only memory at a third of it."""
    model = baselines.load_file(baselines.default_dir() / name)
    verify = {n: spec for n, spec in model.metrics.items() if n.startswith("memory.") and n.endswith(".verify.gbps")}
    assert set(verify) == {"memory.verify.gbps"} | {metric_name(p) for p in PATTERNS}
    for spec in verify.values():
        assert 0.68 * peak <= spec.limit <= 0.72 * peak, (spec.name, spec.limit)
        assert spec.required and spec.provenance.kind == "estimate"
