"""An ASGI middleware in front of the app: the API key, then the upload limit.

FastAPI has no upload limit of its own and reads a request's whole body
before any dependency runs. This guard answers before the app reads the
body: 401 for a ``/v1`` request without the key, 413 for a declared
``Content-Length`` over the limit, and 413 as soon as a streamed (chunked)
body passes the limit, whatever the app was doing with it.

Before a 413 it reads and discards the rest of the body, up to
:data:`DRAIN_MAX_BYTES` and :data:`DRAIN_SECONDS`: many clients (Python's
urllib, http.client, requests with a file object, most languages' simple
HTTP clients) write the whole body before they read any answer, and a
connection closed under them ends in "broken pipe" instead of the 413. A
client that sent ``Expect: 100-continue`` (curl, for large bodies) has sent
no body yet and gets its answer at once; so does a body too large to drain.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIX = "/v1/"
KEY_HEADER = b"x-api-key"
# What is read and thrown away of a refused body so that the client can read the 413 (see above):
# beyond these the connection is closed under the client, as before.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 15.0


class BodyTooLarge(Exception):
    pass


def key_matches(headers: dict[bytes, bytes], api_key: str) -> bool:
    """Whether the request carries ``api_key`` (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""
    given = headers.get(KEY_HEADER)
    auth = headers.get(b"authorization", b"")
    if given is None and auth[:7].lower() == b"bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given, api_key.encode())


async def send_error(send: Send, status: int, message: str, *, headers: list[tuple[bytes, bytes]] = (),
                     **extra: Any) -> None:
    body = json.dumps({"error": message, **extra}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def drain(receive: Receive, max_bytes: int, seconds: float = DRAIN_SECONDS) -> bool:
    """Read and discard the rest of a request's body; whether it ended within the bounds."""
    deadline = time.monotonic() + seconds
    read = 0
    while read <= max_bytes:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            return False
        if message["type"] != "http.request":  # http.disconnect: the client gave up
            return False
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body: int, api_key: str | None) -> None:
        self.app, self.max_body, self.api_key = app, max_body, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key and scope["path"].startswith(PROTECTED_PREFIX) and not key_matches(headers, self.api_key):
            await send_error(send, 401, "missing or wrong API key",
                             hint="send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                             headers=[(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await send_error(send, 400, "Content-Length is not a number")
                return
            if length > self.max_body:
                if length <= self.max_body + DRAIN_MAX_BYTES and headers.get(b"expect", b"").lower() != b"100-continue":
                    await drain(receive, DRAIN_MAX_BYTES)
                await self._too_large(send)
                return
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["exceeded"] = True
                    if message.get("more_body", False):
                        await drain(receive, DRAIN_MAX_BYTES)
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the app's answer to a body it could not finish reading
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await send_error(send, 413, f"the upload is larger than the server's limit of {self.max_body} bytes",
                         hint="send a smaller file (the limit is elir serve --max-upload-mb)")
