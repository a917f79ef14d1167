//! A TCP client over a shmif bus, with the library and smoltcp directly.
//!
//! It attaches to a bus, connects to ADDR:PORT, sends a message, prints
//! what comes back until the server closes or a second passes quietly, and
//! closes. With a `shmif host` running an echo server:
//!
//! ```text
//! shmif host /tmp/bus --ip 10.0.0.1/24 --tcp-echo 7 &
//! cargo run -p shmif --features smoltcp --example tcp_client -- \
//!     /tmp/bus 10.0.0.2 10.0.0.1:7 "hello over the bus"
//! ```

use shmif::smoltcp_device::ShmifDevice;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: tcp_client BUS MY-ADDR SERVER-ADDR:PORT [MESSAGE]");
        std::process::exit(2);
    }
    let my_addr: IpAddr = args[2].parse()?;
    let server: SocketAddr = args[3].parse()?;
    let message = args.get(4).map_or("hello over the bus", |s| s.as_str());

    // The bus interface, as a smoltcp device.
    let mut dev = ShmifDevice::new(shmif::Interface::attach(&args[1])?);
    let mac = EthernetAddress(dev.interface().mac().0);

    // smoltcp's IP interface over it, with our address (a /24 or /64).
    let mut config = Config::new(mac.into());
    config.random_seed = dev.interface().sender_id();
    let mut iface = Interface::new(config, &mut dev, Instant::now());
    let prefix = if my_addr.is_ipv4() { 24 } else { 64 };
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
