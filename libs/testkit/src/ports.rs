use std::net::{SocketAddr, TcpListener};

use crate::{Result, TestkitError};

/// A port that was free a moment ago. Prefer [`listen_ephemeral`] where the server can take a
/// bound listener; this is for programs that must be told a port number (redis-server).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(TestkitError::io("binding an ephemeral port"))?;
    let port = listener
        .local_addr()
        .map_err(TestkitError::io("reading an ephemeral port"))?
        .port();
    Ok(port)
}

/// A bound loopback listener on an ephemeral port, ready to hand to a server.
pub async fn listen_ephemeral() -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(TestkitError::io("binding an ephemeral port"))?;
    let addr = listener
        .local_addr()
        .map_err(TestkitError::io("reading an ephemeral port"))?;
    Ok((listener, addr))
}
