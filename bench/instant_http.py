"""An HTTP/1.1 server that answers every request at once with a fixed `/store` success, doing
nothing else: what a client's own POST costs when the server costs nothing (compare.py uses it for
the 1.2.0 client's floor). Prints its port, then serves until killed.

    python bench/instant_http.py
"""

from __future__ import annotations

import json
import socket
import threading

BODY = json.dumps({"success": True, "sha1": "0" * 40, "manifestSha1": None}).encode()
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _answer(conn: socket.socket) -> None:
    with conn:
        buf = b""
        while data := conn.recv(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                need = _content_length(head)
                while len(rest) < need and (data := conn.recv(65536)):
                    rest += data
                conn.sendall(ANSWER)
                buf = rest[need:]


def main() -> None:
    srv = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_answer, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
