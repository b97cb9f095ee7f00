"""The all-reduce's meeting place across hosts: an address the other nodes can reach, chosen once
on MPI rank 0, and a loopback one refused (exit 4, naming the option) when the job spans hosts."""

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import addresses, options
from harness.errors import ConfigError
from tests.fake_mpi import FakeMpi

REPO = Path(__file__).resolve().parent.parent


def test_a_loopback_meeting_place_is_refused_when_the_job_spans_hosts():
    with pytest.raises(ConfigError) as caught:
        FakeMpi(["node-a", "node-b"]).choose_meeting_host("127.0.1.1", limit_s=1)
    assert caught.value.option == "rendezvous_address"
    assert options.explain(caught.value, "pytest").startswith("--gpu-rendezvous-address: ")
    assert "127.0.1.1" in caught.value.problem and "2 hosts" in caught.value.problem


def test_a_loopback_meeting_place_is_fine_on_one_host():
    mpi = FakeMpi(["node-a", "node-a"])
    assert mpi.choose_meeting_host("127.0.0.1", limit_s=1) == "127.0.0.1"
    assert mpi.meeting_host == "127.0.0.1"


def test_the_given_address_wins_and_a_name_is_resolved_once_on_rank_0(monkeypatch):
    monkeypatch.setattr(addresses.socket, "gethostbyname", lambda name: {"rank0.example": "10.1.2.3"}[name])
    assert FakeMpi(["node-a", "node-b"]).choose_meeting_host("rank0.example", limit_s=1) == "10.1.2.3"


def test_an_address_that_does_not_resolve_is_a_usage_error():
    with pytest.raises(ConfigError, match="does not resolve") as caught:
        FakeMpi(["node-a", "node-b"]).choose_meeting_host("no-such-host.invalid", limit_s=1)
    assert caught.value.option == "rendezvous_address"


def test_without_an_address_the_interface_that_routes_to_another_node_is_offered(monkeypatch):
    """The host name resolves to 127.0.1.1 (Debian's /etc/hosts); the route towards node-b's
    address leaves from 192.0.2.7: that is the address to publish."""
    names = {"node-a": "127.0.1.1", "node-b": "198.51.100.9"}
    monkeypatch.setattr(addresses.socket, "gethostbyname", lambda name: names[name])
    routes = {"198.51.100.9": "192.0.2.7"}

    class Probe:
        def __init__(self, family, kind):
            self.peer = ""

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def connect(self, address):
            self.peer = address[0]

        def getsockname(self):
            return (routes[self.peer], 40000)

    monkeypatch.setattr(addresses.socket, "socket", Probe)
    assert FakeMpi(["node-a", "node-b"]).choose_meeting_host("", limit_s=1) == "192.0.2.7"


def test_with_no_route_and_a_loopback_host_name_two_hosts_are_refused(monkeypatch):
    def resolve(name):
        if name == "node-a":
            return "127.0.1.1"
        raise socket.gaierror("no such host")

    monkeypatch.setattr(addresses.socket, "gethostbyname", resolve)
    with pytest.raises(ConfigError, match="loopback"):
        FakeMpi(["node-a", "node-b"]).choose_meeting_host("", limit_s=1)


@pytest.mark.parametrize("text", ["10.0.0.7", "fe80::1", "rank0", "rank0.cluster.local"])
def test_the_option_takes_an_address_or_a_host_name(text):
    assert options.BY_NAME["rendezvous_address"].type(text) == text


@pytest.mark.parametrize("text", ["", "two words", "-leading-dash", "x" * 64, "10.0.0.7:29500"])
def test_the_option_refuses_what_is_neither(text):
    with pytest.raises(argparse.ArgumentTypeError):
        options.BY_NAME["rendezvous_address"].type(text)


def test_the_option_reaches_the_run(tmp_path):
    chosen = options.resolve({"device": "cpu", "rendezvous_address": "10.0.0.7", "results": tmp_path})
    assert chosen.rendezvous_address == "10.0.0.7"
    assert options.resolve({"device": "cpu", "results": tmp_path}).rendezvous_address == ""


@pytest.mark.slow
def test_a_loopback_meeting_place_for_two_hosts_is_a_usage_error_naming_the_option(tmp_path):
    """MPI rank 0 on this host and one on node-b (tests/fake_mpi.py): the meeting place given is a
    loopback address, which node-b could never reach. pytest ends with exit 4 before any test."""
    command = [sys.executable, "-m", "tests.fake_mpi", "gputests", "-m", "nccl", "--gpu-device", "cpu"]
    command += ["--gpu-results", str(tmp_path), "--gpu-rendezvous-address", "127.0.0.1", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--gpu-rendezvous-address" in done.stderr and "loopback" in done.stderr
    assert list(tmp_path.glob("*.json")) == []
