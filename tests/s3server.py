"""A real S3 API for the tests and the benchmark: moto's server, on 127.0.0.1, on a free port.

    with S3Server() as server:              # or: python -m tests.s3server --endpoint-file FILE
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        server.fail(503, count=2)           # the next two S3 requests answer 503 SlowDown
        server.requests()                   # every S3 request so far: [["PUT", "/bucket/key"], ...]

moto answers as AWS documents (its own S3 implementation: keys, listings, errors, its own
authentication when asked, by POST /moto-api/reset-auth). moto cannot be told to fail a request
with a 5xx, so one thing is added in front of it, in the same server: a WSGI layer that answers
the next COUNT S3 requests with an S3 error document of the status asked (POST /_faults with
{"status": 503, "count": 2}) and keeps the method and path of every request (GET /_requests).
.ci/run starts one such server for the whole test run (GPU_BURNIN_TEST_S3 names it); without it,
the tests start their own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

_ERRORS = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown"}


class _Faults:
    """The WSGI layer in front of moto: injected failures, and a record of the requests."""

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app = app
        self.lock = threading.Lock()
        self.status = 0
        self.count = 0
        self.seen: list[list[str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_faults":
            asked = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            with self.lock:
                self.status, self.count = int(asked.get("status", 0)), int(asked.get("count", 0))
            return _answer(start_response, 200, b"{}", "application/json")
        if path == "/_requests":
            with self.lock:
                body = json.dumps(self.seen).encode()
                if environ["REQUEST_METHOD"] == "DELETE":
                    self.seen = []
            return _answer(start_response, 200, body, "application/json")
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        with self.lock:
            self.seen.append([environ["REQUEST_METHOD"], path])
            failing = self.count > 0
            if failing:
                self.count -= 1
        if failing:
            code = _ERRORS.get(self.status, "InternalError")
            body = f"<Error><Code>{code}</Code><Message>injected by the test</Message></Error>".encode()
            return _answer(start_response, self.status, body, "application/xml")
        return self.app(environ, start_response)


def _answer(start_response: Callable[..., Any], status: int, body: bytes, kind: str) -> list[bytes]:
    reason = {200: "OK", 403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class S3Server:
    """moto's S3, with the fault layer, served from a thread of this process."""

    def __init__(self, port: int = 0):
        app = _Faults(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3server", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> S3Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class Client:
    """The fault layer and moto's own switches, over HTTP: the same for a server in this process
    and one .ci/run started."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def fail(self, status: int, count: int) -> None:
        """The next `count` S3 requests answer `status` (403, 500, 503)."""
        self._post("/_faults", json.dumps({"status": status, "count": count}).encode())

    def requests(self, *, clear: bool = False) -> list[list[str]]:
        request = urllib.request.Request(self.endpoint + "/_requests", method="DELETE" if clear else "GET")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return list(json.loads(answer.read()))

    def authenticate(self, on: bool) -> None:
        """moto's own authentication: on, a request signed with a key moto does not know is refused (403)."""
        self._post("/moto-api/reset-auth", b"0" if on else b"inf")

    def _post(self, path: str, body: bytes) -> None:
        headers = {"Content-Type": "text/plain"}  # not a form: moto reads the body as it is
        request = urllib.request.Request(self.endpoint + path, data=body, method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto's S3 with a fault layer, until SIGTERM")
    parser.add_argument("--endpoint-file", type=Path, required=True, help="write http://127.0.0.1:PORT here when ready")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with S3Server() as server:
        temporary = args.endpoint_file.with_name(args.endpoint_file.name + ".tmp")
        temporary.write_text(server.endpoint + "\n")
        os.replace(temporary, args.endpoint_file)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
