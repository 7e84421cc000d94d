"""How much, and for how long, one client can make the scoring API read.

uvicorn (0.54) bounds none of the request head with httptools, the parser ``segmentation serve`` runs: no size
limit, no limit on the number of fields and no deadline (httptools joins the pieces of a header value as they
arrive, so one unauthenticated 64 MiB header kept the event loop busy for 8 s). Its h11 protocol has a size limit
only (``h11_max_incomplete_event_size``, answered 400). So:

* **Request head** (request line, header fields, blank line): at most :data:`MAX_HEADER_BYTES` bytes and
  :data:`MAX_HEADER_FIELDS` fields, else 431; complete within :data:`HEADER_TIMEOUT_SECONDS` (of the connection
  opening for its first request, of the head's first bytes for a later one), else 408; a connection that sent
  nothing is closed quietly. Enforced by :func:`limited_httptools_protocol`: uvicorn's httptools protocol with
  counters in ``data_received`` and the parser callbacks, given to ``uvicorn.run(http=...)``. A refused head is not
  parsed further; the answer carries ``Connection: close`` and the connection ends with a short lingering close
  (:data:`LINGER_SECONDS`).
* **Body**: complete within :data:`BODY_TIMEOUT_SECONDS` of the route starting to read it, else 408 and the
  connection is closed (:func:`read_body`). A client that goes away mid-body costs one INFO line, no traceback.

Both timeouts can be changed for a test or a slow network with ``$SEGMENTATION_API_HEADER_TIMEOUT`` and
``$SEGMENTATION_API_BODY_TIMEOUT`` (seconds), or ``serve(header_timeout=..., body_timeout=...)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Mapping
from contextlib import aclosing
from http import HTTPStatus
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

log = logging.getLogger("segmentation.api")

MAX_HEADER_BYTES = 16 * 1024
"""The request head's size in bytes as sent: request line, header fields and the blank line that ends them (what
nginx and Node also bound, at 8-16 KiB). Browsers and HTTP libraries send well under 2 KiB to this API."""
MAX_HEADER_FIELDS = 100
"""Header fields in one request (this API needs 3 or 4: Host, Content-Type, Content-Length, X-API-Key)."""
HEADER_TIMEOUT_SECONDS = 10.0
"""The request head must be complete this long after the connection opened, or after its first byte arrived."""
BODY_TIMEOUT_SECONDS = 10.0
"""The whole body must arrive this long after the route starts reading it: a deadline, not an idle timeout, so
a client dribbling a byte a second is cut off too. At MAX_BODY_BYTES (16 MiB) that asks for about 1.6 MB/s."""
LINGER_SECONDS = 1.0
"""After a refused head the server half-closes and discards what the client still sends for up to this long, so
that a client still writing its request can read the answer (closing with unread input resets the connection)."""
HEADER_TIMEOUT_ENV = "SEGMENTATION_API_HEADER_TIMEOUT"
BODY_TIMEOUT_ENV = "SEGMENTATION_API_BODY_TIMEOUT"


def seconds_from_env(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """A timeout from the environment (a positive number of seconds), ``default`` when unset; ValueError if bad."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={raw!r}: expected a positive number of seconds")
    return value


# --- the body ------------------------------------------------------------------------------------------------------


class BodyRefused(Exception):
    """The body was not (completely) read: answer ``status`` with ``{"detail": detail}``, closing if ``close``.
    Status 499 means the client is gone: the answer is never sent."""

    def __init__(self, status: int, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close

    def response(self) -> Response:
        content = json.dumps({"detail": self.detail}, separators=(",", ":"))
        headers = {"Connection": "close"} if self.close else None
        return Response(content, status_code=self.status, media_type="application/json", headers=headers)


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT_SECONDS) -> bytes:
    """The body, or :class:`BodyRefused`: 413 as soon as it is known to exceed ``limit`` bytes (declared or
    streamed), 408 when it is not complete ``timeout`` seconds after this call, 499 when the client disconnected
    first. 408 and 499 write one log line each; nothing about the body's content is logged."""
    declared = request.headers.get("content-length")
    expected = int(declared) if declared is not None and declared.isdigit() else None
    if expected is not None and expected > limit:
        raise BodyRefused(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout), aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, f"request body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        log.warning("request body not complete within %g s, answered 408 (%s)", timeout,
                    _progress(request, size, expected))  # fmt: skip
        raise BodyRefused(408, f"request body not complete within {timeout:g} s", close=True) from None
    except ClientDisconnect:
        log.info("client disconnected before the body was complete (%s)", _progress(request, size, expected))
        raise BodyRefused(499, "client closed the request") from None
    return b"".join(chunks)


def _progress(request: Request, size: int, expected: int | None) -> str:
    read = f"{size:,} bytes, no length declared" if expected is None else f"{size:,} of {expected:,} bytes"
    return f"{request.method} {request.scope['path']}, {read}"


# --- the request head (httptools) ----------------------------------------------------------------------------------


class _HeadRefused(Exception):
    """Raised in a parser callback: stops httptools at once; :class:`_ParserGuard` turns it into the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _ParserGuard:
    """The connection's httptools parser, as uvicorn's protocol calls it. httptools reports an exception raised
    in a callback as ``HttpParserCallbackError`` (the exception as its ``__context__``), which uvicorn would log
    and answer 400; a :class:`_HeadRefused` is answered here instead."""

    def __init__(self, parser: Any, protocol: _HeadLimits) -> None:
        self._parser, self._protocol = parser, protocol
        # What uvicorn calls on every request, bound once (a __getattr__ look-up costs ~1 us a call).
        self.get_http_version, self.get_method = parser.get_http_version, parser.get_method
        self.should_keep_alive, self.should_upgrade = parser.should_keep_alive, parser.should_upgrade

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as error:
            refused = error.__context__
            if not isinstance(refused, _HeadRefused):
                raise
            self._protocol._refuse(refused.status, refused.detail)

    def __getattr__(self, name: str) -> Any:  # anything else uvicorn may call
        return getattr(self._parser, name)


class _HeadLimits:
    """Head limits for uvicorn's ``HttpToolsProtocol`` (mixed in by :func:`limited_httptools_protocol`).

    The size is checked on the bytes before the parser sees them: ``data_received`` counts the bytes of a head
    as they arrive and refuses a read in which the head would pass the limit without ending (its blank line is
    not within the bytes left), so no more than MAX_HEADER_BYTES of a head are ever parsed or kept (httptools
    would otherwise join the pieces of a long header value for ever). The parser callbacks count the fields
    (``on_header``) and, for a head that begins in the middle of a read (pipelining, where the bytes before it
    belong to the previous request), its size as parsed (``on_url``, ``on_header``: the target and the fields).
    """

    max_header_bytes = MAX_HEADER_BYTES
    max_header_fields = MAX_HEADER_FIELDS
    header_timeout = HEADER_TIMEOUT_SECONDS
    linger_seconds = LINGER_SECONDS

    # uvicorn's protocol attributes used here
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: Any
    parser: Any
    cycle: Any
    pipeline: Any
    server_state: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parser = _ParserGuard(self.parser, self)
        self._messages = 0  # requests whose body has been read on this connection
        self._head_open = True  # a head is being read (or awaited): from the end of the previous request on
        self._head_begun = False  # ... and its first byte has arrived
        self._head_size = self._head_fields = self._head_received = 0
        self._head_tail = b""  # the last bytes of the head received so far (its blank line may span two reads)
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._refusal: tuple[int, str] | None = None  # the answer to a refused head, until it is written

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered: whatever the client still sends is dropped unparsed
            return
        head_open, messages = self._head_open, self._messages
        if head_open and not self._head_ends_in_time(data):
            self._refuse(431, f"request header fields over {self.max_header_bytes:,} bytes")
            return
        super().data_received(data)
        if self._refused or not self._head_open or self.transport.is_closing():
            return
        if head_open and messages == self._messages:  # all of this read was head
            self._head_received += len(data)
            self._head_tail = data[-3:] if len(data) >= 3 else (self._head_tail + data)[-3:]
            if self._head_received > self.max_header_bytes:
                self._refuse(431, f"request header fields over {self.max_header_bytes:,} bytes")
                return
        if self._head_timer is None and (self._head_begun or messages == self._messages):  # a head came in part
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _head_ends_in_time(self, data: bytes) -> bool:
        """Whether the head being read ends (blank line) within the limit, or all of ``data`` fits anyway."""
        room = self.max_header_bytes - self._head_received
        if len(data) <= room:
            return True
        window = self._head_tail + data[:room]
        start = len(window) - len(window.lstrip(b"\r\n")) if self._head_received == 0 else 0  # empty lines first
        return window.find(b"\r\n\r\n", start) >= 0

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_header_bytes:
            raise _HeadRefused(431, f"request header fields over {self.max_header_bytes:,} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_fields > self.max_header_fields:
            raise _HeadRefused(431, f"more than {self.max_header_fields} request header fields")
        if self._head_size > self.max_header_bytes:
            raise _HeadRefused(431, f"request header fields over {self.max_header_bytes:,} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._messages += 1
        self._head_open, self._head_begun = True, False
        self._head_size = self._head_fields = self._head_received = 0
        self._head_tail = b""

    # the limits

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._refused or not self._head_open or self.transport.is_closing():
            return
        if not self._head_begun:  # no request started (at most empty lines)
            if self._answers_owed():  # the client is waiting for an answer, not idling
                self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)
            else:  # closed quietly, like an idle keep-alive connection
                self.transport.close()
            return
        self._refuse(408, f"request head not complete within {self.header_timeout:g} s")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` and close: the rest of the request is neither parsed nor kept. Answers still owed to
        earlier requests on the connection (pipelining) are written first."""
        self._refused = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        log.warning("%s, answered %d", detail, status)
        self._refusal = status, detail
        if not self._answers_owed():
            self._answer_refusal()

    def _answers_owed(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self._answers_owed():
            self._answer_refusal()

    def _answer_refusal(self) -> None:
        status, detail = self._refusal
        self._refusal = None
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")]
        for name, value in self.server_state.default_headers:  # server, date (as on uvicorn's own answers)
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        # Lingering close: half-close now, drop what still arrives, close on the client's EOF or after a moment.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(self.linger_seconds, self.transport.close)


def limited_httptools_protocol(
    *,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_header_fields: int = MAX_HEADER_FIELDS,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the head limits, for ``uvicorn.run(http=...)`` (needs httptools)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    limits = {"max_header_bytes": max_header_bytes, "max_header_fields": max_header_fields,
              "header_timeout": header_timeout}  # fmt: skip
    return type("LimitedHttpToolsProtocol", (_HeadLimits, HttpToolsProtocol), limits)
