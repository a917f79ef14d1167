"""A NetBSD-compatible shmif bus: Ethernet over a shared memory-mapped file.

A bus is a 1 MiB file. Every process that attaches to it becomes an Ethernet
interface with its own MAC address; a frame one sends is seen by all (a hub).
No root, no kernel module, no daemon. Rump kernels, the ``shmif`` command
(``shmif host``, ``shmif tap``), QEMU guests bridged to it and Python programs
share one bus.

>>> import shmif
>>> with shmif.Interface("/tmp/bus") as a, shmif.Interface("/tmp/bus") as b:
...     frame = b"\\xff" * 6 + bytes.fromhex(a.mac.replace(":", "")) + b"\\x88\\xb5hello"
...     a.send(frame)
...     assert b.recv(timeout=1) == frame

Submodules: :mod:`shmif.aio` (asyncio), :mod:`shmif.scapy` (a scapy
SuperSocket), :mod:`shmif.errors` (the exceptions, also exported here).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, List, Optional, Union

from . import _shmif
from .errors import (
    BusError,
    BusFileNotFoundError,
    BusGoneError,
    BusIsADirectoryError,
    BusNotADirectoryError,
    BusPermissionError,
    CorruptBusError,
    FrameSizeError,
    InterfaceClosedError,
    InterfaceDownError,
    NotABusError,
)

__all__ = [
    "Interface",
    "Counters",
    "Frame",
    "Dump",
    "DumpHeader",
    "DumpFrame",
    "dump",
    "write_pcap",
    "BUS_SIZE",
    "MIN_FRAME_LEN",
    "MAX_FRAME_LEN",
    "BusError",
    "BusFileNotFoundError",
    "BusPermissionError",
    "BusIsADirectoryError",
    "BusNotADirectoryError",
    "NotABusError",
    "CorruptBusError",
    "BusGoneError",
    "FrameSizeError",
    "InterfaceDownError",
    "InterfaceClosedError",
]

__version__ = "0.1.0"

#: Size of a bus file in bytes (1 MiB).
BUS_SIZE: int = _shmif.BUS_SIZE
#: Shortest frame a bus carries: an Ethernet header (14 bytes).
MIN_FRAME_LEN: int = _shmif.MIN_FRAME_LEN
#: Longest frame a bus carries: header and 1500 bytes of payload, no FCS.
MAX_FRAME_LEN: int = _shmif.MAX_FRAME_LEN

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Counters:
    """A snapshot of an interface's statistics."""

    #: Frames this interface wrote to the bus.
    tx_frames: int = 0
    #: Bytes of those frames.
    tx_bytes: int = 0
    #: Frames delivered to the user.
    rx_frames: int = 0
    #: Bytes of those frames.
    rx_bytes: int = 0
    #: Frames passed over by the MAC filter (addressed to someone else).
    rx_filtered: int = 0
    #: Frames this interface sent, seen again on the bus and skipped.
    rx_own: int = 0
    #: Times writers overwrote frames before this interface read them.
    overruns: int = 0
    #: Ring bytes lost to those overruns, where the distance was knowable.
    overrun_bytes: int = 0
    #: Overruns whose loss could not be measured.
    overruns_unmeasured: int = 0
    #: Frames skipped as malformed.
    malformed: int = 0
    #: Times this interface took over the bus lock from a dead or stuck holder.
    lock_takeovers: int = 0
    #: Times it then found the ring inconsistent and reset it.
    ring_resets: int = 0
    #: Times its mapping reset a ring it could not trust, for any reason
    #: (the resets above, and repairs of impossible contents).
    ring_repairs: int = 0
    #: Times a wait napped after a burst (see ``Interface.rx_coalesce``).
    rx_naps: int = 0


@dataclasses.dataclass(frozen=True)
class Frame:
    """A received frame with the metadata from its bus header."""

    #: The Ethernet frame: destination, source, EtherType, payload.
    data: bytes
    #: The sender's timestamp, seconds (NetBSD peers stamp their uptime,
    #: this library the wall clock).
    sec: int
    #: Microseconds part of the timestamp.
    usec: int
    #: The sending interface's random 64-bit id.
    sender: int

    @property
    def time(self) -> float:
        """The sender's timestamp as seconds (float)."""
        return self.sec + self.usec / 1e6


class Interface(_shmif.Interface):
    """An Ethernet interface on a shmif bus.

    ``Interface(path, mac=None, promiscuous=False, create=True, mode=0o600,
    follow_symlinks=False)`` attaches to the bus file at ``path`` and brings
    the interface up; it receives the frames sent after that, addressed to
    its MAC (``mac``: a string like ``"b2:a0:00:00:00:01"`` or 6 bytes;
    random ``b2:a0:…`` if None), to broadcast or multicast, or to anyone if
    ``promiscuous``. A missing bus file is created with permission bits
    ``mode`` unless ``create`` is false; a symbolic link is refused unless
    ``follow_symlinks``. Raises :class:`NotABusError` for a file that is not
    a bus (left untouched), :class:`FileNotFoundError` /
    :class:`PermissionError` (as :class:`BusError` subclasses) where those
    fit.

    Methods: :meth:`send`, :meth:`send_batch`, :meth:`recv` (blocking, with
    the GIL released; Ctrl-C interrupts it), :meth:`try_recv`,
    :meth:`recv_batch`, :meth:`recv_frame`, :meth:`fileno` with :meth:`clear_wakeups` for
    ``select``/``selectors``/asyncio, :meth:`close`. Iterating yields
    received frames (blocking) until the interface is closed; ``with``
    closes it. All methods may be called from several threads at once.
    """

    __slots__ = ()

    @property
    def counters(self) -> Counters:
        """A snapshot of this interface's statistics."""
        return Counters(**self._counters())

    def recv_frame(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """Like :meth:`recv`, with the frame's bus metadata: a
        :class:`Frame`, or ``None`` on timeout."""
        t = self._recv_frame(timeout)
        return None if t is None else Frame(*t)

    def try_recv_frame(self) -> Optional[Frame]:
        """Like :meth:`try_recv`, with the frame's bus metadata."""
        t = self._try_recv_frame()
        return None if t is None else Frame(*t)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "up"
        return f"<shmif.Interface {self.mac} on {os.fspath(self.path)!r} ({state})>"


@dataclasses.dataclass(frozen=True)
class DumpHeader:
    """The bus header, as ``shmif dump`` reads it."""

    #: Bus version: 3 (or 2 for old NetBSD; 0 if no peer ever woke others).
    version: int
    #: Times the ring wrapped.
    generation: int
    #: Offset of the oldest intact frame in the data region.
    first: int
    #: Offset of the newest frame's header.
    last: int
    #: The lock word as found (0: unlocked).
    lock: int


@dataclasses.dataclass(frozen=True)
class DumpFrame:
    """A frame found on a bus by :func:`dump`."""

    #: Its number in the walk, oldest first.
    index: int
    #: Offset of its payload in the bus's data region.
    offset: int
    #: The sender's timestamp, seconds.
    sec: int
    #: Microseconds part of the timestamp.
    usec: int
    #: The Ethernet frame.
    data: bytes

    @property
    def line(self) -> str:
        """The line ``shmif dump`` (and NetBSD's ``shmif_dumpbus``) prints
        for this frame."""
        return (
            f"packet {self.index}, offset 0x{self.offset:04x}, "
            f"length 0x{len(self.data):04x}, ts {self.sec}/{self.usec:06d}"
        )


@dataclasses.dataclass(frozen=True)
class Dump:
    """What :func:`dump` found on a bus."""

    #: The bus header.
    header: DumpHeader
    #: The first line ``shmif dump`` prints.
    header_line: str
    #: The frames still on the bus, oldest first.
    frames: List[DumpFrame]
    #: With ``strict=False``: why the walk over the frames broke off early
    #: (a corrupt chain), else None.
    error: Optional[str] = None

    def __iter__(self) -> Iterator[DumpFrame]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)


def dump(path: PathLike, strict: bool = True) -> Dump:
    """The frames on the bus at ``path``, oldest first, with their metadata.

    The file is read, never locked or changed (a bus whose lock is stuck
    can still be dumped); version-2 and byte-swapped buses are read too.
    Raises :class:`NotABusError` for a file that is not a bus and
    :class:`FileNotFoundError` (a :class:`BusError`) for a missing one. A
    frame chain that breaks off raises :class:`CorruptBusError`, unless
    ``strict`` is false: then the frames before the break are returned with
    :attr:`Dump.error` set.
    """
    (version, generation, first, last, lock), line, rows, error = _shmif._dump(
        os.fspath(path)
    )
    if error is not None and strict:
        raise CorruptBusError(error, None, os.fspath(path))
    return Dump(
        header=DumpHeader(version, generation, first, last, lock),
        header_line=line,
        frames=[DumpFrame(*r) for r in rows],
        error=error,
    )


def write_pcap(path: PathLike, pcap_path: PathLike) -> int:
    """Writes the frames on the bus at ``path`` to ``pcap_path`` as a
    classic pcap file (what ``shmif dump -p`` writes, byte for byte) and
    returns how many frames it wrote. The bus is checked before the pcap is
    created, and never changed; writing over the bus file itself is
    refused. A frame chain that breaks off raises :class:`CorruptBusError`
    after the frames before the break were written."""
    return _shmif._write_pcap(os.fspath(path), os.fspath(pcap_path))
