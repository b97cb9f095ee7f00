"""The remediator's view of the GPU nodes: a few fields of each node's metadata, kept current.

A label-selected list of PartialObjectMetadata with resourceVersion=0 (served from the API
server's watch cache, not a quorum read of etcd), read a node at a time; then a watch from
the list's resourceVersion, with bookmarks, restarted where it ends and relisted when the
server no longer has that version (410). What metadata cannot say, whether a node is
Ready and whether it is cordoned, comes from the Status column of a server-side Table of
the same nodes (`refresh_columns`): a few dozen bytes a node. Memory is one small record
a node (`brake.Seen`), whatever the size of the Node objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from harness.kube import node as nodes
from harness.kube.api import Api, Expired, KubeError, Watch
from harness.kube.node import Marks
from harness.remediator.brake import Seen

WATCH_S = 300
"""Each watch asks the server to end it after this long (and is begun again from where it was)."""


def seen_from(metadata: dict[str, Any], marks: Marks) -> Seen:
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    requested = nodes.json_annotation(annotations, nodes.REQUESTED).get("time")
    cordoned = nodes.json_annotation(annotations, nodes.CORDONED)
    return Seen(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        health=str(labels.get(marks.unhealthy_label.key, "")),
        severity=str(labels.get(marks.severity.key, "")),
        requested=nodes.parse_stamp(str(requested)) if requested else None,
        requested_text=str(requested or ""),
        taken_text=str(cordoned.get("time", "")),
        preflight=marks.preflight_label.key in labels,
    )


class View:
    """The GPU nodes by name. `relist` and `refresh_columns` are called by the pass; `follow` runs on a
    thread of its own and sets `changed` at every change it sees."""

    def __init__(self, api: Api, selector: str, marks: Marks, *, say: Callable[[str], None] = lambda _: None):
        self.api = api
        self.selector = selector
        self.marks = marks
        self.say = say
        self.nodes: dict[str, Seen] = {}
        self.version = ""
        """The resourceVersion the view is current to ("" before the first list)."""
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self._watch: Watch | None = None
        self._stopped = threading.Event()

    def relist(self, *, quiet: bool = False) -> None:
        found, version = self.api.node_metadata(self.selector, lambda m: seen_from(m, self.marks))
        if not quiet:
            self.say(f"listed {len(found)} GPU nodes ({self.selector}) at resourceVersion {version}")
        with self.lock:
            columns = {name: (n.ready, n.unschedulable) for name, n in self.nodes.items()}
            self.nodes = {}
            for seen in found:
                seen.ready, seen.unschedulable = columns.get(seen.name, (True, False))
                self.nodes[seen.name] = seen
            self.version = version

    def refresh_columns(self) -> None:
        """Ready and cordoned, for every node, from the server's Table."""
        columns = self.api.node_columns(self.selector)
        with self.lock:
            for name, seen in self.nodes.items():
                found = columns.get(name)
                if found is not None:
                    seen.ready, seen.unschedulable = found.ready, found.unschedulable

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.nodes.values())

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event."""
        metadata = obj.get("metadata") or {}
        with self.lock:
            version = str(metadata.get("resourceVersion") or "")
            if kind == "BOOKMARK":
                self.version = version or self.version
                return
            seen = seen_from(metadata, self.marks)
            if kind == "DELETED":
                self.nodes.pop(seen.name, None)
            elif kind in ("ADDED", "MODIFIED"):
                before = self.nodes.get(seen.name)
                if before is not None:
                    seen.ready, seen.unschedulable = before.ready, before.unschedulable
                self.nodes[seen.name] = seen
            self.version = version or self.version
        self.changed.set()

    def follow(self, backoff_s: float = 5.0) -> None:
        """Keep the view current until `stop`: watch from the view's version, relist when it expired."""
        while not self._stopped.is_set():
            try:
                if not self.version:
                    self.relist()
                    self.changed.set()
                self._watch = self.api.watch_node_metadata(self.selector, self.version, WATCH_S)
                if self._stopped.is_set():
                    break
                for kind, obj in self._watch.events():
                    self.apply(kind, obj)
            except Expired:
                self.say("the watch's resourceVersion expired: listing the GPU nodes again")
                self.version = ""
            except KubeError as err:
                if self._stopped.is_set():
                    break
                self.say(f"the watch of the GPU nodes broke off ({err}); again in {backoff_s:g} s")
                self._stopped.wait(backoff_s)

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()
        self.changed.set()
