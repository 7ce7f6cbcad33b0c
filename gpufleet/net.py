"""Addresses: free loopback ports, and the checks every command applies to a host, URL or port it is given."""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from gpufleet.errors import InputError

LOOPBACK = "127.0.0.1"
PORT_RANGE = (1, 65535)


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports nothing listens on now (the caller must still handle losing one before it binds).
    All are held bound until the last is chosen: a port released before the next is drawn can be drawn again (about
    one draw of three in 10,000 here), and a server given one port for two endpoints does not start."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the caller must still handle losing it before it binds)."""
    return free_ports(1, host)[0]


def check_port_free(port: int, option: str, host: str = LOOPBACK) -> int:
    """``port`` on ``host`` is free for a server of ours to bind: :class:`InputError` naming the port and the option
    that moves it when another process listens there. SO_REUSEADDR, as servers set it, so a port in TIME_WAIT is not
    taken for one in use; a listener on the port (or on 0.0.0.0 at that port) still refuses the bind on Linux."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"{option} {port}: {host}:{port} is in use by another process ({exc.strerror}); stop it "
                             f"or pick a free port with {option}") from None
    return port


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (IPv4 or IPv6), read from ``/proc``: the
    process's socket inodes against the listeners in ``/proc/net/tcp{,6}``. Another process answering on the port
    is not ``pid`` serving there. False where ``/proc`` cannot tell (not Linux, the process gone)."""
    try:
        owned = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is TCP_LISTEN; field 9 is the socket's inode
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A" and f"socket:[{fields[9]}]" in owned:
                return True
    return False


def check_port(value: int, option: str) -> int:
    if not PORT_RANGE[0] <= value <= PORT_RANGE[1]:
        raise InputError(f"{option} {value}: a port must lie in {PORT_RANGE[0]}..{PORT_RANGE[1]}")
    return value


def check_url(url: str, option: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``url`` has one of ``schemes``, a host, and a numeric port in range if it names one; returned without a
    trailing slash. A host given without a scheme (``127.0.0.1:8000``) is refused with the fix in the message."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.netloc:
        raise InputError(f"{option} {url!r}: expected a URL like {schemes[0]}://127.0.0.1:8000 "
                         f"(scheme {'/'.join(schemes)}, then a host)")
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"{option} {url!r}: the port must be a number in 1..65535") from None
    if not parts.hostname:
        raise InputError(f"{option} {url!r}: no host")
    if port is not None:
        check_port(port, option)
    return url.rstrip("/")


def check_host_port(address: str, option: str) -> str:
    """``host:port`` (a gRPC target): a host and a numeric port in range."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        raise InputError(f"{option} {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8001")
    check_port(int(port), option)
    return address
