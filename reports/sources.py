"""Which result files and objects the sources of a report name, and how each is read.

    found, errors = result_files(["results/", "/data/**/*.json", "s3://fleet-results/burnin"])
    for name, read_one in contents(found): documents = read_one()     # ConfigError for a bad one

A directory is every *.json below it, a glob its matches, a URL of object storage (s3://, gs://,
az://) every *.json object under it or a glob's matches (harness/store.py lists and fetches them,
in parallel). A file is read when asked; objects are fetched ahead by the store's pool of threads
(the time is the network's), in order; each is then checked as a file is (reports/resultfile.py).
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.results import ResultDocument
from reports.resultfile import MAX_BYTES, check_size, parse, read

if TYPE_CHECKING:
    from harness.store import Remote

Source = str | os.PathLike[str]
Parsed = list[tuple[ResultDocument, list[dict[str, Any]]]]


def result_files(sources: Iterable[Source]) -> tuple[list[Path | Remote], list[ConfigError]]:
    """Every result file that `sources` name: files, directories (all *.json below) and globs, and
    objects: URLs of a store, read as directories (all *.json under the prefix) or globs."""
    given = [os.fspath(source) for source in sources]
    urls = [text for text in given if _is_url(text)]
    listed: dict[str, tuple[list[Remote], ConfigError | None]] = {}
    if urls:
        from harness import store

        listed = dict(zip(urls, store.list_results(urls), strict=True))  # listed in parallel
    found: list[Path | Remote] = []
    errors: list[ConfigError] = []
    for text in given:
        path = Path(text)
        if text in listed:
            remotes, error = listed[text]
            found += remotes
            errors += [error] if error is not None else []
        elif path.is_dir():  # anything but a directory is listed, so that a FIFO or a device is reported
            found += sorted(p for p in path.rglob("*.json") if not p.is_dir())
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if not Path(p).is_dir())
            if not matches:
                errors.append(ConfigError("no file matches this pattern", file=text))
            found += matches
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            errors.append(ConfigError("no such file or directory", file=text))
    return list(dict.fromkeys(found)), errors


def contents(items: list[Path | Remote]) -> Iterator[tuple[Path | str, Callable[[], Parsed]]]:
    """Each item's name and how to read it, in order: a file is read when asked, the objects are
    fetched ahead by the store's pool of threads (an object over MAX_BYTES is never fetched)."""
    remotes = [item for item in items if not isinstance(item, Path)]
    fetched: Iterator[tuple[Remote, bytes | Exception]] = iter(())
    if remotes:
        from harness import store

        fetched = store.fetch_all([r for r in remotes if r.size <= MAX_BYTES], MAX_BYTES)
    for item in items:
        if isinstance(item, Path):
            yield item, functools.partial(read, item)
            continue
        name = str(item)
        if item.size > MAX_BYTES:
            yield name, functools.partial(_too_large, item.size, name)
            continue
        _, data = next(fetched)
        yield name, functools.partial(_parse_fetched, data, name)


def _too_large(size: int, name: str) -> Parsed:
    check_size(size, name)
    return []


def _parse_fetched(data: bytes | Exception, name: str) -> Parsed:
    if isinstance(data, Exception):
        raise ConfigError(f"cannot read: {data}", file=name)
    return parse(data, name)


def _is_url(text: str) -> bool:
    from harness.store import is_url

    return is_url(text)


