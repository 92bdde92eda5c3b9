"""Connections of the agent server: uvicorn's httptools protocol with a deadline on each request and a header cap.

uvicorn closes idle keep-alive connections but never a request that arrives slowly: a client sending a header byte
now and then (slowloris) or trickling a body holds its connection for as long as it likes. Here a request must be
complete, headers and body, within ``request_timeout_s`` of the connection opening or of the previous response.

Imports uvicorn (the ``bcarena[serve]`` extra): only the server's start-up imports this module.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # request line + headers of one request
_TIMEOUT_TEXT = b"the request did not arrive in time\n"
REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT)
)


class DeadlineProtocol(HttpToolsProtocol):
    """One connection; each request must arrive in full within ``request_timeout_s`` seconds.

    uvicorn makes one instance per connection from the class it is given, so the timeout is a class attribute:
    ``deadline_protocol`` makes the subclass for one server's settings.
    """

    request_timeout_s: float = 30.0
    _deadline: asyncio.TimerHandle | None = None
    _header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn: BaseTransport
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # read in full: the handler's own time is not limited here

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the clock for the next request on this connection

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > MAX_HEADER_BYTES:
            # Raised inside the parser's callback: uvicorn answers 400 and closes the connection.
            raise ValueError(f"request headers exceed {MAX_HEADER_BYTES} bytes")

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # still in the headers: no handler to answer
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()


def deadline_protocol(request_timeout_s: float) -> type[DeadlineProtocol]:
    """The protocol class (uvicorn's ``http=``) whose requests must arrive within ``request_timeout_s`` seconds."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"request_timeout_s": request_timeout_s})
