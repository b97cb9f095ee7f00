import dataclasses
import re
from pathlib import Path

import pytest

from gputests.work.memory import metric_name
from gputests.work.memory_patterns import PATTERNS
from harness import baselines, groups, profiles, results
from harness.errors import ConfigError
from harness.records import Direction
from tests.helpers import REPO, gpus

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
    assert set(models) == {
        "H100 SXM 80GB",
        "H100 SXM 80GB, 1 GPU",
        "H200 141GB",
        "H200 141GB, 1 GPU",
        "A100 SXM 80GB",
        "CPU self-test",
    }
    for baseline in loaded.baselines:
        assert len(baseline.sha256) == 64
        for spec in baseline.metrics.values():
            assert spec.provenance.source


def test_packaged_baselines_cover_the_names_drivers_report():
    loaded = baselines.load_dir(baselines.default_dir())
    assert loaded.for_device("cuda", "NVIDIA H100 80GB HBM3", 8).model == "H100 SXM 80GB"
    assert loaded.for_device("cuda", "NVIDIA H200", 8).model == "H200 141GB"
    assert loaded.for_device("cuda", "NVIDIA A100-SXM4-80GB", 8).model == "A100 SXM 80GB"
    assert loaded.for_device("cpu", "AMD EPYC", 8).model == "CPU self-test"
    assert loaded.for_device("cuda", "NVIDIA H200 NVL", 8) is None  # another model, another power limit
    assert loaded.for_device("cuda", "NVIDIA H100 PCIe", 8) is None


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
    # the figures across nodes are the fabric's as much as the GPUs': listed for Hopper, never required
    sizes = ("8mib", "64mib", "512mib", "4gib", "8gib")
    across = set() if name.startswith("a100") else {f"nccl.allreduce.multinode.{s}.busbw" for s in sizes}
    train = {"train.tokens_per_s", "train.mfu"}
    assert set(model.metrics) == matmul | memory | pcie | nvlink | large | small | across | train
    assert {n for n, spec in model.metrics.items() if spec.required} == matmul | memory | pcie | nvlink | large | train


def test_the_all_reduce_metrics_are_the_profiles_sizes():
    from gputests.work import nccl_run
    from harness.groups import NcclSection
    from harness.profiles import quick

    h200 = baselines.load_file(baselines.default_dir() / "h200-141gb.toml")
    cpu = baselines.load_file(baselines.default_dir() / "cpu-selftest.toml")
    gpu, on_cpu = quick().section(NcclSection), quick().for_cpu().section(NcclSection)
    for model, sizes in ((h200, gpu.sizes_mib), (cpu, on_cpu.sizes_mib)):
        names = {n for n in model.metrics if n.startswith("nccl.allreduce.")}
        assert names == {nccl_run.metric_name(m, across=a) for m in sizes for a in (False, True)}


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
            spec = packaged.for_device(device.kind, device.name, len(doc.devices)).metrics[m.metric]
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


@pytest.mark.parametrize(
    ("metric", "direction", "bound"),
    [
        ("matmul.bf16.tflops", "lower", "ceiling"),
        ("memory.verify.gbps", "lower", "ceiling"),
        ("memory.coverage", "lower", "ceiling"),
        ("nccl.allreduce.8gib.busbw", "lower", "ceiling"),
        ("memory.bad_words", "higher", "floor"),
    ],
)
def test_a_baseline_cannot_turn_a_floor_into_a_ceiling(tmp_path, metric, direction, bound):
    """The test decides which way is better: a file saying otherwise would pass any figure."""
    text = GOOD.replace("matmul.bf16.tflops", metric).replace('"higher"', f'"{direction}"')
    path = write(tmp_path, text.replace("floor = 100.0", f"{bound} = 100.0"))
    with pytest.raises(ConfigError) as caught:
        baselines.load_file(path)
    field = f"metrics.{metric!r}.direction"
    assert (caught.value.file, caught.value.field) == (str(path), field)
    assert f"is {direction!r}; {metric} is better" in str(caught.value)


@pytest.mark.parametrize("metric", ["matmul.bf16.gflops", "nvlnk.p2p.gbps", "memory.coverage_ratio", "pcie.h2d"])
def test_a_metric_no_test_measures_is_an_error(tmp_path, metric):
    """A misspelt metric would never be measured, so never judged: refused, naming what the tests measure."""
    path = write(tmp_path, GOOD.replace("matmul.bf16.tflops", metric))
    with pytest.raises(ConfigError, match="no test measures it; the tests measure matmul") as caught:
        baselines.load_file(path)
    assert caught.value.field == f"metrics.{metric!r}"


def test_the_tests_declare_the_direction_of_every_metric_the_baselines_name():
    loaded = baselines.load_dir(baselines.default_dir())
    for baseline in loaded.baselines:
        for name, spec in baseline.metrics.items():
            assert groups.direction_of(name) is spec.direction, (baseline.path.name, name)


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
    assert baselines.load_dir(tmp_path).for_device("cuda", "NVIDIA H100 80GB HBM3", 8) is None


def test_an_explicit_file_for_another_model_is_an_error_not_a_silent_skip(tmp_path):
    chosen = baselines.load_one(write(tmp_path, GOOD))
    assert chosen.for_device("cuda", "NVIDIA Test 1", 8).model == "Test GPU"
    with pytest.raises(ConfigError, match="this node's device is 'NVIDIA H100 80GB HBM3'") as caught:
        chosen.for_device("cuda", "NVIDIA H100 80GB HBM3", 8)
    assert caught.value.field == "names"


def test_another_models_file_is_explained_with_the_flags_of_the_front_end_in_use(tmp_path):
    from harness import options

    with pytest.raises(ConfigError) as caught:
        baselines.load_one(write(tmp_path, GOOD)).for_device("cuda", "NVIDIA H100 80GB HBM3", 8)
    cli, pytest_words = options.explain(caught.value, "cli"), options.explain(caught.value, "pytest")
    assert ": names: --baseline: this baseline covers" in cli and "--gpu-" not in cli
    assert ": names: --gpu-baseline: this baseline covers" in pytest_words


def test_two_baselines_for_one_model_is_an_error(tmp_path):
    write(tmp_path, GOOD, "a.toml")
    write(tmp_path, GOOD, "b.toml")
    with pytest.raises(ConfigError, match="more than one baseline"):
        baselines.load_dir(tmp_path).for_device("cuda", "NVIDIA Test 1", 8)


MATCHED = GOOD.replace('names = ["NVIDIA Test*"]\n', 'names = ["NVIDIA Test*"]\n\n[match]\ngpus = GPUS\n')


def test_a_file_for_the_nodes_gpu_count_wins_over_one_for_any_count(tmp_path):
    write(tmp_path, GOOD, "any.toml")
    write(tmp_path, MATCHED.replace("GPUS", "8"), "eight.toml")
    write(tmp_path, MATCHED.replace("GPUS", "1"), "one.toml")
    found = baselines.load_dir(tmp_path)
    assert found.for_device("cuda", "NVIDIA Test 1", 8).path.name == "eight.toml"
    assert found.for_device("cuda", "NVIDIA Test 1", 1).path.name == "one.toml"
    assert found.for_device("cuda", "NVIDIA Test 1", 4).path.name == "any.toml"
    (tmp_path / "any.toml").unlink()
    found = baselines.load_dir(tmp_path)
    assert found.for_device("cuda", "NVIDIA Test 1", 7) is None  # a GPU short of 8: not judged as 8, nor as 1
    assert found.counts_for("cuda", "NVIDIA Test 1") == (1, 8)
    write(tmp_path, MATCHED.replace("GPUS", "8"), "eight-again.toml")
    with pytest.raises(ConfigError, match="with 8 of them is covered by more than one baseline"):
        baselines.load_dir(tmp_path).for_device("cuda", "NVIDIA Test 1", 8)


def test_an_explicit_file_for_another_node_size_is_an_error(tmp_path):
    chosen = baselines.load_one(write(tmp_path, MATCHED.replace("GPUS", "8")))
    with pytest.raises(ConfigError, match="this baseline is for nodes with 8 of 'NVIDIA Test 1'; this node has 1"):
        chosen.for_device("cuda", "NVIDIA Test 1", 1)


@pytest.mark.parametrize(
    ("match", "field"),
    [("gpus = 0", "match.gpus"), ('gpus = "8"', "match.gpus"), ("gpus = 8.0", "match.gpus"), ("gpu = 8", "match.gpu")],
)
def test_a_bad_match_names_its_field(tmp_path, match, field):
    with pytest.raises(ConfigError) as caught:
        baselines.load_file(write(tmp_path, MATCHED.replace("gpus = GPUS", match)))
    assert caught.value.field == field


def test_one_gpu_of_an_8_gpu_model_has_its_own_file_that_asks_nothing_between_gpus():
    packaged = baselines.load_dir(baselines.default_dir())
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        eight, one = packaged.for_device("cuda", name, 8), packaged.for_device("cuda", name, 1)
        assert (eight.gpus, one.gpus) == (8, 1)
        assert any(m.startswith(("nvlink.", "nccl.")) and s.required for m, s in eight.metrics.items())
        assert not [m for m in one.metrics if m.startswith(("nvlink.", "nccl."))]
        assert eight.health.nvlink_links and one.health.nvlink_links is None
        # The GPU is the same: every figure of one GPU is judged alike on both (a guard against drift).
        for metric, spec in one.metrics.items():
            assert spec == eight.metrics[metric], metric
        links = {
            "nvlink_links": None,
            "nvlink_recovery_delta_max": None,
            "nvlink_replay_delta_max": None,
            "nvlink_crc_per_s_max": None,
        }
        assert dataclasses.replace(one.health, **links) == dataclasses.replace(eight.health, **links)


def test_a_lone_gpu_has_nothing_to_test_between_gpus_and_is_not_held_for_it():
    from harness.workers import devicetest

    packaged = baselines.load_dir(baselines.default_dir())
    [device] = gpus(1)
    for baseline, severity in (
        (packaged.for_device("cuda", device.name, 1), "info"),
        (packaged.for_device("cuda", device.name, 8), "incomplete"),
    ):
        scope = devicetest.Scope(
            devices=(device,),
            profile=profiles.by_name("quick"),
            test="t",
            group="nvlink",
            baselines={device.uuid: baseline},
        )
        [finding] = devicetest.nothing_to_test(scope, "one GPU", ["nvlink.p2p.gbps"]).findings
        assert finding.severity == severity


def test_health_is_judged_on_a_node_no_file_is_sized_for():
    packaged = baselines.load_dir(baselines.default_dir())
    h100 = "NVIDIA H100 80GB HBM3"
    assert packaged.for_device("cuda", h100, 7) is None  # its figures: not judged as an 8-GPU board's
    assert packaged.for_health("cuda", h100, 7).gpus == 8  # its ECC, Xids, temperatures: judged all the same
    assert packaged.for_health("cuda", h100, 2).gpus == 8
    assert packaged.for_health("cuda", h100, 1).gpus == 1
    assert packaged.for_health("cuda", h100, 16).gpus == 8
    assert packaged.for_health("cuda", "NVIDIA B200", 8) is None


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


def test_the_generated_baseline_files_are_up_to_date():
    """The 1-GPU variants and the deploy/ copies come from `python -m baselines.generate`, never by hand."""
    from baselines import generate

    assert generate.main(["--check"]) == 0


def test_every_floor_of_a_shipped_gpu_baseline_says_what_it_derives_from_and_the_margin_it_leaves():
    for baseline in baselines.load_dir(baselines.default_dir()).baselines:
        if baseline.device != "cuda":
            continue
        for spec in baseline.metrics.values():
            if spec.direction is Direction.HIGHER and spec.limit > 0:
                where = (baseline.path.name, spec.name)
                assert spec.provenance.reference and spec.provenance.margin is not None, where
                assert spec.limit == pytest.approx(spec.provenance.reference * (1 - spec.provenance.margin), rel=0.01)


def test_a_margin_the_floor_does_not_leave_is_an_error_naming_it(tmp_path):
    claimed = GOOD.replace('kind = "measured"\n', 'kind = "measured"\nreference = 125.0\nmargin = 0.3\n', 1)
    assert "reference = 125.0" in claimed
    with pytest.raises(ConfigError) as caught:
        baselines.load_file(write(tmp_path, claimed))
    assert caught.value.field == "metrics.'matmul.bf16.tflops'.provenance.margin"
    honest = claimed.replace("margin = 0.3", "margin = 0.2")
    assert baselines.load_file(write(tmp_path, honest)).metrics["matmul.bf16.tflops"].provenance.margin == 0.2


def test_the_retired_nvlink_error_total_is_an_error_saying_what_replaces_it(tmp_path):
    old = GOOD + '\n[health]\nnvlink_errors_delta_max = 0\n[health.provenance]\nkind = "estimate"\nsource = "x"\n'
    with pytest.raises(ConfigError, match="nvlink_recovery_delta_max") as caught:
        baselines.load_file(write(tmp_path, old))
    assert caught.value.field == "health.nvlink_errors_delta_max"
