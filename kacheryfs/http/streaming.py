"""Every streamed answer of the node: its end is always sent whole, and a sized body may end short.

Two fixes to starlette's StreamingResponse as served by hypercorn (ASGI spec 2.1, so starlette
runs the body beside a task that listens for the disconnect):

* The end of the message is sent shielded. Sending it makes hypercorn finish the request: it tells
  that listener the request is over ("http.disconnect"), which then cancels the body's task while
  that task is still inside hypercorn, between recycling the connection and starting its idle
  timer (or, once the node is stopping, closing it). The connection was then left open with no
  idle timer: a client keeping it alive (a requests Session after /downloadFileData, a browser
  after a gateway download) held a stop for the whole grace (10 s instead of ~0.1 s).
* A body with a Content-Length that ends short (a gateway download whose transfer failed mid-way,
  a file shorter than its stat) leaves the message unfinished: the end would be refused by h11
  ("Too little data for declared Content-Length", logged by hypercorn as an ERROR traceback for
  what the route had already logged in one line). hypercorn then closes the connection and the
  client sees a truncated body, an error in every HTTP client, never a complete-looking one.

A client going away mid-stream needs nothing here: starlette stops the body on the disconnect.
"""

from __future__ import annotations

import trio
from starlette.responses import StreamingResponse
from starlette.types import Send


class StreamedResponse(StreamingResponse):
    async def stream_response(self, send: Send) -> None:
        length = self.headers.get("content-length")
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        async for chunk in self.body_iterator:
            data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            sent += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if length is None or sent >= int(length):
            with trio.CancelScope(shield=True):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
