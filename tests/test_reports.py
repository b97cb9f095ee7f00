import datetime as dt

from harness import results
from harness.devices import Device
from harness.records import Direction, Measurement
from harness.verdict import Status, Verdict
from reports import load


def write_run(directory, node: str, value: float, minute: int):
    started = dt.datetime(2026, 11, 27, 13, minute, tzinfo=dt.UTC)
    gpu = Device(index=3, kind="cuda", name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{node}")
    doc = results.ResultDocument(
        run_id=f"r{minute}",
        node=node,
        started_at=started,
        device_kind="cuda",
        devices=[gpu],
        measurements=[
            Measurement(
                metric="matmul.bf16.tflops",
                gpu=gpu.uuid,
                value=value,
                unit="TFLOP/s",
                direction=Direction.HIGHER,
                samples=30,
            )
        ],
        verdict=Verdict(status=Status.PASS),
    )
    return results.write(results.path_for(directory, node, doc.run_id), doc)


def test_many_results_become_one_table_and_bad_files_are_reported(tmp_path):
    paths = [write_run(tmp_path, "n1", 790.0, 1), write_run(tmp_path, "n2", 760.0, 2)]
    torn = tmp_path / "torn.json"
    torn.write_text('{"schema": "gpu-burnin/res')
    runs, measurements, errors = load.load([*paths, torn])
    assert list(runs["node"]) == ["n1", "n2"] and set(runs["verdict"]) == {"pass"}
    assert list(measurements["value"]) == [790.0, 760.0]
    assert list(measurements["gpu_index"]) == [3, 3] and set(measurements["gpu_name"]) == {"NVIDIA H100 80GB HBM3"}
    assert str(measurements["started_at"].dt.tz) == "UTC"
    assert [e.file for e in errors] == [str(torn)]
