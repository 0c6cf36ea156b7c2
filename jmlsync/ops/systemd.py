"""The systemd notification protocol (sd_notify): READY=1, STOPPING=1 and watchdog pings.

A datagram to $NOTIFY_SOCKET; a no-op outside systemd. These variables are set by systemd for
the service process: they are its supervision contract, not configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("jmlsync.systemd")


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec in seconds, when systemd expects pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


async def keep_watchdog_fed(interval: float) -> None:
    """Ping the watchdog while the event loop runs; a stuck loop stops the pings."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
