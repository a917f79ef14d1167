"""asyncio for shmif: ``await iface.recv()``.

>>> import asyncio, shmif.aio
>>> async def main():
...     async with shmif.aio.Interface("/tmp/bus") as iface:
...         frame = await iface.recv(timeout=5)
...         async for frame in iface:   # every frame, until closed
...             print(len(frame))

Waiting registers the interface's wake-up descriptor with the event loop
(``loop.add_reader``): nothing polls and no thread is used. Receiving is
cancel-safe: a frame is taken from the bus only when ``recv`` returns it,
so cancelling a ``recv`` (or its ``asyncio.wait_for`` timing out) loses
nothing; the next ``recv`` gets the frame. Several tasks may wait on one
interface at once. Sending never waits for the bus for long (a lock hold is
microseconds), so :meth:`Interface.send` is a plain method.
"""

from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator, Callable, Iterable, List, Optional, Set, TypeVar, Union

import shmif as _shmif

__all__ = ["Interface"]

_T = TypeVar("_T")


class Interface:
    """An asyncio interface on a shmif bus.

    Takes the arguments of :class:`shmif.Interface` (``path, mac=None,
    promiscuous=False, create=True, mode=0o600, follow_symlinks=False``), or
    wraps an existing one with ``Interface.wrap(iface)``. Must be used from
    one event loop (the one running when it first waits).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], **kwargs: object) -> None:
        self._init(_shmif.Interface(path, **kwargs))  # type: ignore[arg-type]

    def _init(self, iface: _shmif.Interface) -> None:
        self._iface = iface
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._fd: Optional[int] = None
        self._waiters: Set["asyncio.Future[None]"] = set()
        self._reading = False

    @classmethod
    def wrap(cls, iface: _shmif.Interface) -> "Interface":
        """An asyncio view of an existing :class:`shmif.Interface` (closing
        either closes both)."""
        self = cls.__new__(cls)
        self._init(iface)
        return self

    @property
    def sync(self) -> _shmif.Interface:
        """The underlying :class:`shmif.Interface`."""
        return self._iface

    @property
    def mac(self) -> str:
        """This interface's MAC address."""
        return self._iface.mac

    @property
    def counters(self) -> _shmif.Counters:
        """A snapshot of this interface's statistics."""
        return self._iface.counters

    @property
    def closed(self) -> bool:
        """Whether the interface was closed."""
        return self._iface.closed

    def send(self, frame: bytes) -> None:
        """Sends one frame (see :meth:`shmif.Interface.send`)."""
        self._iface.send(frame)

    def send_batch(self, frames: Iterable[bytes]) -> int:
        """Sends several frames at once (see
        :meth:`shmif.Interface.send_batch`)."""
        return self._iface.send_batch(frames)

    def try_recv(self) -> Optional[bytes]:
        """The next frame if one is waiting, else None."""
        return self._iface.try_recv()

    def _on_readable(self) -> None:
        # The descriptor stays readable until the wake-ups are cleared (by
        # the woken tasks): stop watching it until somebody waits again.
        self._stop_reading()
        waiters, self._waiters = self._waiters, set()
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._reading = False

    async def _wait(self) -> None:
        """Waits until the bus changes (returns at once if it did since the
        last clear)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._fd = self._iface.fileno()
        elif self._loop is not loop:
            raise RuntimeError("shmif.aio.Interface is bound to another event loop")
        fut: "asyncio.Future[None]" = loop.create_future()
        self._waiters.add(fut)
        if not self._reading:
            assert self._fd is not None
            loop.add_reader(self._fd, self._on_readable)
            self._reading = True
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if not self._waiters:
                self._stop_reading()

    async def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next frame for this interface; waits up to ``timeout``
        seconds (None: for ever) and returns None on timeout. Cancel-safe."""
        return await self._recv(self._iface.try_recv, timeout)

    async def recv_frame(self, timeout: Optional[float] = None) -> Optional[_shmif.Frame]:
        """Like :meth:`recv`, with the frame's metadata
        (:class:`shmif.Frame`)."""
        return await self._recv(self._iface.try_recv_frame, timeout)

    async def _recv(self, take: Callable[[], Optional[_T]], timeout: Optional[float]) -> Optional[_T]:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be non-negative or None, not {timeout}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            # Clear first, then look: a frame sent after the look wakes the
            # descriptor again, so no wake-up is lost.
            self._iface.clear_wakeups()
            frame = take()
            if frame is not None:
                return frame
            if deadline is None:
                await self._wait()
            else:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._wait(), left)
                except asyncio.TimeoutError:
                    return None

    async def recv_batch(self, max_frames: int = 64, timeout: Optional[float] = None) -> List[bytes]:
        """Waits (up to ``timeout``) for a frame, then returns it with every
        frame already waiting, up to ``max_frames`` (empty on timeout)."""
        if max_frames <= 0:
            return []
        first = await self.recv(timeout)
        if first is None:
            return []
        return [first] + self._iface.recv_batch(max_frames - 1, timeout=0)

    def close(self) -> None:
        """Closes the interface; tasks waiting in :meth:`recv` get
        :class:`shmif.InterfaceClosedError`."""
        self._stop_reading()
        waiters, self._waiters = self._waiters, set()
        self._iface.close()
        for w in waiters:
            if not w.done():
                w.set_result(None)  # they look again and see "closed"

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        while True:
            try:
                frame = await self.recv()
            except _shmif.InterfaceClosedError:
                return
            if frame is not None:
                yield frame

    async def __aenter__(self) -> "Interface":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> "Interface":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shmif.aio.Interface {self._iface!r}>"
