"""Shared fixtures for gpu-burnin's own tests; helpers are in tests/helpers.py."""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - imported once here: pytester's in-process runs cannot re-import it
import pytest
import torch  # noqa: F401 - likewise

from harness.baselines import default_dir
from harness.devices import Device
from harness.groups import GROUPS

# Workers are pickled by reference, so each group's worker functions must stay the same objects
# across pytester's in-process runs (which restore sys.modules after each): imported once, here.
for _group in GROUPS.values():
    if _group.module:
        importlib.import_module(_group.module)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds (a real run, a hang, a watchdog); -m 'not slow' skips")


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose runs load the burn-in plugin whether or not gpu-burnin is installed
    (on a GPU box the checkout often runs uninstalled, from PYTHONPATH): pytest loads
    the plugins PYTEST_PLUGINS names, in-process runs and subprocesses alike."""
    monkeypatch.setenv("PYTEST_PLUGINS", "gputests.plugin")
    return pytester


@pytest.fixture
def cpu() -> Device:
    return Device(index=0, kind="cpu", name="Test CPU", uuid="CPU-test", sm_count=2)


@pytest.fixture
def baseline_dir(tmp_path: Path) -> Path:
    """A writable copy of the packaged baselines."""
    target = tmp_path / "baselines"
    target.mkdir()
    for path in default_dir().glob("*.toml"):
        shutil.copy(path, target / path.name)
    return target


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server, tests/s3server.py): the one .ci/run started (GPU_BURNIN_TEST_S3),
    or one started here for this test session."""
    shared = os.environ.get("GPU_BURNIN_TEST_S3")
    if shared:
        yield shared
        return
    from tests.s3server import S3Server

    with S3Server() as server:
        yield server.endpoint


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A new, empty bucket in the S3 server, and the environment every S3 client (ours, and any
    gpu-burnin process a test starts) finds it by: AWS_ENDPOINT_URL and test credentials."""
    from tests.s3server import Client

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDGPUBURNINTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gpu-burnin-test-secret-d41d8cd98f00")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance identity to look for
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    client = Client(s3_endpoint)
    client.fail(0, 0)
    client.authenticate(False)
    bucket = Bucket(name=f"t-{uuid.uuid4().hex[:20]}", endpoint=s3_endpoint, server=client)
    bucket.api().create_bucket(Bucket=bucket.name)
    yield bucket
    client.fail(0, 0)
    client.authenticate(False)


@dataclasses.dataclass
class Bucket:
    """A test's bucket: its name, `url` (s3://NAME/fleet, where results go), and the server."""

    name: str
    endpoint: str
    server: Any

    @property
    def url(self) -> str:
        return f"s3://{self.name}/fleet"

    def api(self) -> Any:
        """boto3's S3 client for the bucket: the official client, to check what the store holds."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, by key."""
        api = self.api()
        listed = api.list_objects_v2(Bucket=self.name).get("Contents", [])
        return {o["Key"]: api.get_object(Bucket=self.name, Key=o["Key"])["Body"].read() for o in listed}

    def puts(self) -> list[str]:
        """The paths of the PUT requests the server has seen for this bucket."""
        seen = self.server.requests()
        return [path for method, path in seen if method == "PUT" and path.startswith(f"/{self.name}/")]
