"""The one strict reader of configuration TOML (harness/strict.py) that baselines, the Xid table and the
NVML scenarios share: each refuses a broken file the same way, naming it."""

import pytest

from harness import baselines, strict
from harness.errors import ConfigError
from harness.nvml import scenario, xid_table

READERS = {
    "baseline": baselines.load_file,
    "xid table": xid_table.load_table,
    "scenario": scenario.load,
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"a = [", "not valid TOML: TOMLDecodeError"),
        (b"a = " + b"9" * 5000, "not valid TOML: ValueError"),  # tomllib: an integer of thousands of digits
        (b"a = " + b"[" * 3000 + b"]" * 3000, "not valid TOML: RecursionError"),
        (b'a = "\xff"', "not UTF-8 text"),
    ],
    ids=["broken", "huge-integer", "deep-nesting", "not-utf8"],
)
def test_every_reader_refuses_a_file_that_is_not_toml_naming_it(tmp_path, reader, content, problem):
    path = tmp_path / "given.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as caught:
        READERS[reader](path)
    assert caught.value.file == str(path)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_refuses_what_is_not_a_regular_file(tmp_path, reader):
    with pytest.raises(ConfigError, match="is not a regular file"):
        READERS[reader](tmp_path)


def test_the_field_checks_name_the_file_and_the_field(tmp_path):
    check = strict.Strict(tmp_path / "f.toml")
    with pytest.raises(ConfigError, match="unknown key") as caught:
        check.only({"a": 1, "b": 2}, "top", {"a"})
    assert (caught.value.file, caught.value.field) == (str(tmp_path / "f.toml"), "top.b")
    with pytest.raises(ConfigError, match="expected a whole number, got True"):
        check.get({"n": True}, "n", int)
    assert check.get({}, "n", int, default=3) == 3
    for bad in (float("inf"), -1, 10**400, "1"):
        with pytest.raises(ConfigError, match="finite number of at least 0"):
            check.number({"x": bad}, "x", "t")
    assert check.number({"x": 2}, "x", "t") == 2.0
