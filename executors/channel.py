"""Length-prefixed messages over a stream socket: the local pool's line to each worker;
and a wake-up pipe, which makes a loop waiting on such lines look again.

multiprocessing's Connection does the same with two reads per message and a poll
(a selector built per call) to learn whether another one waits. Here one read
takes whatever has arrived and every whole message in it: on a chain of no-op
nodes that was a tenth of the scheduler's time per node.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

_HEADER = struct.Struct("!Q")
_CHUNK = 1 << 16


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._sending = threading.Lock()  # an operator's own threads may emit events too
        self._buffer = bytearray()
        self._closed = False  # the other end closed; whole messages may still be buffered

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, payload: bytes) -> None:
        header = _HEADER.pack(len(payload))
        with self._sending:
            if len(payload) < _CHUNK:
                self.sock.sendall(header + payload)  # one write for the usual small message
            else:
                self.sock.sendall(header)
                self.sock.sendall(payload)

    def receive(self) -> bytes:
        """The next message, waiting for it; EOFError once the other end has closed."""
        while (message := self._take()) is None:
            chunk = self.sock.recv(_CHUNK)
            if not chunk:
                raise EOFError("the other end closed the channel")
            self._buffer += chunk
        return message

    def receive_ready(self) -> list[bytes]:
        """The messages that have arrived, without waiting; EOFError once the other end has
        closed and every message before that was taken."""
        while not self._closed:
            try:
                chunk = self.sock.recv(_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not chunk:
                self._closed = True
            self._buffer += chunk
            if len(chunk) < _CHUNK:
                break  # the rest, if any, is still on its way: the next readiness brings it
        messages = []
        while (message := self._take()) is not None:
            messages.append(message)
        if not messages and self._closed:
            raise EOFError("the other end closed the channel")
        return messages

    def close(self) -> None:
        self.sock.close()

    def _take(self) -> bytes | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        message = bytes(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        return message


class Waker:
    """A pipe to wait on beside the channels: `wake()` makes the wait return."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        """Safe from any thread and in a signal handler; never blocks."""
        try:
            os.write(self._write, b"\0")
        except OSError:
            pass  # full of wake-ups already, or closed: either way nothing is lost

    def drain(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop waking. The write end closes with the object itself, so a late `wake()` from
        another thread fails on the closed pipe and never writes to a reused descriptor."""
        if self._read >= 0:
            os.close(self._read)
            self._read = -1

    def __del__(self) -> None:
        self.close()
        os.close(self._write)
