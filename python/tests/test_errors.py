"""Bad paths and files that are not buses: the right exceptions, the
library's messages, and the files left exactly as they were."""

import os
import pickle

import pytest

import shmif


def snapshot(path):
    """Contents, size and modification time of a file, to show it is untouched."""
    st = os.stat(path)
    with open(path, "rb") as f:
        return f.read(), st.st_size, st.st_mtime_ns


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))  # an mtime a change would move
    return p


def test_text_file_is_not_a_bus_and_is_untouched(text_file):
    before = snapshot(text_file)
    with pytest.raises(shmif.NotABusError) as e:
        shmif.Interface(text_file)
    assert str(e.value) == f"{text_file}: not a shmif bus: it is a 6-byte text file"
    assert e.value.filename == str(text_file)
    assert isinstance(e.value, shmif.BusError) and isinstance(e.value, OSError)
    assert snapshot(text_file) == before
    with pytest.raises(shmif.NotABusError) as e:
        shmif.dump(text_file)
    assert "not a shmif bus" in str(e.value) and str(text_file) in str(e.value)
    assert snapshot(text_file) == before


@pytest.mark.parametrize("size", [100, shmif.BUS_SIZE, shmif.BUS_SIZE + 1])
def test_binary_file_of_any_size_is_not_a_bus(tmp_path, size):
    p = tmp_path / "blob"
    p.write_bytes(bytes([0x80 | (i % 7) for i in range(size)]))
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(p)
    with pytest.raises(shmif.NotABusError) as e:
        shmif.Interface(p)
    assert str(p) in str(e.value) and "not a shmif bus" in str(e.value)
    with pytest.raises(shmif.NotABusError):
        shmif.dump(p)
    with pytest.raises(shmif.NotABusError):
        shmif.write_pcap(p, tmp_path / "out.pcap")
    assert not (tmp_path / "out.pcap").exists()
    assert snapshot(p) == before


def test_missing_directory(tmp_path):
    p = tmp_path / "no" / "such" / "bus"
    with pytest.raises(FileNotFoundError) as e:
        shmif.Interface(p)
    assert isinstance(e.value, shmif.BusFileNotFoundError)
    assert isinstance(e.value, shmif.BusError)
    assert e.value.errno == 2 and e.value.filename == str(p)
    assert str(e.value).startswith(f"{p}: ")
    assert "No such file or directory" in str(e.value)
    assert not (tmp_path / "no").exists()


def test_create_false_does_not_create(tmp_path):
    p = tmp_path / "bus"
    with pytest.raises(FileNotFoundError) as e:
        shmif.Interface(p, create=False)
    assert str(p) in str(e.value)
    assert not p.exists()


def test_dump_of_a_missing_file(tmp_path):
    p = tmp_path / "nothing"
    with pytest.raises(shmif.BusFileNotFoundError) as e:
        shmif.dump(p)
    assert str(e.value).startswith(f"{p}: no such bus file")
    with pytest.raises(FileNotFoundError):
        shmif.write_pcap(p, tmp_path / "x.pcap")
    assert not p.exists() and not (tmp_path / "x.pcap").exists()


def test_empty_file_is_a_new_bus_but_not_dumpable(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with pytest.raises(shmif.NotABusError, match="empty"):
        shmif.dump(p)
    assert p.stat().st_size == 0
    with shmif.Interface(p):  # an empty file is initialised as a bus, as NetBSD does
        pass
    assert p.stat().st_size == shmif.BUS_SIZE


def test_directory(tmp_path):
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(shmif.NotABusError, match="it is a directory"):
        shmif.Interface(tmp_path)
    with pytest.raises(shmif.NotABusError, match="it is a directory"):
        shmif.dump(tmp_path)
    assert sorted(os.listdir(tmp_path)) == before


def test_path_through_a_file(text_file):
    before = snapshot(text_file)
    with pytest.raises(NotADirectoryError) as e:
        shmif.Interface(text_file / "bus")
    assert isinstance(e.value, shmif.BusError)
    assert snapshot(text_file) == before


def test_symlink_refused_unless_asked(tmp_path):
    real = tmp_path / "real"
    with shmif.Interface(real):
        pass
    link = tmp_path / "link"
    link.symlink_to(real)
    before = snapshot(real)
    with pytest.raises(shmif.NotABusError, match="symbolic link"):
        shmif.Interface(link)
    assert snapshot(real) == before
    with shmif.Interface(link, follow_symlinks=True) as a, shmif.Interface(real) as b:
        f = b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5via link"
        a.send(f)
        assert b.recv(timeout=2) == f


def test_permission_denied(tmp_path):
    """A bus file the caller may not open: PermissionError. As root (who
    may open anything) the attempt is made in a forked child that drops to
    user nobody first."""
    p = tmp_path / "bus"
    with shmif.Interface(p, mode=0o600):
        pass
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(p)
    if os.geteuid() != 0:
        os.chmod(p, 0)
    os.chmod(tmp_path, 0o755)  # nobody may look up the file, not open it
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happened through the pipe
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                shmif.Interface(p)
                msg = "opened"
            except PermissionError as e:
                msg = f"{type(e).__name__}|{isinstance(e, shmif.BusError)}|{e}"
            except BaseException as e:  # noqa: B902
                msg = f"other {type(e).__name__}: {e}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got = f.read()
    os.waitpid(pid, 0)
    if os.geteuid() != 0:
        os.chmod(p, 0o600)
    name, is_bus_error, message = got.split("|", 2)
    assert (name, is_bus_error) == ("BusPermissionError", "True"), got
    assert message.startswith(f"{p}: ") and "Permission denied" in message
    assert snapshot(p) == before


def test_errors_pickle_and_keep_their_message(tmp_path):
    p = tmp_path / "no" / "bus"
    with pytest.raises(shmif.BusError) as e:
        shmif.Interface(p)
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is type(e.value)
    assert str(again) == str(e.value) and again.errno == e.value.errno


def test_write_pcap_refuses_to_overwrite_the_bus(bus):
    with shmif.Interface(bus) as a:
        a.send(b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5hi")
    before = snapshot(bus)
    with pytest.raises(shmif.BusError, match="refusing to write the pcap over the bus"):
        shmif.write_pcap(bus, bus)
    assert snapshot(bus) == before


def test_bus_removed_while_attached(bus):
    with shmif.Interface(bus) as a, shmif.Interface(bus) as b:
        os.unlink(bus)
        with pytest.raises(shmif.BusGoneError) as e:
            b.recv(timeout=2)
        assert str(e.value) == (
            f"{bus}: the bus file was removed while attached; attach again to rejoin the bus"
        )
        with pytest.raises(shmif.BusGoneError):
            a.clear_wakeups()
    assert not bus.exists()  # nothing re-created it


def test_garbage_on_a_bus_gives_exceptions_never_a_crash(tmp_path):
    """Buses damaged at random (header offsets, frame lengths, data): every
    call returns or raises a BusError; the process survives."""
    import random
    import struct

    rng = random.Random(1234)
    good = tmp_path / "good"
    with shmif.Interface(good) as a:
        a.send_batch([b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5" + bytes(rng.randrange(100)) for _ in range(50)])
    image = good.read_bytes()
    outcomes = set()
    for i in range(100):
        img = bytearray(image)
        for _ in range(rng.randrange(1, 8)):
            kind = rng.randrange(3)
            if kind == 0:  # a header word: generation, first, last
                at = rng.choice([8, 16, 20])
                img[at : at + 4] = struct.pack("=I", rng.randrange(2**32))
            elif kind == 1:  # somewhere in the frames
                at = 32 + rng.randrange(6000)
                img[at : at + 4] = struct.pack("=I", rng.randrange(2**32))
            else:
                at = 32 + rng.randrange(len(img) - 64)
                img[at : at + 16] = bytes(rng.randrange(256) for _ in range(16))
        p = tmp_path / f"bad{i}"
        p.write_bytes(bytes(img))
        try:
            d = shmif.dump(p, strict=False)
            outcomes.add("dumped" if d.error is None else "partial")
        except shmif.BusError as e:
            outcomes.add(type(e).__name__)
        try:
            with shmif.Interface(p) as x, shmif.Interface(p) as y:
                x.send(b"\xff" * 14)
                for _ in range(3):
                    y.recv(timeout=0.01)
                outcomes.add("attached")
        except shmif.BusError as e:
            outcomes.add(type(e).__name__)
    # The damage was real: some images were refused or cut short.
    assert outcomes - {"dumped", "attached"}, outcomes


def test_garbage_written_while_attached(bus):
    import random

    rng = random.Random(99)
    with shmif.Interface(bus) as a, shmif.Interface(bus) as b:
        for round in range(20):
            a.send_batch([b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5" + bytes(40)] * 5)
            with open(bus, "r+b") as f:
                f.seek(32 + rng.randrange(20000))
                f.write(bytes(rng.randrange(256) for _ in range(64)))
            try:
                while b.recv(timeout=0.01) is not None:
                    pass
            except shmif.BusError:
                pass
        assert b.counters.rx_frames > 0
