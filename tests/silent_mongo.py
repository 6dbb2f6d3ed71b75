"""A loopback server that speaks just enough of MongoDB's wire protocol to look alive.

It answers the connection handshake (``hello``/``isMaster``) and ``ping``, then never answers
anything else: a server that accepts connections, passes a health check and goes silent (a
stopped process behind a proxy, a full disk, a network that drops replies). ``mode="mute"``
answers nothing at all.
"""

from __future__ import annotations

import datetime as dt
import socket
import struct
import threading

import bson

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
HANDSHAKE = {"hello", "ismaster"}
ANSWERED = HANDSHAKE | {"ping", "buildinfo", "endsessions"}


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError
        data += chunk
    return data


def _command(op: int, body: bytes) -> tuple[str, int]:
    """The command's name and the offset of its document in ``body``."""
    if op == OP_MSG:
        start = 5  # flagBits, then section kind 0
    else:  # OP_QUERY: flags, full collection name, skip, limit, query
        start = body.index(b"\0", 4) + 1 + 8
    doc = bson.decode(body[start:start + struct.unpack("<i", body[start:start + 4])[0]])
    return next(iter(doc)).lower(), start


def _reply(op: int, request_id: int, doc: dict) -> bytes:
    payload = bson.encode(doc)
    if op == OP_MSG:
        body, reply_op = struct.pack("<I", 0) + b"\0" + payload, OP_MSG
    else:
        body, reply_op = struct.pack("<iqii", 0, 0, 0, 1) + payload, OP_REPLY
    return struct.pack("<iiii", 16 + len(body), 1, request_id, reply_op) + body


class SilentMongo:
    """``with SilentMongo() as server: server.url``; the port is chosen free."""

    def __init__(self, mode: str = "handshake") -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self.closed = threading.Event()

    def __enter__(self) -> SilentMongo:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # kept open: the client must time out, not see a close
            if self.mode == "handshake":
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                length, request_id, _, op = struct.unpack("<iiii", _read_exactly(conn, 16))
                body = _read_exactly(conn, length - 16)
                name, _ = _command(op, body)
                if name not in ANSWERED:
                    continue  # never answered
                doc: dict = {"ok": 1.0}
                if name in HANDSHAKE:
                    doc.update(isWritablePrimary=True, ismaster=True, maxWireVersion=21,
                               minWireVersion=0, maxBsonObjectSize=16 * 1024 * 1024,
                               maxMessageSizeBytes=48_000_000, maxWriteBatchSize=100_000,
                               localTime=dt.datetime.now(dt.UTC), connectionId=1,
                               logicalSessionTimeoutMinutes=30, readOnly=False)
                conn.sendall(_reply(op, request_id, doc))
        except (ConnectionError, OSError, ValueError, struct.error):
            return
