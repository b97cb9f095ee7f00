"""A pytest plugin for tests/test_cli.py: a test process that ignores SIGTERM, as one stuck would."""

import signal


def pytest_runtest_setup(item):  # after the burn-in plugin has installed its own SIGTERM handler
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
