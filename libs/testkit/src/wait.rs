use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{Result, TestkitError};

/// Waits until `addr` accepts TCP connections.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(TestkitError::NotReady {
                    what: format!("tcp {addr}"),
                    detail: e.to_string(),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until a GET of `url` answers 2xx.
pub async fn wait_for_http(url: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| TestkitError::NotReady {
            what: url.to_string(),
            detail: e.to_string(),
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(TestkitError::NotReady {
                what: url.to_string(),
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
