//! Listening on one port from every core (SO_REUSEPORT).

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// A port every core can share: a SO_REUSEPORT socket bound (never
/// listening) and held until every core has bound the same port. With port
/// 0 it picks the port.
///
/// SO_REUSEPORT would also let this process join a port another process of
/// the same user already serves, and the kernel would split the clients
/// between the two without a word. So a port that is not 0 is first bound
/// without it: a port anything listens on is refused, "address in use", as
/// nginx and gokeyless refuse it.
pub fn reserve(listen: SocketAddr) -> std::io::Result<Socket> {
    if listen.port() != 0 {
        refuse_a_port_in_use(listen, RELEASE_GRACE)?;
    }
    let socket = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&listen.into())?;
    Ok(socket)
}

/// How long a listening socket may linger after its process is gone: a
/// process killed with io_uring accepts pending has its rings torn down by
/// the kernel afterwards, and its listener goes with them (seen: a restart
/// right after `kill -9` found the old listener still there).
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Fail with "address in use" when something listens on `listen`'s port and
/// still does after `grace`.
fn refuse_a_port_in_use(listen: SocketAddr, grace: std::time::Duration) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        let probe = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
        // Connections of a previous run still in TIME_WAIT do not count.
        probe.set_reuse_address(true)?;
        match probe.bind(&listen.into()) {
            Ok(()) => return Ok(()),
            // Connections our previous run closed linger in TIME_WAIT, bound
            // to the port without SO_REUSEADDR (glommio's listeners set only
            // SO_REUSEPORT), and fail the probe too: only a socket that
            // listens means another server.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !listening_on(listen.port()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("address in use: another process is listening on port {}", listen.port()),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a TCP socket of this network namespace listens on `port`
/// (the kernel's own table: `/proc/self/net/tcp` and `tcp6`, state 0A;
/// under the pid directory, so `ProcSubset=pid` leaves it readable).
fn listening_on(port: u16) -> bool {
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(3) == Some(&"0A")
                    && fields
                        .get(1)
                        .and_then(|local| local.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_socket_listens_on_is_refused() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = other.local_addr().unwrap();
        let e = refuse_a_port_in_use(taken, std::time::Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            e.to_string()
                .contains(&format!("another process is listening on port {}", taken.port())),
            "{e}"
        );
        drop(other);
        let free = reserve(taken).expect("free again once the other socket is gone");
        // Our own cores still share it.
        let core = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        core.set_reuse_port(true).unwrap();
        core.bind(&taken.into()).unwrap();
        drop(free);
    }

    /// A restart right after closing connections (they linger in TIME_WAIT
    /// on the port) must not be mistaken for another server.
    #[test]
    fn time_wait_leftovers_of_our_own_connections_do_not_count() {
        use std::io::Read;
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.set_reuse_port(true).unwrap(); // as glommio's listeners
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(16).unwrap();
        let port = listener.local_addr().unwrap().as_socket().unwrap();
        let listener: std::net::TcpListener = listener.into();
        for _ in 0..3 {
            let mut client = std::net::TcpStream::connect(port).unwrap();
            let (served, _) = listener.accept().unwrap();
            drop(served); // the server closes first: TIME_WAIT on its side
            let _ = client.read(&mut [0u8; 1]);
        }
        drop(listener);
        assert!(!listening_on(port.port()));
        reserve(port).expect("TIME_WAIT connections are no other server");
    }
}
