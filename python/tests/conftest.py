"""Fixtures for the shmif Python tests: bus paths, frames, and `shmif host`
processes (the CLI binary: $SHMIF_BIN, else ../target/release/shmif from the
repository, built with `cargo build --release -p shmif-cli`)."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import shmif

REPO = Path(__file__).resolve().parents[2]


def frame(dst, src, payload=b"hello", ethertype=b"\x88\xb5"):
    """An Ethernet frame; dst and src as 'aa:bb:..' strings."""
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    return mac(dst) + mac(src) + ethertype + payload


BROADCAST = "ff:ff:ff:ff:ff:ff"


@pytest.fixture
def bus(tmp_path):
    """A path for a new bus file."""
    return tmp_path / "bus"


@pytest.fixture
def pair(bus):
    """Two interfaces on one bus."""
    with shmif.Interface(bus) as a, shmif.Interface(bus) as b:
        yield a, b


@pytest.fixture(scope="session")
def shmif_bin():
    """The `shmif` command. Missing is a failure, not a skip: these tests
    are what show the bindings talk to the CLI's TCP/IP host."""
    path = Path(os.environ.get("SHMIF_BIN") or REPO / "target" / "release" / "shmif")
    if not path.is_file():
        pytest.fail(
            f"the shmif command is needed: {path} does not exist; build it with "
            "`cargo build --release -p shmif-cli` or set SHMIF_BIN"
        )
    return str(path)


class Host:
    """A running `shmif host` process."""

    def __init__(self, proc, mac, ip):
        self.proc, self.mac, self.ip = proc, mac, ip


@pytest.fixture
def host(shmif_bin, bus):
    """`shmif host BUS --ip 10.0.0.1/24`, up (its MAC read from its first
    line), stopped with SIGTERM afterwards."""
    proc = subprocess.Popen(
        [shmif_bin, "host", str(bus), "--ip", "10.0.0.1/24"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.search(r"\(([0-9a-f:]{17})\) up on", line)
        assert m, f"unexpected first line from shmif host: {line!r}"
        yield Host(proc, m.group(1), "10.0.0.1")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def wait_until(cond, timeout=5.0):
    """Polls `cond` until it is true or `timeout` passes; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.01)
