//! What `dump` and `capture` share in writing classic pcap: the global
//! header `shmif_dumpbus` gets from libpcap, records carrying the bus
//! timestamps as they are, and the refusal to write over the bus file.

use anyhow::anyhow;
use pcap_file::pcap::{PcapHeader, PcapWriter, RawPcapPacket};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;

/// Snapshot length in the file headers of a NetBSD bus's capture: a full
/// Ethernet frame with FCS, what libpcap's `pcap_open_dead` is given by
/// `shmif_dumpbus`.
pub(crate) const SNAPLEN: u32 = 1518;

/// The snapshot length for a bus of this geometry: [`SNAPLEN`] on a NetBSD
/// bus (as `shmif_dumpbus`), the frame limit on an extended one.
pub(crate) fn snaplen(extended: bool, max_frame: usize) -> u32 {
    if extended {
        max_frame as u32
    } else {
        SNAPLEN
    }
}

/// Starts a classic pcap on `out` with the global header `shmif_dumpbus`
/// gets from libpcap: magic a1b2c3d4 in this host's byte order, version
/// 2.4, thiszone 0, sigfigs 0, snaplen `snaplen` (1518 for a NetBSD bus),
/// link type 1 (Ethernet).
pub(crate) fn writer<W: Write>(out: W, snaplen: u32) -> io::Result<PcapWriter<W>> {
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::native(),
    };
    PcapWriter::with_header(out, header).map_err(to_io)
}

/// Writes one record: the frame's timestamp copied as it is (even a usec
/// field of a million or more), captured and original length both the
/// frame's.
pub(crate) fn record<W: Write>(
    w: &mut PcapWriter<W>,
    sec: u32,
    usec: u32,
    data: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    w.write_raw_packet(&RawPcapPacket {
        ts_sec: sec,
        ts_frac: usec,
        incl_len: len,
        orig_len: len,
        data: Cow::Borrowed(data),
    })
    .map(drop)
    .map_err(to_io)
}

/// A pcap-file error as the I/O error it nearly always is.
pub(crate) fn to_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Refuses an output path that is the bus file itself: creating it would
/// truncate the bus. `what` names the output in the message (`pcap`,
/// `capture`).
pub(crate) fn check_not_the_bus(out: &Path, bus: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (std::fs::metadata(out), std::fs::metadata(bus)) else {
        return Ok(());
    };
    if a.dev() == b.dev() && a.ino() == b.ino() {
        return Err(anyhow!(
            "{}: refusing to write the {what} over the bus file itself",
            out.display()
        ));
    }
    Ok(())
}
