import datetime as dt
import json
import os
import stat

import pytest

from harness import results
from harness.errors import ConfigError


def document(run_id: str = "r1") -> dict:
    return results.skeleton(
        run_id=run_id, node="node-1", started_at=dt.datetime(2026, 11, 27, 13, 0, tzinfo=dt.UTC), device_kind="cpu"
    )


def test_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = results.path_for(tmp_path / "out", "node-1", "r1")
    results.write(path, document())
    results.write(path, {**document(), "state": results.FINISHED})
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert results.load(path)["state"] == "finished"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_failed_write_keeps_the_previous_document(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    results.write(path, document())

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        results.write(path, {**document(), "state": results.FINISHED})
    assert json.loads(path.read_text())["state"] == "running"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        results.write(tmp_path / "r.json", {**document(), "measurements": [{"value": float("nan")}]})


def test_load_refuses_other_documents_and_newer_versions(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**document(), "schema_version": results.SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError) as caught:
        results.load(path)
    assert caught.value.field == "schema_version"
    path.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ConfigError, match="not a gpu-burnin result"):
        results.load(path)
    path.write_text("{half a docu")
    with pytest.raises(ConfigError, match="not a JSON document"):
        results.load(path)


def test_names_sort_by_time_and_are_safe_on_any_filesystem(tmp_path):
    first = results.new_run_id(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    second = results.new_run_id(dt.datetime(2026, 1, 2, 3, 4, 6, tzinfo=dt.UTC))
    assert first.startswith("20260102T030405Z-") and first < second
    assert results.path_for(tmp_path, "gpu node/7:a", first).name == f"gpu_node_7_a_{first}.json"


def test_timestamps_are_utc_with_milliseconds():
    moment = dt.datetime(2026, 11, 27, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert results.timestamp(moment) == "2026-11-27T13:00:00.123Z"
