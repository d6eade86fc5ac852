"""The pool's message channel: whole messages, in order, whatever their size, then EOF."""

from __future__ import annotations

import socket
import threading

import pytest

from executors.channel import Channel


def pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    return Channel(a), Channel(b)


def test_messages_arrive_whole_and_in_order_small_and_large():
    ours, theirs = pair()
    big = bytes(range(256)) * 8192  # 2 MiB: many reads, and more than the socket buffer holds
    sender = threading.Thread(target=lambda: [theirs.send(m) for m in (b"a", big, b"", b"z")])
    sender.start()
    assert [ours.receive() for _ in range(4)] == [b"a", big, b"", b"z"]
    sender.join()


def test_receive_ready_takes_every_whole_message_that_arrived_and_keeps_a_partial_one():
    ours, theirs = pair()
    theirs.send(b"one")
    theirs.send(b"two")
    theirs.sock.sendall(b"\0\0\0\0\0\0\0\x05th")  # half of a third message
    assert ours.receive_ready() == [b"one", b"two"]
    assert ours.receive_ready() == []
    theirs.sock.sendall(b"ree")
    assert ours.receive_ready() == [b"three"]


def test_eof_comes_after_the_last_message():
    ours, theirs = pair()
    theirs.send(b"last")
    theirs.close()
    assert ours.receive_ready() == [b"last"]
    with pytest.raises(EOFError):
        ours.receive_ready()
    with pytest.raises(EOFError):
        ours.receive()
