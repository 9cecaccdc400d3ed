"""A streamed response with a Content-Length whose body may end short.

A gateway download whose transfer fails mid-way, or a file that ends before its stat said, stops
its body early: the client must see a truncated body (an error in every HTTP client), never a
complete-looking one. Starlette's StreamingResponse would still send the end of the message, which
h11 refuses before the declared length: hypercorn logged "Error in ASGI Framework" with an h11
LocalProtocolError traceback at ERROR for what the route had already logged in one line. Ending
short, this response leaves the message unfinished instead, and hypercorn closes the connection
(HTTPStream/H11Protocol: an app that returns mid-body gets its connection closed, not recycled).
A client that goes away mid-stream needs nothing here: starlette stops the body on the disconnect.
"""

from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.types import Send


class SizedStreamingResponse(StreamingResponse):
    async def stream_response(self, send: Send) -> None:
        declared = int(self.headers["content-length"])
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        async for chunk in self.body_iterator:
            data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            sent += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if sent >= declared:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
