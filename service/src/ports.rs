//! Listening on one port from every core (SO_REUSEPORT).

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// A port every core can share: a SO_REUSEPORT socket bound (never
/// listening) and held until every core has bound the same port. With port
/// 0 it picks the port.
pub fn reserve(listen: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&listen.into())?;
    Ok(socket)
}
