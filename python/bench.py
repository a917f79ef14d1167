#!/usr/bin/env python3
"""Frames per second sent and received from Python: shmif against scapy's
own L2Socket on a veth pair, in one run.

    sudo python3 python/bench.py               # ~15 s; the veth part needs root
    python3 python/bench.py --seconds 0.2 --json

What is measured, each for about --seconds (default 0.5):

* shmif.Interface with bytes: ``send`` (one frame a call), ``send_batch``
  (64 a call), ``send`` with ``wake_delay`` 1 ms (one wake-up write per
  millisecond instead of one per frame), ``recv`` (one a call),
  ``recv_batch`` (up to 64 a call);
* shmif.scapy.ShmifSocket with scapy packets: ``send(pkt)``, ``recv()``
  (building and dissecting ``Ether`` packets: scapy's own cost);
* the same on a veth pair through the kernel: the raw AF_PACKET socket of
  scapy's ``L2Socket`` with bytes (``socket.send`` / ``socket.recv``), and
  ``L2Socket.send(pkt)`` / ``L2Socket.recv()`` with packets. Python has no
  batch call for packet sockets (no sendmmsg), so the kernel side has no
  batch rows.

Receiving is measured in bursts: a burst that fits the buffer (the bus
ring, or a socket buffer raised to 64 MiB) is sent first, untimed, then
drained, timed; so it is the receiving cost per frame with frames waiting,
independent of a sender's speed. Frames are 60 bytes (the Ethernet minimum
without FCS) and 1514 (the maximum). The veth pair (uniquely named,
IPv6 off so that nothing else is on it) is created and deleted by this
script; without root that part is skipped and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

# The installed package, not the source tree beside this script (whose
# shmif/ has no native module).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import shmif  # noqa: E402

BURST_BYTES = 700_000  # a burst stays well inside the 1 MiB ring


def frame(size: int, dst: bytes = b"\xff" * 6, src: bytes = b"\x02\x00\x00\x00\x00\x01") -> bytes:
    return dst + src + b"\x88\xb5" + bytes(size - 14)


def rate_send(call: Callable[[], None], per_call: int, seconds: float) -> float:
    """Frames per second of `call` (which sends `per_call` frames), repeated
    for about `seconds`."""
    for _ in range(100):  # warm-up
        call()
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(64):
            call()
        n += 64
        now = time.perf_counter()
        if now >= end:
            return n * per_call / (now - t0)


def rate_recv(fill: Callable[[], int], drain: Callable[[int], int], seconds: float) -> float:
    """Frames per second received: `fill()` puts a burst in the buffer
    (untimed) and returns its size; `drain(n)` takes n frames and returns
    how many it got (timed). Repeats for about `seconds` of draining."""
    got, spent = 0, 0.0
    fill()
    drain(10**9)  # warm-up, and empties anything left over
    while spent < seconds:
        n = fill()
        t0 = time.perf_counter()
        k = drain(n)
        spent += time.perf_counter() - t0
        if k < n:
            raise RuntimeError(f"only {k} of {n} frames of a burst arrived")
        got += k
    return got / spent


def bench_shmif(seconds: float, sizes: List[int]) -> Dict[str, float]:
    from scapy.layers.l2 import Ether

    from shmif.scapy import ShmifSocket

    out: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        bus = os.path.join(d, "bus")
        with shmif.Interface(bus) as tx, shmif.Interface(bus) as rx:
            for size in sizes:
                f = frame(size)
                burst_n = BURST_BYTES // (size + 24)
                burst = [f] * burst_n
                batch = [f] * 64
                out[f"shmif send {size}"] = rate_send(lambda: tx.send(f), 1, seconds)
                out[f"shmif send_batch {size}"] = rate_send(lambda: tx.send_batch(batch), 64, seconds)
                tx.wake_delay = 0.001
                out[f"shmif send wake_delay {size}"] = rate_send(lambda: tx.send(f), 1, seconds)
                tx.wake_delay = 0

                def fill() -> int:
                    tx.send_batch(burst)
                    return burst_n

                def drain_single(n: int) -> int:
                    recv, k = rx.recv, 0
                    while k < n and recv(0) is not None:
                        k += 1
                    return k

                def drain_batch(n: int) -> int:
                    recv_batch, k = rx.recv_batch, 0
                    while k < n:
                        got = len(recv_batch(64, 0))
                        if not got:
                            break
                        k += got
                    return k

                out[f"shmif recv {size}"] = rate_recv(fill, drain_single, seconds)
                out[f"shmif recv_batch {size}"] = rate_recv(fill, drain_batch, seconds)

        # scapy on the bus: packets built and dissected by scapy.
        with ShmifSocket(bus, promisc=False) as stx, ShmifSocket(bus, promisc=False) as srx:
            size = 60
            pkt = Ether(dst="ff:ff:ff:ff:ff:ff", src=stx.mac, type=0x88B5) / bytes(size - 14)
            raw = bytes(pkt)
            burst_n = BURST_BYTES // (size + 24)
            out[f"ShmifSocket send(pkt) {size}"] = rate_send(lambda: stx.send(pkt), 1, seconds)

            def sfill() -> int:
                stx.interface.send_batch([raw] * burst_n)
                return burst_n

            def sdrain(n: int) -> int:
                k = 0
                while k < n and srx._fill():
                    srx.recv()
                    k += 1
                return k

            out[f"ShmifSocket recv() {size}"] = rate_recv(sfill, sdrain, seconds)
    return out


class Veth:
    """A veth pair with unique names, IPv6 off, up; deleted on exit."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.a, self.b = f"shpya{tag}", f"shpyb{tag}"

    def __enter__(self) -> "Veth":
        ip = shutil.which("ip") or "ip"
        subprocess.run([ip, "link", "add", self.a, "type", "veth", "peer", "name", self.b], check=True)
        try:
            for dev in (self.a, self.b):
                with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
                    f.write("1")
                subprocess.run([ip, "link", "set", dev, "up"], check=True)
            time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.a], check=False, stderr=subprocess.DEVNULL)


def bench_veth(seconds: float, sizes: List[int]) -> Dict[str, float]:
    from scapy.arch.linux import L2Socket
    from scapy.layers.l2 import Ether

    out: Dict[str, float] = {}
    with Veth() as v:
        tx = L2Socket(iface=v.a)
        rx = L2Socket(iface=v.b)
        try:
            rx.ins.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
            rx.ins.setblocking(False)
            for size in sizes:
                f = frame(size)
                burst_n = 20_000  # the raised socket buffer holds them
                out[f"veth socket.send {size}"] = rate_send(lambda: tx.outs.send(f), 1, seconds)

                def fill() -> int:
                    send = tx.outs.send
                    for _ in range(burst_n):
                        send(f)
                    time.sleep(0.005)  # let the kernel finish delivering
                    return burst_n

                def drain_raw(n: int) -> int:
                    recv, k = rx.ins.recv, 0
                    try:
                        while k < n:
                            recv(2048)
                            k += 1
                    except BlockingIOError:
                        pass
                    return k

                out[f"veth socket.recv {size}"] = rate_recv(fill, drain_raw, seconds)
                if size != 60:
                    continue
                pkt = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01", type=0x88B5) / bytes(size - 14)
                out[f"L2Socket send(pkt) {size}"] = rate_send(lambda: tx.send(pkt), 1, seconds)

                def drain_scapy(n: int) -> int:
                    k = 0
                    try:
                        while k < n:
                            if rx.recv() is not None:
                                k += 1
                    except BlockingIOError:
                        pass
                    return k

                out[f"L2Socket recv() {size}"] = rate_recv(fill, drain_scapy, seconds)
        finally:
            tx.close()
            rx.close()
    return out


ROWS = [
    # (label, shmif key, kernel key)
    ("send, one frame a call (bytes)", "shmif send {s}", "veth socket.send {s}"),
    ("send, 64 frames a call (`send_batch`)", "shmif send_batch {s}", None),
    ("send, one a call, `wake_delay = 0.001`", "shmif send wake_delay {s}", None),
    ("receive, one frame a call (bytes)", "shmif recv {s}", "veth socket.recv {s}"),
    ("receive, up to 64 a call (`recv_batch`)", "shmif recv_batch {s}", None),
    ("scapy `send(pkt)`", "ShmifSocket send(pkt) {s}", "L2Socket send(pkt) {s}"),
    ("scapy `recv()`", "ShmifSocket recv() {s}", "L2Socket recv() {s}"),
]


def table(res: Dict[str, float], sizes: List[int]) -> str:
    fmt = lambda v: "—" if v is None else f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"  # noqa: E731
    lines = [
        "| frames/s from Python | size | shmif bus | scapy L2Socket / AF_PACKET on veth | shmif ÷ veth |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        for label, sk, kk in ROWS:
            a = res.get(sk.format(s=size))
            b = res.get(kk.format(s=size)) if kk else None
            if a is None and b is None:
                continue
            ratio = f"{a / b:.1f}×" if a and b else "—"
            lines.append(f"| {label} | {size} | {fmt(a)} | {fmt(b)} | {ratio} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement (default 0.5)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--no-veth", action="store_true", help="skip the kernel (veth) measurements")
    args = ap.parse_args(argv)
    sizes = [60, 1514]
    t0 = time.monotonic()
    res = bench_shmif(args.seconds, sizes)
    veth_note = None
    if args.no_veth:
        veth_note = "skipped (--no-veth)"
    elif os.geteuid() != 0:
        veth_note = "SKIPPED: creating a veth pair needs root"
    else:
        res.update(bench_veth(args.seconds, sizes))
    env = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "seconds": round(time.monotonic() - t0, 1),
    }
    if args.json:
        print(json.dumps({"frames_per_second": res, "env": env, "veth": veth_note or "measured"}))
    else:
        print(table(res, sizes))
        print()
        print(
            f"Python {env['python']}, {env['cpus']} CPUs ({env['machine']}), "
            f"Linux {env['kernel']}; run took {env['seconds']} s."
        )
        if veth_note:
            print(f"veth: {veth_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
