"""The exceptions of the shmif package.

Every error from the library is a :class:`BusError` (itself an
:class:`OSError`) with the library's message as its ``str()``. Those that
match a built-in ``OSError`` subclass are also instances of it, so that
``except FileNotFoundError`` and ``except PermissionError`` work as usual::

    try:
        shmif.Interface("/no/such/dir/bus")
    except FileNotFoundError as e:
        print(e)       # /no/such/dir/bus: cannot open bus file: No such file or directory (os error 2)
"""

from __future__ import annotations

import errno as _errno
import os as _os
from typing import Any, Optional, Tuple

__all__ = [
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


class BusError(OSError):
    """An error from the shmif library.

    ``str(e)`` is the library's message (it names the bus file where there
    is one); ``e.errno`` and ``e.strerror`` are set when a system call
    failed, ``e.filename`` when a file is concerned.
    """

    def __init__(
        self,
        message: str,
        errno: Optional[int] = None,
        filename: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.strerror = _os.strerror(errno) if errno else None
        self.filename = filename

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.message, self.errno, self.filename))


class BusFileNotFoundError(BusError, FileNotFoundError):
    """The bus file (or a directory on its path) does not exist."""


class BusPermissionError(BusError, PermissionError):
    """The bus file cannot be opened or created with these permissions."""


class BusIsADirectoryError(BusError, IsADirectoryError):
    """A system call found a directory where the bus file should be."""


class BusNotADirectoryError(BusError, NotADirectoryError):
    """A component of the bus path is not a directory."""


class NotABusError(BusError):
    """The file exists but is not a shmif bus (it was left untouched): a
    text file, a file of the wrong size or magic, a directory, a device, or
    a symbolic link when following links was not asked for."""


class CorruptBusError(BusError):
    """The bus holds something impossible, written by a broken or hostile
    peer."""


class BusGoneError(BusError):
    """The bus file was truncated, removed or replaced while attached: this
    interface no longer reaches the other peers. Open a new one."""


class FrameSizeError(BusError, ValueError):
    """A frame outside 14..1514 bytes was offered for sending."""


class InterfaceDownError(BusError):
    """The interface cannot send or receive (it is down or has no bus)."""


class InterfaceClosedError(InterfaceDownError, ValueError):
    """The interface was closed (by ``close()`` or its ``with`` block)."""


_BY_KIND = {
    "not_a_bus": NotABusError,
    "corrupt": CorruptBusError,
    "bus_gone": BusGoneError,
    "frame_size": FrameSizeError,
    "down": InterfaceDownError,
    "closed": InterfaceClosedError,
}

_BY_ERRNO = {
    _errno.ENOENT: BusFileNotFoundError,
    _errno.EACCES: BusPermissionError,
    _errno.EPERM: BusPermissionError,
    _errno.EISDIR: BusIsADirectoryError,
    _errno.ENOTDIR: BusNotADirectoryError,
}


def _from_library(
    kind: str, message: str, errno: Optional[int], filename: Optional[str]
) -> BusError:
    """The exception for a library error (called by the native module)."""
    if kind == "io" and errno in _BY_ERRNO:
        cls = _BY_ERRNO[errno]
    else:
        cls = _BY_KIND.get(kind, BusError)
    return cls(message, errno, filename)
