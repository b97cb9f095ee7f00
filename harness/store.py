"""Object storage (S3, GCS, Azure Blob, or an S3-compatible store on premises), through fsspec.

    url = store.check_url("s3://fleet-results/burnin")       # at the edge: usage errors, nothing sent
    store.put(url, "gpu-node-17/20261127T130000Z-a1b2c3.json", data)   # one PUT: whole or absent
    [(found, problem)] = store.list_results(["s3://fleet-results/burnin"])   # or a glob: gs://b/**/*.json
    for remote, data in store.fetch_all(found, limit=MAX_BYTES): ...

This module is the only one that imports fsspec (and through it s3fs, gcsfs, adlfs, the extras
`gpu-burnin[s3]`, `[gcs]`, `[azure]`). Credentials and endpoints come the way each store's own
client finds them: the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL for an S3-compatible
store, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_NAME ...), a profile, the instance's
or the pod's workload identity. None is ever taken from the URL (one with a user or password in
it is refused), and every message this module makes from a store's error has the values of the
environment's secrets blanked out first: whatever a client puts in an exception, a secret key
never reaches a log.

Each call is one attempt, kept short (the S3 client's own retries are off, its timeouts a few
seconds): harness/outbox.py decides when to try again, within a bounded time.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import fsspec

from harness.errors import ConfigError

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
"""The stores a results URL may name, by URL scheme, and the extra of gpu-burnin that brings each client."""
CONNECT_S = 5.0
READ_S = 20.0
"""One S3 request's limits: a store that does not answer is a failed attempt, not a hung run."""
FETCH_WORKERS = 32
"""Objects fetched at once when reading: the time is the network's round trips, not this process."""
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|_KEY$|^AZURE_STORAGE_KEY|CONNECTION_STRING", re.I)
_CLIENT_ENVIRONMENT = ("AWS_", "GOOGLE_", "GCS", "AZURE_", "FSSPEC_")
"""Variables a store's client reads: a client is kept for one set of their values."""
_CLIENTS: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_MIN_SECRET = 6
"""Shorter values are not blanked from messages: they would blank ordinary words."""


class StoreError(Exception):
    """A store could not be reached or refused a request; its message holds no secret."""


@dataclasses.dataclass(frozen=True)
class Remote:
    """An object in a store: its full URL and its size in bytes."""

    url: str
    size: int

    def __str__(self) -> str:
        return self.url


def is_url(text: str) -> bool:
    """Whether `text` names something by a URL (`s3://...`) rather than a local path."""
    return bool(_SCHEME.match(text))


def check_url(text: str) -> str:
    """A results URL, checked without any request: a store this gpu-burnin knows, with a bucket (or
    container), no credentials, query or fragment, and its client installed. Returns it without a
    trailing `/`. ConfigError otherwise (a usage error: nothing has run)."""
    found = _SCHEME.match(text)
    if not found:
        raise ConfigError(f"{text!r} is not a URL; expected one such as s3://BUCKET/PREFIX")
    scheme = found.group(1).lower()
    if scheme not in EXTRAS:
        raise ConfigError(f"{scheme}:// is not an object store gpu-burnin writes to; use one of {_schemes()}")
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ConfigError(
            "a results URL carries no credentials: the store's client takes them from the environment "
            "or the pod's identity (docs/results.md)"
        )  # the URL is not repeated: it holds a secret
    if not parts.netloc or parts.query or parts.fragment or "//" in parts.path or "/../" in f"{parts.path}/":
        raise ConfigError(f"{text!r}: expected {scheme}://BUCKET or {scheme}://BUCKET/PREFIX, without ? or #")
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        raise ConfigError(
            f"{scheme}:// needs its client: pip install 'gpu-burnin[{EXTRAS[scheme]}]'"
        ) from None
    return text.rstrip("/")


def put(url: str, key: str, data: bytes) -> str:
    """Write `data` as the object `key` under `url` in one request, and return the object's URL: the
    object is whole or absent, and one that exists already is replaced. StoreError if it fails."""
    target = f"{url}/{key}"
    try:
        fs, path = _filesystem(target)
        fs.pipe_file(path, data)  # below the client's block size: one PUT, no multipart upload
    except Exception as err:  # noqa: BLE001 - every client has its own exceptions; each becomes one line
        raise StoreError(describe(err)) from None
    return target


def list_results(
    sources: Sequence[str], workers: int = FETCH_WORKERS
) -> list[tuple[list[Remote], ConfigError | None]]:
    """For each URL, in order, the result objects it names (an object, every *.json under a prefix,
    or a glob's matches), or the error naming it when it names none or cannot be listed. The URLs
    are listed in parallel."""
    if not sources:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources)))) as pool:
        return list(pool.map(_list_one, sources))


def fetch(remote: Remote, limit: int) -> bytes:
    """The object's bytes, at most `limit` + 1 of them (so that a reader can tell one that is too large).
    StoreError if it cannot be read."""
    if remote.size == 0:
        return b""  # listed empty: a range request of an empty object is refused (416)
    try:
        fs, path = _filesystem(remote.url)
        return bytes(fs.cat_file(path, start=0, end=limit + 1))
    except Exception as err:  # noqa: BLE001 - as in put
        raise StoreError(describe(err)) from None


def fetch_all(
    remotes: Sequence[Remote], limit: int, workers: int = FETCH_WORKERS
) -> Iterator[tuple[Remote, bytes | StoreError]]:
    """Each object's bytes (or why not), in the order given, fetched `workers` at a time; at most a few
    windows of objects are held at once, however many there are."""
    window = 4 * workers
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[tuple[Remote, concurrent.futures.Future[bytes]]] = []
        for remote in remotes:
            pending.append((remote, pool.submit(fetch, remote, limit)))
            if len(pending) < window:
                continue
            yield _outcome(*pending.pop(0))
        for remote, future in pending:
            yield _outcome(remote, future)


def describe(err: BaseException) -> str:
    """One line for a store's error: its kind and message (with the HTTP status and the store's error
    code, where its client kept them), cut short, with every secret blanked."""
    text = f"{type(err).__name__}: {err}"
    answer = _answer_of(err)
    if answer:
        text = f"{text} ({answer})"
    text = " ".join(text.split())
    return redact(text if len(text) <= 300 else text[:297] + "...")


def _answer_of(err: BaseException) -> str:
    """The store's answer behind an error (fsspec's clients raise an OSError from the client's own
    error, which holds the response): `HTTP 503 SlowDown`, or ""."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return ""
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            code = response.get("Error", {}).get("Code", "")
            return f"HTTP {status} {code}".strip()
        seen = seen.__cause__ or seen.__context__
    return ""


def redact(text: str) -> str:
    """`text` with the value of every secret in the environment (a key, a token, a password) as ***."""
    for name, value in os.environ.items():
        if len(value) >= _MIN_SECRET and _SECRET_NAMES.search(name) and value in text:
            text = text.replace(value, "***")
    return text


def _outcome(remote: Remote, future: concurrent.futures.Future[bytes]) -> tuple[Remote, bytes | StoreError]:
    try:
        return remote, future.result()
    except StoreError as err:
        return remote, err


def _list_one(source: str) -> tuple[list[Remote], ConfigError | None]:
    try:
        url = check_url(source.rstrip("/") if not glob.has_magic(source) else source)
    except ConfigError as err:
        return [], ConfigError(err.problem, file=source)
    try:
        fs, path = _filesystem(url)
        protocol = url.split("://", 1)[0]
        if glob.has_magic(path):
            listed: dict[str, Any] = fs.glob(path, detail=True)
        elif fs.isfile(path):
            listed = {path: fs.info(path)}
        else:
            listed = fs.find(path, detail=True)
    except Exception as err:  # noqa: BLE001 - as in put
        return [], ConfigError(f"cannot list: {describe(err)}", file=source)
    found = [
        Remote(url=f"{protocol}://{name}", size=int(info.get("size") or 0))
        for name, info in sorted(listed.items())
        if info.get("type", "file") == "file" and name.endswith(".json")
    ]
    if not found:
        return [], ConfigError("no result object (*.json) here", file=source)
    return found, None


def _filesystem(url: str) -> tuple[Any, str]:
    """A client for `url`'s store and the path in it. One client per scheme, bucket and environment
    is kept (making one costs more than a request), without a listing cache (a report reads what is
    there now); a changed environment (another endpoint, other keys) gets a new one."""
    scheme, rest = url.split("://", 1)
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_CLIENT_ENVIRONMENT)))
    key = (scheme.lower(), rest.split("/", 1)[0], environment)
    with _CLIENTS_LOCK:
        fs = _CLIENTS.get(key)
        if fs is None:
            options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
            if EXTRAS.get(scheme.lower()) == "s3":
                options["config_kwargs"] = {
                    "connect_timeout": CONNECT_S,
                    "read_timeout": READ_S,
                    "retries": {"mode": "standard", "total_max_attempts": 1},
                    "max_pool_connections": FETCH_WORKERS,
                }
            fs = fsspec.filesystem(scheme.lower(), **options)
            if hasattr(fs, "retries"):
                fs.retries = 1  # s3fs's own loop over network errors: one attempt here, harness/outbox.py retries
            _CLIENTS[key] = fs
    return fs, fs._strip_protocol(url)


def _schemes() -> str:
    return ", ".join(f"{scheme}://" for scheme in EXTRAS)
