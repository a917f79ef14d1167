#!/usr/bin/env python3
"""scapy pings a host on a shmif bus: ARP for its MAC, then ICMP echoes.

    shmif host /tmp/bus --ip 10.0.0.1/24 &
    python3 scapy_ping.py /tmp/bus 10.0.0.1 --ip 10.0.0.2 -c 3
"""

import argparse
import sys
import time

from scapy.all import ARP, ICMP, IP, Ether, conf

from shmif.scapy import ShmifSocket

conf.verb = 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bus", help="the bus file")
    ap.add_argument("dest", help="IPv4 address to ping")
    ap.add_argument("--ip", default="10.0.0.2", help="our address (default 10.0.0.2)")
    ap.add_argument("-c", "--count", type=int, default=3)
    args = ap.parse_args()

    with ShmifSocket(args.bus) as s:
        # Who has dest? The reply also teaches the host our MAC.
        who = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=args.dest, psrc=args.ip, hwsrc=s.mac)
        arp = s.sr1(who, timeout=2)
        if arp is None:
            print(f"no ARP reply from {args.dest}", file=sys.stderr)
            return 1
        mac = arp[ARP].hwsrc
        print(f"{args.dest} is at {mac}")
        received = 0
        for seq in range(1, args.count + 1):
            req = Ether(dst=mac) / IP(src=args.ip, dst=args.dest) / ICMP(id=0x5348, seq=seq) / b"shmif!"
            t = time.perf_counter()
            reply = s.sr1(req, timeout=2)
            if reply is not None and reply[ICMP].type == 0:
                received += 1
                ms = (time.perf_counter() - t) * 1e3
                print(f"reply from {reply[IP].src}: icmp_seq={seq} ttl={reply[IP].ttl} time={ms:.2f} ms")
            else:
                print(f"no reply for icmp_seq={seq}")
        print(f"{args.count} sent, {received} received")
        return 0 if received == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
