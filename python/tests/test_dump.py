"""shmif.dump and shmif.write_pcap, checked against the `shmif dump` command."""

import os
import shutil
import struct
import subprocess

import pytest

import shmif
from conftest import BROADCAST, frame


@pytest.fixture
def written_bus(bus):
    """A bus with five frames of different sizes on it."""
    with shmif.Interface(bus) as a:
        frames = [frame(BROADCAST, a.mac, bytes([i]) * (10 * i)) for i in range(5)]
        for f in frames:
            a.send(f)
    return bus, frames


def test_dump_lists_the_frames_with_metadata(written_bus):
    bus, frames = written_bus
    d = shmif.dump(bus)
    assert isinstance(d, shmif.Dump)
    assert [f.data for f in d.frames] == frames
    assert [f.index for f in d] == list(range(5))
    assert len(d) == 5
    assert d.header.version == 3 and d.header.lock == 0
    assert d.error is None
    offsets = [f.offset for f in d.frames]
    assert offsets == sorted(offsets)
    assert d.frames[0].line.startswith("packet 0, offset 0x")
    assert f"length 0x{len(frames[1]):04x}" in d.frames[1].line


def test_dump_matches_the_shmif_command(shmif_bin, written_bus):
    bus, _ = written_bus
    d = shmif.dump(bus)
    out = subprocess.run(
        [shmif_bin, "dump", "-p", os.devnull, str(bus)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == d.header_line
    assert out[1:] == [f.line for f in d.frames]


def test_write_pcap_is_byte_identical_to_shmif_dump_p(shmif_bin, written_bus, tmp_path):
    bus, frames = written_bus
    ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    assert shmif.write_pcap(bus, ours) == len(frames)
    subprocess.run([shmif_bin, "dump", "-p", str(theirs), str(bus)], capture_output=True, check=True)
    data = ours.read_bytes()
    assert data == theirs.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("=IHHiIII", data[:24])
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 1518, 1)
    at, got = 24, []
    while at < len(data):
        _, _, incl, orig = struct.unpack("=IIII", data[at : at + 16])
        assert incl == orig
        got.append(data[at + 16 : at + 16 + incl])
        at += 16 + incl
    assert got == frames


def test_dump_reads_without_changing_the_bus(written_bus):
    bus, _ = written_bus
    os.utime(bus, ns=(1_000_000_000, 1_000_000_000))
    before = bus.read_bytes(), os.stat(bus).st_mtime_ns
    shmif.dump(bus)
    assert (bus.read_bytes(), os.stat(bus).st_mtime_ns) == before


def test_corrupt_chain(written_bus, tmp_path):
    bus, frames = written_bus
    d = shmif.dump(bus)
    broken = tmp_path / "broken"
    shutil.copy(bus, broken)
    # The length of the third frame's header becomes another plausible
    # value: the walk loses its way, which the dumper notices.
    header_at = 32 + d.frames[2].offset - 24
    with open(broken, "r+b") as f:
        f.seek(header_at)
        f.write(struct.pack("=I", 1000))
    with pytest.raises(shmif.CorruptBusError) as e:
        shmif.dump(broken)
    assert str(broken) in str(e.value) and "corrupt" in str(e.value)
    partial = shmif.dump(broken, strict=False)
    assert partial.error is not None
    assert [f.data for f in partial.frames[:2]] == frames[:2]
    # write_pcap keeps the frames found before the break, then raises.
    with pytest.raises(shmif.CorruptBusError):
        shmif.write_pcap(broken, tmp_path / "partial.pcap")
    assert (tmp_path / "partial.pcap").stat().st_size > 24


def test_fresh_bus_dumps_empty(bus):
    with shmif.Interface(bus):
        pass
    d = shmif.dump(bus)
    assert d.frames == [] and d.header.version in (0, 3)
