"""A pytest plugin for tests/test_cli.py: a test process that ignores SIGTERM, as one stuck would."""

import signal

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
