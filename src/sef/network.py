"""Whether a server takes a connection, found out in seconds: the clients sef calls (MLflow's,
W&B's, the Hugging Face hub's) retry for minutes before they say that it does not. Imports
nothing of sef's, so the core (timm's hub weights) may use it."""

from __future__ import annotations

import socket
import threading
from urllib.parse import ParseResult, urlparse
from urllib.request import getproxies, proxy_bypass

SERVER_TIMEOUT = 10  # seconds a server has to take a connection


def unreachable(uri: str) -> tuple[str, str] | None:
    """``(host:port, why)`` if ``uri`` names an http(s) server that takes no connection within
    SERVER_TIMEOUT seconds (refused, an unknown host, no answer); None if it takes one, or is no
    such URL, or is reached through a proxy (the client's own error then says what is wrong)."""
    url = urlparse(uri)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # not a port: the client's own error says so
        return None
    if url.scheme not in ("http", "https") or not url.hostname or _proxied(url):
        return None
    why = _no_connection(url.hostname, port)
    return None if why is None else (f"{url.hostname}:{port}", why)


def _no_connection(host: str, port: int) -> str | None:
    """Why ``host`` takes no connection on ``port`` within SERVER_TIMEOUT seconds, its name's
    lookup included, which has no timeout of its own (a node whose name server does not answer
    waits for the resolver's, up to a minute): tried in a thread given up on at the limit. None
    if it takes one."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=SERVER_TIMEOUT).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(str(error) or type(error).__name__)

    thread = threading.Thread(target=attempt, name="sef-server-check", daemon=True)
    thread.start()
    thread.join(SERVER_TIMEOUT)
    return outcome[0] if outcome else f"no answer within {SERVER_TIMEOUT} s"


def _proxied(url: ParseResult) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy (as the clients do)."""
    proxies = getproxies()
    uses = url.scheme in proxies or "all" in proxies
    return uses and not proxy_bypass(url.hostname or "")
