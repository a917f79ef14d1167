//! A TCP client over a shmif bus, with the library and smoltcp directly.
//!
//! It attaches to a bus, connects to ADDR:PORT, sends a message, prints
//! what comes back until the server closes or a second passes quietly, and
//! closes. With a `shmif host` running an echo server:
//!
//! ```text
//! shmif host /tmp/bus --ip 10.0.0.1/24 --tcp-echo 7 &
//! cargo run -p shmif --features smoltcp --example tcp_client -- \
//!     /tmp/bus 10.0.0.2/24 10.0.0.1:7 "hello over the bus"
//! ```
//!
//! `--help` prints the usage. MY-ADDR is `ADDR/PREFIX` as the `shmif`
//! command takes it, or a plain address (/24 for IPv4, /64 for IPv6).

use shmif::smoltcp_device::ShmifDevice;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The help text (`--help`).
const HELP: &str = "\
A TCP client over a shmif bus: connects to SERVER, sends MESSAGE, prints
what comes back until the server closes or a second passes quietly.

Usage: tcp_client BUS MY-ADDR[/PREFIX] SERVER-ADDR:PORT [MESSAGE]

Arguments:
  BUS               the bus file (created if missing)
  MY-ADDR[/PREFIX]  this client's address: 10.0.0.2/24, fd00::2/64, or a
                    plain address (then /24 for IPv4, /64 for IPv6)
  SERVER-ADDR:PORT  the server: 10.0.0.1:7, or [fd00::1]:7 for IPv6
  MESSAGE           what to send [default: hello over the bus]

Example:
  shmif host /tmp/bus --ip 10.0.0.1/24 --tcp-echo 7 &
  tcp_client /tmp/bus 10.0.0.2/24 10.0.0.1:7 \"hello over the bus\"
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Args {
    bus: String,
    addr: IpAddr,
    prefix: u8,
    server: SocketAddr,
    message: String,
}

/// What the command line says: the arguments, a request for help, or
/// what is wrong with it (one line).
fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(None);
    }
    let [bus, me, server, rest @ ..] = args else {
        return Err("expected BUS MY-ADDR[/PREFIX] SERVER-ADDR:PORT [MESSAGE]".into());
    };
    let (addr, prefix) = match me.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (me.as_str(), None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        format!("MY-ADDR `{me}` is not an address (expected 10.0.0.2/24, fd00::2/64 or 10.0.0.2)")
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix =
        match prefix {
            None if addr.is_ipv4() => 24,
            None => 64,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("MY-ADDR `{me}`: `{p}` is not a prefix length (0 to {max})")
            })?,
        };
    let server: SocketAddr = server.parse().map_err(|_| {
        format!("SERVER `{server}` is not ADDR:PORT (e.g. 10.0.0.1:7, or [fd00::1]:7 for IPv6)")
    })?;
    if server.is_ipv4() != addr.is_ipv4() {
        return Err(format!(
            "MY-ADDR {addr} and SERVER {server} are of different families"
        ));
    }
    if rest.len() > 1 {
        return Err("too many arguments: quote a MESSAGE with spaces".into());
    }
    Ok(Some(Args {
        bus: bus.clone(),
        addr,
        prefix,
        server,
        message: rest.first().map_or("hello over the bus", |s| s).to_string(),
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("tcp_client: {e}\nUsage: tcp_client BUS MY-ADDR[/PREFIX] SERVER-ADDR:PORT [MESSAGE] (--help for more)");
            std::process::exit(2);
        }
    };
    let (my_addr, prefix, server) = (args.addr, args.prefix, args.server);
    let message = args.message.as_str();

    // The bus interface, as a smoltcp device.
    let mut dev = ShmifDevice::new(shmif::Interface::attach(&args.bus)?);
    let mac = EthernetAddress(dev.interface().mac().0);

    // smoltcp's IP interface over it, with our address.
    let mut config = Config::new(mac.into());
    config.random_seed = dev.interface().sender_id();
    let mut iface = Interface::new(config, &mut dev, Instant::now());
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::from(my_addr), prefix))
            .unwrap();
    });

    // One TCP socket, connecting.
    let mut sockets = SocketSet::new(vec![]);
    let socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65536]),
        tcp::SocketBuffer::new(vec![0; 65536]),
    );
    let handle = sockets.add(socket);
    sockets.get_mut::<tcp::Socket>(handle).connect(
        iface.context(),
        IpEndpoint::from(server),
        49152 + (dev.interface().sender_id() % 16384) as u16,
    )?;

    let mut sent = false;
    let mut last_data = std::time::Instant::now();
    loop {
        iface.poll(Instant::now(), &mut dev, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(handle);
        if !sent && s.can_send() {
            s.send_slice(message.as_bytes())?;
            println!("connected to {server}; sent {} bytes", message.len());
            sent = true;
            last_data = std::time::Instant::now();
        }
        if s.can_recv() {
            s.recv(|data| {
                println!("received: {}", String::from_utf8_lossy(data));
                (data.len(), ())
            })?;
            last_data = std::time::Instant::now();
        }
        let quiet = last_data.elapsed() > Duration::from_secs(1);
        if sent && (!s.may_recv() || quiet) && s.may_send() {
            s.close();
        }
        if !s.is_open() || (sent && s.state() == tcp::State::TimeWait) {
            break;
        }
        if !sent && s.state() == tcp::State::Closed {
            return Err(format!("connection to {server} refused").into());
        }
        // Sleep until the next frame or smoltcp's next timer, at most 100 ms.
        dev.poll_wait(&mut iface, &sockets, Some(Duration::from_millis(100)))?;
    }
    println!("closed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn takes_a_cidr_like_the_cli_or_a_plain_address() {
        let a = parse(&["/tmp/bus", "10.0.0.2/24", "10.0.0.1:7"])
            .unwrap()
            .unwrap();
        assert_eq!((a.addr.to_string(), a.prefix), ("10.0.0.2".into(), 24));
        let a = parse(&["/tmp/bus", "10.0.0.2", "10.0.0.1:7", "hi"])
            .unwrap()
            .unwrap();
        assert_eq!((a.prefix, a.message.as_str()), (24, "hi"));
        let a = parse(&["/tmp/bus", "fd00::2/120", "[fd00::1]:7"])
            .unwrap()
            .unwrap();
        assert_eq!(a.prefix, 120);
        assert_eq!(parse(&["--help"]), Ok(None));
        assert!(HELP.contains("Usage: tcp_client BUS MY-ADDR[/PREFIX] SERVER-ADDR:PORT"));
    }

    #[test]
    fn bad_arguments_get_one_clear_line() {
        assert_eq!(
            parse(&["/tmp/bus", "10.0.0.x", "10.0.0.1:7"]),
            Err("MY-ADDR `10.0.0.x` is not an address (expected 10.0.0.2/24, fd00::2/64 or 10.0.0.2)".into())
        );
        assert_eq!(
            parse(&["/tmp/bus", "10.0.0.2/33", "10.0.0.1:7"]),
            Err("MY-ADDR `10.0.0.2/33`: `33` is not a prefix length (0 to 32)".into())
        );
        assert_eq!(
            parse(&["/tmp/bus", "10.0.0.2", "10.0.0.1"]),
            Err(
                "SERVER `10.0.0.1` is not ADDR:PORT (e.g. 10.0.0.1:7, or [fd00::1]:7 for IPv6)"
                    .into()
            )
        );
        assert!(parse(&["/tmp/bus"]).is_err());
    }
}
