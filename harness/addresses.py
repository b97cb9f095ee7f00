"""Where the ranks of an all-reduce across nodes meet: an address the other nodes can reach.

The obvious choice, the address the host name resolves to, is often a loopback
address: Debian and Ubuntu map the host name to 127.0.1.1 in /etc/hosts, and so do
many host-network pods. Every remote rank would then connect to itself and wait out
its limit. `meeting_address` prefers, in order: the address the user gave
(`--rendezvous-address`), the address of the interface that routes towards another
node of the job (the source address of a UDP socket connected to it: nothing is
sent), and the host name's address. The caller refuses a loopback address when the
job spans more than one host.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
from collections.abc import Sequence

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
DISCARD_PORT = 9
"""A UDP socket is connected to this port of a peer only to learn the route: nothing is sent."""


def parse(text: str) -> str:
    """`--rendezvous-address`: an IP address or a host name, checked for form (it is resolved
    where the meeting is hosted)."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOST_NAME.match(text):
        raise argparse.ArgumentTypeError(f"expected an IP address or a host name, got {text!r}")
    return text


def resolve(address: str) -> str:
    """The IP address of `address` (an IP address or a host name); OSError where it has none."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return socket.gethostbyname(address)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(resolve(address)).is_loopback
    except (OSError, ValueError):
        return False


def meeting_address(given: str, hosts: Sequence[str], own_host: str) -> str:
    """The address this host offers the job's other hosts (`hosts`, every MPI process's host name):
    `given` if any, else the interface that routes to another host, else the host name's address.
    Raises OSError where `given` does not resolve."""
    if given:
        return resolve(given)
    for host in dict.fromkeys(hosts):
        if host == own_host:
            continue
        route = route_towards(host)
        if route and not is_loopback(route):
            return route
    return resolve(own_host)


def route_towards(host: str) -> str:
    """The source address this host uses to reach `host`, or "" where `host` does not resolve
    (or resolves to a loopback address, as a name of this host may) or no route leads there."""
    try:
        peer = resolve(host)
        if ipaddress.ip_address(peer).is_loopback:
            return ""
        family = socket.AF_INET6 if ":" in peer else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer, DISCARD_PORT))
            return str(probe.getsockname()[0])
    except OSError:
        return ""
