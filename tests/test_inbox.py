"""The scheduler's inbox wakes its waiting loop for messages from threads and signal handlers."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from scheduler.drivers.inbox import Inbox


def test_a_message_from_another_thread_wakes_the_wait():
    inbox = Inbox()
    threading.Timer(0.2, inbox.put, args=(("result", 1),)).start()
    started = time.monotonic()
    assert inbox.wait(30) == []
    assert time.monotonic() - started < 10
    assert inbox.take() == [("result", 1)] and inbox.take() == []
    inbox.close()


def test_a_queued_message_returns_at_once_and_a_timeout_returns_nothing():
    inbox = Inbox()
    inbox.put(("a",))
    inbox.put(("b",))
    assert inbox.wait(30) == [] and inbox.take() == [("a",), ("b",)]
    started = time.monotonic()
    assert inbox.wait(0.2) == [] and inbox.take() == []
    assert time.monotonic() - started >= 0.19
    inbox.close()


def test_a_ready_handle_is_returned():
    inbox = Inbox()
    ours, theirs = socket.socketpair()
    theirs.send(b"x")
    assert inbox.wait(30, [ours]) == [ours]
    inbox.close()
    ours.close()
    theirs.close()


def test_a_signal_handler_putting_a_message_wakes_the_wait():
    inbox = Inbox()
    previous = signal.signal(signal.SIGUSR1, lambda *_: inbox.put(("cancel", "signal")))
    try:
        threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        inbox.wait(30)
        assert time.monotonic() - started < 10
        assert inbox.take() == [("cancel", "signal")]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        inbox.close()


def test_spinning_sees_a_ready_handle_a_message_and_the_timeout():
    inbox = Inbox()
    ours, theirs = socket.socketpair()
    threading.Timer(0.05, theirs.send, args=(b"x",)).start()
    assert inbox.wait(30, [ours], spin=5.0) == [ours]  # seen while spinning, long before 30 s
    threading.Timer(0.05, inbox.put, args=(("result", 2),)).start()
    assert inbox.wait(30, [], spin=5.0) == [] and inbox.take() == [("result", 2)]
    started = time.monotonic()
    assert inbox.wait(0.3, [], spin=0.1) == []  # spins 0.1 s, then sleeps the rest
    assert 0.29 <= time.monotonic() - started < 10
    inbox.close()
    ours.close()
    theirs.close()


def test_queued_messages_do_not_hide_a_ready_handle():
    inbox = Inbox()
    ours, theirs = socket.socketpair()
    theirs.send(b"x")
    inbox.put(("event", 1))
    assert inbox.wait(30, [ours]) == [ours]  # a stream of messages must not starve the workers
    assert inbox.take() == [("event", 1)]
    inbox.close()
    ours.close()
    theirs.close()
