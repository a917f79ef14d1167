"""shmif.Interface: sending, receiving, waiting, counters, life cycle."""

import os
import selectors
import signal
import subprocess
import sys
import threading
import time

import pytest

import shmif
from conftest import BROADCAST, frame


def test_two_interfaces_exchange_frames(pair):
    a, b = pair
    assert a.mac != b.mac
    to_b = frame(b.mac, a.mac, b"to b")
    to_a = frame(a.mac, b.mac, b"to a")
    a.send(to_b)
    b.send(to_a)
    assert b.recv(timeout=2) == to_b
    assert a.recv(timeout=2) == to_a
    # Broadcast reaches the other one; nobody gets its own frames back.
    bc = frame(BROADCAST, a.mac, b"all")
    a.send(bc)
    assert b.recv(timeout=2) == bc
    assert a.try_recv() is None
    assert b.try_recv() is None


def test_unicast_filter_and_promiscuous(bus):
    with shmif.Interface(bus) as a, shmif.Interface(bus) as b, shmif.Interface(
        bus, promiscuous=True
    ) as spy:
        f = frame("b2:a0:00:00:00:99", a.mac, b"for someone else")
        a.send(f)
        assert spy.recv(timeout=2) == f
        assert b.recv(timeout=0.2) is None
        assert b.counters.rx_filtered == 1
        assert spy.promiscuous and not b.promiscuous
        b.promiscuous = True
        a.send(f)
        assert b.recv(timeout=2) == f


def test_frames_sent_before_attaching_are_not_received(bus):
    with shmif.Interface(bus) as a:
        a.send(frame(BROADCAST, a.mac, b"early"))
        with shmif.Interface(bus) as b:
            assert b.try_recv() is None
            late = frame(BROADCAST, a.mac, b"late")
            a.send(late)
            assert b.recv(timeout=2) == late


def test_send_accepts_bytes_like_and_refuses_others(pair):
    a, b = pair
    f = frame(b.mac, a.mac, b"x" * 50)
    a.send(bytearray(f))
    a.send(memoryview(f))
    assert [b.recv(timeout=2), b.recv(timeout=2)] == [f, f]
    with pytest.raises(TypeError):
        a.send("not bytes")
    with pytest.raises(TypeError):
        a.send(60)  # bytes(60) would be 60 zeros: refused, not sent
    assert a.counters.tx_frames == 2


@pytest.mark.parametrize("length", [0, 13, 1515, 9000])
def test_frame_size_is_checked(pair, length):
    a, b = pair
    with pytest.raises(shmif.FrameSizeError) as e:
        a.send(b"\xff" * length)
    assert isinstance(e.value, ValueError) and isinstance(e.value, shmif.BusError)
    assert f"frame of {length} bytes cannot be sent" in str(e.value)
    with pytest.raises(shmif.FrameSizeError):
        a.send_batch([frame(b.mac, a.mac), b"\xff" * length])
    # Nothing was sent: the batch is checked before any frame goes out.
    assert a.counters.tx_frames == 0
    assert b.recv(timeout=0.1) is None


def test_largest_and_smallest_frames(pair):
    a, b = pair
    big = frame(b.mac, a.mac, b"\xab" * 1500)
    small = frame(b.mac, a.mac, b"")
    assert (len(big), len(small)) == (shmif.MAX_FRAME_LEN, shmif.MIN_FRAME_LEN)
    a.send(big)
    a.send(small)
    assert b.recv(timeout=2) == big
    assert b.recv(timeout=2) == small


def test_send_batch_in_order(pair):
    a, b = pair
    frames = [frame(b.mac, a.mac, bytes([i]) * (i + 1)) for i in range(100)]
    assert a.send_batch(frames) == 100
    assert a.send_batch([]) == 0
    got = [b.recv(timeout=2) for _ in frames]
    assert got == frames
    assert b.try_recv() is None


def test_recv_timeout(pair):
    a, b = pair
    t = time.monotonic()
    assert b.recv(timeout=0.3) is None
    waited = time.monotonic() - t
    assert 0.3 <= waited < 1.5
    t = time.monotonic()
    assert b.recv(timeout=0) is None
    assert time.monotonic() - t < 0.1
    with pytest.raises(ValueError):
        b.recv(timeout=-1)
    with pytest.raises(ValueError):
        b.recv(timeout=float("nan"))


def test_recv_waits_for_a_frame_sent_later(pair):
    a, b = pair
    f = frame(b.mac, a.mac, b"later")
    threading.Timer(0.2, a.send, (f,)).start()
    t = time.monotonic()
    assert b.recv(timeout=5) == f
    assert 0.15 <= time.monotonic() - t < 4


def test_recv_releases_the_gil(pair):
    a, b = pair
    got = []
    th = threading.Thread(target=lambda: got.append(b.recv(timeout=1.0)))
    th.start()
    # Pure-Python work runs meanwhile: the receiving thread is not holding the GIL.
    spins, end = 0, time.monotonic() + 0.5
    while time.monotonic() < end:
        spins += 1
    th.join()
    assert got == [None]
    assert spins > 10_000


def test_ctrl_c_interrupts_a_blocking_recv(bus):
    code = (
        "import shmif, sys\n"
        f"i = shmif.Interface({str(bus)!r})\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    i.recv()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(3)\n"
    )
    # Run away from the source tree, whose shmif/ lacks the native module.
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=bus.parent
    )
    try:
        assert p.stdout.readline() == "ready\n"
        time.sleep(0.3)
        t = time.monotonic()
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=5) == 3
        assert time.monotonic() - t < 2
        assert p.stdout.read() == "interrupted\n"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_fileno_with_selectors(pair):
    a, b = pair
    sel = selectors.DefaultSelector()
    sel.register(b.fileno(), selectors.EVENT_READ)
    try:
        assert b.fileno() == b.fileno()  # one descriptor, owned by the interface
        b.clear_wakeups()
        assert sel.select(timeout=0.2) == []
        f = frame(b.mac, a.mac, b"wake up")
        a.send(f)
        events = sel.select(timeout=2)
        assert [key.fd for key, _ in events] == [b.fileno()]
        b.clear_wakeups()
        assert b.try_recv() == f
        assert b.try_recv() is None
        # Cleared: quiet again until the next frame.
        assert sel.select(timeout=0.2) == []
        a.send(f)
        assert len(sel.select(timeout=2)) == 1
    finally:
        sel.close()


def test_counters(pair):
    a, b = pair
    assert a.counters == shmif.Counters()
    sizes = [60, 100, 1514]
    for n in sizes:
        a.send(frame(b.mac, a.mac, b"\0" * (n - 14)))
    a.send(frame("b2:a0:00:00:00:77", a.mac, b""))  # for nobody here
    for _ in sizes:
        assert b.recv(timeout=2) is not None
    assert b.recv(timeout=0.1) is None
    ca, cb = a.counters, b.counters
    assert isinstance(ca, shmif.Counters)
    assert (ca.tx_frames, ca.tx_bytes) == (4, sum(sizes) + 14)
    assert (cb.rx_frames, cb.rx_bytes) == (3, sum(sizes))
    assert cb.rx_filtered == 1
    assert (cb.tx_frames, ca.rx_frames, cb.overruns, cb.malformed) == (0, 0, 0, 0)
    with pytest.raises(AttributeError):
        ca.tx_frames = 0  # a frozen snapshot


def test_recv_frame_metadata(pair):
    a, b = pair
    f = frame(b.mac, a.mac, b"meta")
    a.send(f)
    got = b.recv_frame(timeout=2)
    assert isinstance(got, shmif.Frame)
    assert got.data == f
    assert got.sender == a.sender_id != b.sender_id
    assert abs(got.time - time.time()) < 60
    assert 0 <= got.usec < 1_000_000
    assert b.try_recv_frame() is None
    assert b.recv_frame(timeout=0.05) is None


def test_chosen_mac(bus):
    with shmif.Interface(bus, mac="02:00:00:00:00:01") as a:
        assert a.mac == "02:00:00:00:00:01"
    with shmif.Interface(bus, mac=b"\x02\x00\x00\x00\x00\x02") as a:
        assert a.mac == "02:00:00:00:00:02"
    with pytest.raises(ValueError, match="not a MAC address"):
        shmif.Interface(bus, mac="02:00:00:00:00")
    with pytest.raises(ValueError):
        shmif.Interface(bus, mac=b"\x02\x00")


def test_iteration_ends_when_closed(pair):
    a, b = pair
    frames = [frame(b.mac, a.mac, bytes([i])) for i in range(5)]

    def later():
        time.sleep(0.1)
        a.send_batch(frames)
        time.sleep(0.3)
        b.close()

    th = threading.Thread(target=later)
    th.start()
    got = list(b)  # blocks until close
    th.join()
    assert got == frames


def test_close_wakes_a_blocked_recv(pair):
    a, b = pair
    errors = []

    def rx():
        try:
            b.recv()
        except shmif.InterfaceClosedError as e:
            errors.append(e)

    th = threading.Thread(target=rx)
    th.start()
    time.sleep(0.2)
    t = time.monotonic()
    b.close()
    th.join(timeout=5)
    assert not th.is_alive()
    assert time.monotonic() - t < 1
    assert len(errors) == 1 and "closed" in str(errors[0])


def test_context_manager_and_close(bus):
    with shmif.Interface(bus) as a:
        assert not a.closed
        fd = a.fileno()
        os.fstat(fd)
    assert a.closed
    with pytest.raises(OSError):
        os.fstat(fd)  # the wake-up descriptor was closed with it
    for call in (lambda: a.send(frame(BROADCAST, a.mac)), a.try_recv, a.recv, a.fileno):
        with pytest.raises(shmif.InterfaceClosedError) as e:
            call()
        assert isinstance(e.value, ValueError)
    a.close()  # twice is fine
    assert "closed" in repr(a)


def test_mode_of_a_new_bus(tmp_path):
    p = tmp_path / "bus"
    old = os.umask(0)
    try:
        with shmif.Interface(p, mode=0o640):
            pass
    finally:
        os.umask(old)
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert os.path.getsize(p) == shmif.BUS_SIZE
    with pytest.raises(ValueError):
        shmif.Interface(tmp_path / "other", mode=0o170000)


def test_path_property(bus):
    with shmif.Interface(bus) as a:
        assert os.fspath(a.path) == str(bus)
        assert str(bus) in repr(a)


def test_recv_batch(pair):
    a, b = pair
    frames = [frame(b.mac, a.mac, bytes([i]) * 30) for i in range(10)]
    t = time.monotonic()
    assert b.recv_batch(timeout=0.2) == []
    assert time.monotonic() - t >= 0.2
    assert b.recv_batch(timeout=0) == []
    a.send_batch(frames)
    assert b.recv_batch(4, timeout=1) == frames[:4]
    assert b.recv_batch(100, timeout=1) == frames[4:]
    assert b.recv_batch(0) == []
    threading.Timer(0.1, a.send, (frames[0],)).start()
    assert b.recv_batch(timeout=5) == frames[:1]  # waits for the first frame


def test_wake_delay_defers_the_wake_up(pair):
    a, b = pair
    assert a.wake_delay == 0
    a.wake_delay = 0.5
    assert a.wake_delay == 0.5
    with pytest.raises(ValueError, match="^wake_delay must be a non-negative number of seconds, not -1"):
        a.wake_delay = -1
    sel = selectors.DefaultSelector()
    sel.register(b.fileno(), selectors.EVENT_READ)
    try:
        b.clear_wakeups()
        f = frame(b.mac, a.mac, b"deferred")
        t = time.monotonic()
        a.send(f)
        # The frame is on the ring at once (a polling reader sees it) ...
        assert b.try_recv() == f
        # ... but the wake-up write comes only with the delay.
        assert sel.select(timeout=0.1) == []
        assert len(sel.select(timeout=3)) == 1
        assert time.monotonic() - t >= 0.3
    finally:
        sel.close()
    a.wake_delay = 0
    assert a.wake_delay == 0


def test_spin(pair):
    a, b = pair
    assert b.spin == 0
    b.spin = 0.001
    assert b.spin == 0.001
    b.spin = float("inf")
    assert b.spin == float("inf")
    b.spin = 0.0005
    f = frame(b.mac, a.mac, b"spun")
    threading.Timer(0.05, a.send, (f,)).start()
    assert b.recv(timeout=2) == f
    with pytest.raises(ValueError, match="^spin must be"):
        b.spin = -0.1
    with pytest.raises(ValueError, match="^spin must be .*, not NaN$"):
        b.spin = float("nan")


def test_rx_coalesce(pair):
    a, b = pair
    assert b.rx_coalesce == 0.0001
    b.rx_coalesce = 0
    assert b.rx_coalesce == 0
    b.rx_coalesce = 0.00025
    assert b.rx_coalesce == 0.00025
    with pytest.raises(ValueError, match="^rx_coalesce must be"):
        b.rx_coalesce = -1
    # A NetBSD bus: a burst is followed by no nap (a nap could cost frames).
    for k in range(20):
        a.send(frame(b.mac, a.mac, b"burst %d" % k))
    assert len(b.recv_batch(max_frames=64, timeout=1)) == 20
    b.wait(timeout=0.01)
    c = b.counters
    assert c.rx_naps == 0
    assert c.ring_repairs == 0


def test_wait(pair):
    a, b = pair
    b.clear_wakeups()
    t = time.monotonic()
    assert b.wait(timeout=0.2) is False
    assert time.monotonic() - t >= 0.2
    f = frame(b.mac, a.mac, b"wait for me")
    threading.Timer(0.1, a.send, (f,)).start()
    assert b.wait(timeout=5) is True
    assert b.try_recv() == f
