"""shmif.scapy.ShmifSocket against a `shmif host` (smoltcp TCP/IP) on the bus."""

import subprocess
import threading
import time

import pytest

scapy_all = pytest.importorskip("scapy.all")  # CI installs scapy: see ci.sh
from scapy.all import ARP, ICMP, IP, AsyncSniffer, Ether, conf, sendp, sniff  # noqa: E402

import shmif  # noqa: E402
from shmif.scapy import ShmifSocket  # noqa: E402

conf.verb = 0


def arp_who_has(s, ip):
    return Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=ip, psrc="10.0.0.2", hwsrc=s.mac)


def introduce(s, host):
    """Resolves the host's MAC with ARP, as any IP host does before it
    sends: smoltcp learns ours from the request (it does not learn MACs from
    IP packets, and nobody here would answer its own ARP request)."""
    ans = s.sr1(arp_who_has(s, host.ip), timeout=3)
    assert ans is not None and ans[ARP].hwsrc == host.mac
    return ans[ARP].hwsrc


def test_arp_request_gets_its_reply_through_sr1(host, bus):
    with ShmifSocket(bus) as s:
        ans = s.sr1(arp_who_has(s, host.ip), timeout=3)
        assert ans is not None, "no ARP reply from shmif host"
        assert ans[ARP].op == 2  # is-at
        assert ans[ARP].psrc == host.ip and ans[ARP].hwsrc == host.mac
        assert ans[ARP].pdst == "10.0.0.2" and ans[ARP].hwdst == s.mac
        assert ans[Ether].dst == s.mac


def test_icmp_echo_gets_its_reply_through_sr1(host, bus):
    with ShmifSocket(bus) as s:
        mac = introduce(s, host)
        req = Ether(dst=mac) / IP(src="10.0.0.2", dst=host.ip) / ICMP(id=0x1234, seq=7) / b"payload!"
        ans = s.sr1(req, timeout=3)
        assert ans is not None, "no ICMP echo reply from shmif host"
        assert ans[IP].src == host.ip and ans[IP].dst == "10.0.0.2"
        assert ans[ICMP].type == 0  # echo-reply
        assert (ans[ICMP].id, ans[ICMP].seq) == (0x1234, 7)
        assert bytes(ans[ICMP].payload) == b"payload!"


def test_srp_several_echoes(host, bus):
    with ShmifSocket(bus) as s:
        introduce(s, host)
        reqs = Ether(dst=host.mac) / IP(src="10.0.0.2", dst=host.ip) / ICMP(id=9, seq=(1, 4))
        ans, unans = s.srp(reqs, timeout=3)
        assert len(ans) == 4 and len(unans) == 0
        assert sorted(r[ICMP].seq for _, r in ans) == [1, 2, 3, 4]
        assert s.srp1(arp_who_has(s, host.ip), timeout=3)[ARP].hwsrc == host.mac


def test_unset_ether_source_becomes_the_socket_mac(bus):
    with shmif.Interface(bus) as rx, ShmifSocket(bus) as s:
        pkt = Ether(dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / b"who am i"
        assert pkt.getfieldval("src") is None
        s.send(pkt)
        got = rx.recv(timeout=2)
        assert got is not None and Ether(got).src == s.mac
        assert pkt.getfieldval("src") is None  # the caller's packet is not changed
        explicit = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:42", type=0x88B5)
        s.send(explicit)
        assert Ether(rx.recv(timeout=2)).src == "02:00:00:00:00:42"
        # An Ether inside a tunnel is not the frame's source: left alone.
        from scapy.layers.inet import UDP
        from scapy.layers.vxlan import VXLAN

        outer = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:42")
        tunnel = outer / IP() / UDP(dport=4789) / VXLAN() / Ether(dst="ff:ff:ff:ff:ff:ff") / b"in"
        s.send(tunnel)
        inner = Ether(rx.recv(timeout=2))[VXLAN][Ether]
        assert inner.src != s.mac


def test_sendp_puts_frames_on_the_bus(bus):
    with shmif.Interface(bus) as rx, ShmifSocket(bus) as s:
        pkt = Ether(dst="ff:ff:ff:ff:ff:ff", src=s.mac, type=0x88B5) / b"from scapy"
        sendp(pkt, socket=s, count=3)
        got = [rx.recv(timeout=2) for _ in range(3)]
        assert got == [bytes(pkt)] * 3


def test_sniff_sees_a_shmif_ping(host, bus, shmif_bin):
    with ShmifSocket(bus, promisc=True) as s:
        sniffer = AsyncSniffer(
            opened_socket=s,
            lfilter=lambda p: ICMP in p,
            count=6,
        )
        sniffer.start()
        time.sleep(0.2)
        ping = subprocess.run(
            [shmif_bin, "ping", str(bus), "--ip", "10.0.0.2/24", host.ip, "-c", "3", "-i", "0.1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        sniffer.join(timeout=10)
        if sniffer.running:
            sniffer.stop()
        pkts = sniffer.results
    requests = [p for p in pkts if p[ICMP].type == 8]
    replies = [p for p in pkts if p[ICMP].type == 0]
    assert len(requests) == 3 and len(replies) == 3
    assert all(p[IP].src == "10.0.0.2" and p[IP].dst == host.ip for p in requests)
    assert all(p[IP].src == host.ip and p[Ether].src == host.mac for p in replies)


def test_sniff_function_with_count_and_timeout(bus):
    with shmif.Interface(bus) as tx, ShmifSocket(bus) as s:
        frames = [
            bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=tx.mac, type=0x88B5) / (bytes([i]) * 20))
            for i in range(4)
        ]
        threading.Timer(0.2, tx.send_batch, (frames,)).start()
        got = sniff(opened_socket=s, count=4, timeout=5)
        assert [bytes(p) for p in got] == frames
        t = time.monotonic()
        assert len(sniff(opened_socket=s, timeout=0.3)) == 0
        assert time.monotonic() - t < 2


def test_recv_blocks_until_a_frame(bus):
    with shmif.Interface(bus) as tx, ShmifSocket(bus) as s:
        f = bytes(Ether(dst=s.mac, src=tx.mac, type=0x88B5) / b"direct")
        threading.Timer(0.1, tx.send, (f,)).start()
        p = s.recv()
        assert bytes(p) == f and isinstance(p, Ether)


def test_select_returns_only_sockets_with_frames(bus):
    with shmif.Interface(bus) as tx, ShmifSocket(bus) as s:
        assert ShmifSocket.select([s], 0.2) == []
        # Its own frames wake the descriptor but are no frame for it.
        s.send(Ether(dst="ff:ff:ff:ff:ff:ff", src=s.mac, type=0x88B5) / b"own")
        assert ShmifSocket.select([s], 0.2) == []
        tx.send_batch([bytes(Ether(dst=s.mac, src=tx.mac, type=0x88B5) / b"x")] * 2)
        assert ShmifSocket.select([s], 2) == [s]
        assert s.recv() is not None
        # The second frame is still reported although its wake-up was consumed.
        assert ShmifSocket.select([s], 0.5) == [s]
        assert s.recv() is not None
        assert ShmifSocket.select([s], 0.1) == []


def test_scapy_functions_with_bus_iface(host, bus):
    from scapy.all import srp, srp1

    from shmif.scapy import bus_iface

    iface = bus_iface(bus)
    assert iface.mac.startswith("b2:a0:")
    ans, unans = srp(
        Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=host.ip, psrc="10.0.0.2", hwsrc=iface.mac),
        iface=iface,
        timeout=3,
    )
    assert len(ans) == 1 and len(unans) == 0
    assert ans[0][1][ARP].hwsrc == host.mac and ans[0][1][Ether].dst == iface.mac
    # The host learnt our MAC: an echo to it is answered, through srp1.
    reply = srp1(Ether(dst=host.mac) / IP(src="10.0.0.2", dst=host.ip) / ICMP(id=3), iface=iface, timeout=3)
    assert reply is not None and reply[ICMP].type == 0 and reply[Ether].dst == iface.mac
    # sendp and sniff with iface= too.
    with shmif.Interface(bus) as rx:
        sendp(Ether(dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / b"via iface", iface=iface)
        got = rx.recv(timeout=2)
        assert got is not None and got.endswith(b"via iface") and Ether(got).src == iface.mac
        f = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=rx.mac, type=0x88B5) / b"sniffed via iface")
        threading.Timer(0.5, rx.send, (f,)).start()
        got = sniff(iface=iface, count=1, timeout=5, lfilter=lambda p: p.type == 0x88B5)
        assert [bytes(p) for p in got] == [f]
    with pytest.raises(NotImplementedError):
        iface.l3socket()


def test_readme_example_pings_a_shmif_host(host, bus):
    import os
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "scapy_ping.py"
    r = subprocess.run(
        [sys.executable, str(example), str(bus), host.ip, "-c", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(str(bus)),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{host.ip} is at {host.mac}"
    assert sum(line.startswith(f"reply from {host.ip}: icmp_seq=") for line in lines) == 3
    assert lines[-1] == "3 sent, 3 received"
