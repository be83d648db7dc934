"""The checks every MixQuery request passes before its handler runs, and the error the web app answers with.

:class:`RequestGuard` is mixed into every handler of :mod:`partsim_core.mixquery.handlers`: it refuses a ``Host``
that is not on the allow-list (403, against DNS rebinding) and a body over the limit (413, from
``Content-Length`` before the body is read, or while a chunked body streams in). :class:`ApiError` is the error
every handler raises; it is answered as ``{"error": message}``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Protocol

import tornado.web

#: Host names every app answers for (plus the bound address and ``allowed_hosts`` of
#: :func:`~partsim_core.mixquery.handlers.make_app`).
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
#: Addresses that bind every interface: no Host may name them.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


class ApiError(tornado.web.HTTPError):
    """An error answered as ``{"error": message}`` with ``status``.
    """

    def __init__(self, status: int, message: str) -> None:
        # log_message is %-formatted by tornado's logger: escape '%' coming from user input.
        super().__init__(status, message.replace("%", "%%"))
        self.message = message


def host_name(host: str) -> str:
    """The name of a ``Host`` header value: lower case, without port and IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _content_length(text: str | None) -> int | None:
    """``Content-Length`` as an int (``None`` when absent); a malformed one is a 400."""
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", text.strip(), flags=re.ASCII):
        raise ApiError(400, "malformed Content-Length header")
    return int(text.strip())


def _unless_answered(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` skipped when the request was already answered while its body streamed in (413)."""

    @functools.wraps(method)
    async def run(self: Any, *args: Any, **kwargs: Any) -> None:
        if self._finished:
            return
        result = method(self, *args, **kwargs)
        if result is not None:
            await result

    return run


class GuardLimits(Protocol):
    """What the guard reads from the app's shared state (``settings["mixquery_state"]``)."""

    allowed_hosts: frozenset[str]
    max_body_bytes: int


class RequestGuard:
    """The checks every route makes before anything else (mixed into both handler bases).

    Host allow-list (403) and the body limit from ``Content-Length`` (413) in :meth:`prepare`, before the body is
    read (the handlers stream their bodies, see :func:`tornado.web.stream_request_body`); a chunked body is counted
    as it arrives and refused once complete.
    """

    request: Any
    settings: dict

    def _guard(self) -> None:
        state: GuardLimits = self.settings["mixquery_state"]
        host = host_name(self.request.host or "")
        if host not in state.allowed_hosts:
            raise ApiError(403, f"this server does not answer for host {host[:100]!r}; it answers for "
                                f"{', '.join(sorted(state.allowed_hosts))} (add names with --allow-host)")
        length = _content_length(self.request.headers.get("Content-Length"))
        if length is not None and length > state.max_body_bytes:
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of {state.max_body_bytes} bytes")
        self._body = bytearray()
        self._body_size = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("get", "head", "post"):
            if name in cls.__dict__:
                setattr(cls, name, _unless_answered(cls.__dict__[name]))

    def data_received(self, chunk: bytes) -> None:
        """Keep the body up to the limit; past it, answer 413 at once and drop the rest."""
        state: GuardLimits = self.settings["mixquery_state"]
        self._body_size += len(chunk)
        if self._body_size <= state.max_body_bytes:
            self._body += chunk
        elif not self._finished:
            error = ApiError(413, f"request body of more than {state.max_body_bytes} bytes exceeds the limit of "
                                  f"{state.max_body_bytes} bytes")
            self.send_error(413, exc_info=(ApiError, error, None))

    def _checked_body(self) -> bytes:
        state: GuardLimits = self.settings["mixquery_state"]
        if self._body_size > state.max_body_bytes:
            raise ApiError(413, f"request body of {self._body_size} bytes exceeds the limit of "
                                f"{state.max_body_bytes} bytes")
        return bytes(self._body)

