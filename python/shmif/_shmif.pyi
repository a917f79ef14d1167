"""Type stubs for the native module ``shmif._shmif`` (use :mod:`shmif`)."""

import os
from typing import Iterable, Iterator, List, Optional, Tuple, Union

_Path = Union[str, "os.PathLike[str]"]
_BytesLike = Union[bytes, bytearray, memoryview]

BUS_SIZE: int
MIN_FRAME_LEN: int
MAX_FRAME_LEN: int

class Interface:
    """An Ethernet interface on a shmif bus (the native base of
    :class:`shmif.Interface`)."""

    def __init__(
        self,
        path: _Path,
        mac: Union[str, bytes, None] = None,
        promiscuous: bool = False,
        create: bool = True,
        mode: int = 0o600,
        follow_symlinks: bool = False,
    ) -> None:
        """Attaches to the bus at ``path`` (created if missing unless
        ``create`` is false, with permission bits ``mode``) and brings the
        interface up."""
    def send(self, frame: _BytesLike) -> None:
        """Sends one Ethernet frame (14 to 1514 bytes, no FCS). Raises
        :class:`shmif.FrameSizeError` for another length."""
    def send_batch(self, frames: Iterable[_BytesLike]) -> int:
        """Sends several frames under one hold of the bus lock with one
        wake-up; every frame is checked before any is sent. Returns how many
        were sent."""
    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next frame for this interface, waiting up to ``timeout``
        seconds (None: for ever) with the GIL released; None on timeout.
        Signal handlers run while it waits (Ctrl-C interrupts it)."""
    def recv_batch(self, max_frames: int = 64, timeout: Optional[float] = None) -> List[bytes]:
        """Waits up to ``timeout`` seconds (None: for ever) for a frame,
        then returns it with every frame already waiting, up to
        ``max_frames``, in one call; an empty list on timeout. ``timeout=0``
        never blocks."""
    def try_recv(self) -> Optional[bytes]:
        """The next frame if one is waiting, else None; never blocks."""
    def _recv_frame(self, timeout: Optional[float] = None) -> Optional[Tuple[bytes, int, int, int]]: ...
    def _try_recv_frame(self) -> Optional[Tuple[bytes, int, int, int]]: ...
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits up to ``timeout`` seconds (None: for ever) for the bus to
        change; returns whether it did."""
    def fileno(self) -> int:
        """The wake-up descriptor: readable when the bus changes, for
        ``select``/``selectors``/asyncio. After it fires call
        :meth:`clear_wakeups`, then :meth:`try_recv` until None. Owned by
        the interface (closed by :meth:`close`): never read or close it."""
    def clear_wakeups(self) -> None:
        """Consumes the pending wake-up events of :meth:`fileno`. Raises
        :class:`shmif.BusGoneError` if the bus file was removed or
        replaced."""
    def close(self) -> None:
        """Detaches from the bus; a receive blocked in another thread raises
        :class:`shmif.InterfaceClosedError`. Idempotent."""
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
    @property
    def mac(self) -> str:
        """This interface's MAC address, like ``'b2:a0:12:34:56:78'``."""
    @property
    def sender_id(self) -> int:
        """The random 64-bit id written into every frame this interface
        sends."""
    @property
    def path(self) -> str:
        """The bus file's path."""
    @property
    def promiscuous(self) -> bool:
        """Whether frames for any MAC are received (settable)."""
    @promiscuous.setter
    def promiscuous(self, on: bool) -> None: ...
    @property
    def wake_delay(self) -> float:
        """Longest deferral, in seconds, of the wake-up write after a send
        (settable; default 0: wake at once, as NetBSD). A delay makes sends
        much cheaper; sleeping readers see frames up to that much later."""
    @wake_delay.setter
    def wake_delay(self, seconds: float) -> None: ...
    @property
    def spin(self) -> float:
        """Seconds a blocking receive polls the ring before sleeping
        (settable; default 0; ``math.inf``: busy-poll)."""
    @spin.setter
    def spin(self, seconds: float) -> None: ...
    @property
    def rx_coalesce(self) -> float:
        """Seconds a registered reader of an extended bus naps after a
        burst before sleeping on the futex (settable; default 0.0001; 0:
        off)."""
    @rx_coalesce.setter
    def rx_coalesce(self, seconds: float) -> None: ...
    def _counters(self) -> dict[str, int]: ...
    def __enter__(self) -> "Interface": ...
    def __exit__(self, *args: object) -> bool: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...

def _dump(
    path: str,
) -> Tuple[Tuple[int, int, int, int, int], str, List[Tuple[int, int, int, int, bytes]], Optional[str]]: ...
def _write_pcap(path: str, pcap_path: str) -> int: ...
