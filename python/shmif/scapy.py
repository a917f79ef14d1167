"""scapy on a shmif bus: :class:`ShmifSocket`, a layer-2 ``SuperSocket``.

>>> from scapy.all import Ether, ARP, IP, ICMP, sendp, sniff
>>> from shmif.scapy import ShmifSocket
>>> s = ShmifSocket("/tmp/bus")                      # a new interface on the bus
>>> who = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.1", psrc="10.0.0.2", hwsrc=s.mac)
>>> s.sr1(who, timeout=2).hwsrc                      # the MAC of 10.0.0.1 (a `shmif host`)
>>> sendp(Ether(dst="ff:ff:ff:ff:ff:ff") / b"hello", socket=s)
>>> sniff(opened_socket=s, count=3)
>>> s.srp(Ether(dst=mac) / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(), timeout=2)

scapy's own functions that take an ``iface`` (``srp``, ``srp1``, ``sendp``,
``sniff``) work on a bus given :func:`bus_iface`:

>>> from scapy.all import srp
>>> bus = bus_iface("/tmp/bus")
>>> ans, unans = srp(who, iface=bus, timeout=2)

With the outermost ``Ether`` layer's ``src`` left unset,
:meth:`ShmifSocket.send` sets it to the socket's own MAC (``s.mac``), so that answers come back to it;
other layers (ARP's ``hwsrc``, IP's ``src``) scapy fills in from the host's
routing table, which knows nothing of the bus: set them.

Requires scapy (``pip install scapy``); importing this module imports it.
"""

from __future__ import annotations

import os
import select as _select
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple, Type, Union

from scapy.config import conf
from scapy.data import MTU
from scapy.interfaces import InterfaceProvider, NetworkInterface
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.supersocket import SuperSocket

import shmif as _shmif

__all__ = ["ShmifSocket", "bus_iface", "ShmifNetworkInterface"]


class ShmifSocket(SuperSocket):
    """A scapy layer-2 socket on a shmif bus: sends and receives Ethernet
    frames as an interface of its own on the bus.

    ``ShmifSocket(path, mac=None, promisc=None, basecls=Ether, create=True,
    mode=0o600, follow_symlinks=False)``: ``promisc`` None follows scapy's
    ``conf.sniff_promisc`` (on by default, as scapy's ``L2Socket``): every
    frame on the bus is received, not only those for ``mac``, broadcast and
    multicast. ``interface=`` wraps an existing :class:`shmif.Interface`
    instead of opening one. Other keyword arguments scapy passes
    (``iface``, ``type``, ``filter``, ``nofilter``) are accepted and
    ignored: no BPF filters on a bus.

    Works with ``sendp(..., socket=s)``, ``sniff(opened_socket=s)``,
    ``s.sr``, ``s.sr1``, ``s.srp``, ``s.srp1`` and ``s.sniff``.
    ``recv()`` waits for a frame (``sniff`` and ``sr`` wait in
    :meth:`select` first and never block in it).
    """

    desc = "read/write Ethernet frames on a shmif bus"
    nonblocking_socket = False

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        mac: Optional[str] = None,
        promisc: Optional[bool] = None,
        basecls: Optional[Type[Packet]] = None,
        create: bool = True,
        mode: int = 0o600,
        follow_symlinks: bool = False,
        interface: Optional[_shmif.Interface] = None,
        **_scapy_kwargs: Any,
    ) -> None:
        if promisc is None:
            promisc = bool(conf.sniff_promisc)
        if interface is None:
            if path is None:
                raise TypeError("ShmifSocket needs a bus path (or interface=)")
            interface = _shmif.Interface(
                path,
                mac=mac,
                promiscuous=promisc,
                create=create,
                mode=mode,
                follow_symlinks=follow_symlinks,
            )
        else:
            interface.promiscuous = promisc
        self.interface = interface
        self.promisc = promisc
        self.basecls = basecls or Ether
        self.iface = os.fspath(interface.path)
        # No kernel socket: every SuperSocket method using one is overridden.
        self.ins = None  # type: ignore[assignment]
        self.outs = None
        self._pending: Deque[bytes] = deque()

    @property
    def mac(self) -> str:
        """This socket's MAC address on the bus."""
        return self.interface.mac

    def fileno(self) -> int:
        """The bus's wake-up descriptor (readable when the bus changes)."""
        return self.interface.fileno()

    def send(self, x: Union[Packet, bytes]) -> int:
        """Sends a packet (or raw bytes) as one frame; returns its length."""
        if isinstance(x, Packet):
            pkt = x
            # Only the outermost layer's source is the frame's (an Ether
            # inside a tunnel is left alone).
            if isinstance(x, Ether) and x.getfieldval("src") is None:
                pkt = x.copy()
                pkt.src = self.mac
            data = bytes(pkt)
            try:
                x.sent_time = time.time()
            except AttributeError:
                pass
        else:
            data = bytes(x)
        self.interface.send(data)
        return len(data)

    def _fill(self) -> bool:
        """Whether a frame is waiting (fetching one into the queue if not
        already): clears the wake-ups first, so that the descriptor is
        readable again only for what comes after."""
        if self._pending:
            return True
        if self.closed:
            return False
        self.interface.clear_wakeups()
        f = self.interface.try_recv()
        if f is None:
            return False
        self._pending.append(f)
        return True

    def recv_raw(self, x: int = MTU) -> Tuple[Optional[Type[Packet]], Optional[bytes], Optional[float]]:
        """The next frame, waiting for it: ``(basecls, data, None)``
        (``(None, None, None)`` once closed)."""
        if self._pending:
            return self.basecls, self._pending.popleft(), None
        if self.closed:
            return None, None, None
        try:
            data = self.interface.recv()
        except _shmif.InterfaceClosedError:
            return None, None, None
        return self.basecls, data, None

    @staticmethod
    def select(sockets: List[SuperSocket], remain: Optional[float] = conf.recv_poll_rate) -> List[SuperSocket]:
        """The sockets that have something to read, waiting up to
        ``remain`` seconds (None: for ever). A ShmifSocket is returned only
        with a frame waiting, so that a ``recv`` after it never blocks; the
        other sockets (scapy's control pipe) as ``select.select`` finds
        them."""
        deadline = None if remain is None else time.monotonic() + remain
        while True:
            ready: List[SuperSocket] = [
                s for s in sockets if isinstance(s, ShmifSocket) and s._fill()
            ]
            if ready:
                return ready
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            live = [s for s in sockets if not (isinstance(s, ShmifSocket) and s.closed)]
            if not live:
                return []
            try:
                r, _, _ = _select.select(live, [], [], left)
            except InterruptedError:
                r = []
            others = [s for s in r if not isinstance(s, ShmifSocket)]
            if others:
                return others + [s for s in sockets if isinstance(s, ShmifSocket) and s._fill()]
            if not r and deadline is not None and time.monotonic() >= deadline:
                return []

    def srp(self, *args: Any, **kwargs: Any) -> Any:
        """Sends and receives at layer 2 (what scapy's ``srp`` does, on
        this socket): ``(answered, unanswered)``."""
        return self.sr(*args, **kwargs)

    def srp1(self, *args: Any, **kwargs: Any) -> Optional[Packet]:
        """Sends and returns the first answer, or None (scapy's
        ``srp1``)."""
        return self.sr1(*args, **kwargs)

    def close(self) -> None:
        """Closes the socket and its interface."""
        if self.closed:
            return
        self.closed = True
        interface = getattr(self, "interface", None)
        if interface is not None:
            interface.close()

    def __repr__(self) -> str:
        return f"<ShmifSocket {self.mac} on {self.iface!r}>"


class _ShmifProvider(InterfaceProvider):
    """The scapy interface provider of bus interfaces (not registered in
    ``conf.ifaces``: bus interfaces are made by :func:`bus_iface`)."""

    name = "shmif"
    headers = ("Index", "Name", "MAC")

    def load(self) -> Dict[str, NetworkInterface]:
        return {}

    def _is_valid(self, dev: NetworkInterface) -> bool:
        return True

    def _format(self, dev: NetworkInterface, **kwargs: Any) -> Tuple[str, ...]:
        return (str(dev.index), dev.description, dev.mac or "")


_PROVIDER = _ShmifProvider()


class ShmifNetworkInterface(NetworkInterface):
    """A scapy ``NetworkInterface`` standing for a bus: its ``l2socket()``
    and ``l2listen()`` open a :class:`ShmifSocket` on the bus, with the
    interface's MAC. Made by :func:`bus_iface`."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], mac: str) -> None:
        path = os.fspath(path)
        super().__init__(
            _PROVIDER,
            {
                "name": f"shmif:{path}",
                "network_name": f"shmif:{path}",
                "description": f"shmif bus {path}",
                "index": -1,
                "mac": mac,
            },
        )
        self.bus_path = path

    def _socket(self, **kwargs: Any) -> ShmifSocket:
        return ShmifSocket(self.bus_path, mac=self.mac, **kwargs)

    def l2socket(self) -> Any:
        """A ShmifSocket factory for this bus (what scapy calls with its
        socket options)."""
        return self._socket

    def l2listen(self) -> Any:
        """As :meth:`l2socket` (a bus socket hears every frame anyway)."""
        return self._socket

    def l3socket(self, ipv6: bool = False) -> Any:
        raise NotImplementedError(
            "no layer-3 socket on a shmif bus: use srp/sendp with an Ether layer"
        )


def bus_iface(path: Union[str, "os.PathLike[str]"], mac: Optional[str] = None) -> ShmifNetworkInterface:
    """A scapy interface for the bus at ``path``, for the ``iface=``
    argument of scapy's ``srp``, ``srp1``, ``sendp`` and ``sniff``. Each of
    those calls opens its own :class:`ShmifSocket` on the bus, all with the
    same MAC: ``mac``, or one chosen at random (``b2:a0:…``) once here, so
    that peers' ARP caches stay right from one call to the next."""
    if mac is None:
        r = os.urandom(4)
        mac = "b2:a0:" + ":".join(f"{b:02x}" for b in r)
    return ShmifNetworkInterface(path, mac)
