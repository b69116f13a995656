"""Runs `docker exec`s and reads their output straight off dockerd's socket, with a deadline and a cap, for the
Docker runtime; reads the multiplexed stream (8-byte frame headers: stream, 0, 0, 0, big-endian length), writes
nothing. The SDK's own readers block without a deadline, and with demux=True join every frame onto the bytes so
far (quadratic in the output's size)."""

from __future__ import annotations

import selectors
import struct
import time
from collections.abc import Callable
from typing import Any

STDOUT, STDERR = 1, 2
EOF, DEADLINE, STOPPED = "eof", "deadline", "stopped"
READ_CHUNK_BYTES = 65536
_HEADER = struct.Struct(">BxxxL")


class Frames:
    """Splits the multiplexed stream into (stream, bytes) pieces as they arrive, whatever the chunking.

    >>> frames = Frames()
    >>> frames.feed(b"\\x01\\0\\0\\0\\0\\0\\0\\x03ab") + frames.feed(b"c\\x02\\0\\0\\0\\0\\0\\0\\x01e")
    [(1, b'ab'), (1, b'c'), (2, b'e')]
    """

    def __init__(self) -> None:
        self._header = b""
        self._stream = 0
        self._left = 0  # bytes of the current frame still to come

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        pieces: list[tuple[int, bytes]] = []
        view = memoryview(chunk)
        while view:
            if self._left == 0:
                need = _HEADER.size - len(self._header)
                self._header += bytes(view[:need])
                view = view[need:]
                if len(self._header) == _HEADER.size:
                    self._stream, self._left = _HEADER.unpack(self._header)
                    self._header = b""
                continue
            piece = bytes(view[:self._left])
            view = view[len(piece):]
            self._left -= len(piece)
            pieces.append((self._stream, piece))
        return pieces


class ExecStream:
    """The output of one started exec. `pump` feeds it to a sink until the end, a deadline, or the sink says stop;
    it may be called again (to drain after killing what overran); `close` drops the connection.

    It reads through the HTTP response's buffered reader, not the bare socket: reading the 101 response's headers
    may already have pulled the first frames of a fast command into that buffer."""

    def __init__(self, api: Any, exec_id: str) -> None:
        self._stream = api.exec_start(exec_id, stream=True)  # the SDK's CancellableStream; its own reader stays unused
        self._buf = self._stream._response.raw._fp.fp  # io.BufferedReader over the socket (what the SDK's close uses)
        self._buf.raw._sock.setblocking(False)  # an empty read returns b"" now instead of waiting
        self._frames = Frames()
        self.ended = False

    def pump(self, sink: Callable[[int, bytes], bool], deadline: float) -> str:
        """Feed every (stream, bytes) piece to `sink` until EOF, `deadline` (time.monotonic()) or `sink` returning
        False: EOF, DEADLINE or STOPPED."""
        if self.ended:
            return EOF
        with selectors.DefaultSelector() as sel:
            sel.register(self._buf.fileno(), selectors.EVENT_READ)
            while True:
                chunk = self._buf.read1(READ_CHUNK_BYTES)  # what is buffered, else one read that does not wait
                if not chunk:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return DEADLINE
                    if not sel.select(timeout=remaining):
                        continue
                    chunk = self._buf.read1(READ_CHUNK_BYTES)
                    if not chunk:  # readable, yet nothing: the connection closed
                        self.ended = True
                        return EOF
                for stream, data in self._frames.feed(chunk):
                    if not sink(stream, data):
                        return STOPPED
                if time.monotonic() > deadline:
                    return DEADLINE

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass


class Capped:
    """A sink that keeps at most `stdout_cap + 1` bytes of stdout (then asks to stop) and `stderr_cap` of stderr.

    >>> c = Capped(stdout_cap=3, stderr_cap=2); [c(1, b"ab"), c(2, b"xyz"), c(1, b"cdef")]
    [True, True, False]
    >>> bytes(c.stdout), bytes(c.stderr), c.over
    (b'abcd', b'xy', True)
    """

    def __init__(self, stdout_cap: int, stderr_cap: int) -> None:
        self.stdout, self.stderr = bytearray(), bytearray()
        self._caps = {STDOUT: stdout_cap + 1, STDERR: stderr_cap}
        self.stdout_cap = stdout_cap

    def __call__(self, stream: int, data: bytes) -> bool:
        buf = self.stdout if stream == STDOUT else self.stderr
        room = self._caps.get(stream, 0) - len(buf)
        if room > 0:
            buf += data[:room]
        return not self.over

    @property
    def over(self) -> bool:
        return len(self.stdout) > self.stdout_cap
