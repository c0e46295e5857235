//! The router's HTTP listener, built to hold against slow and partial clients: a limit on open
//! connections (past it, a 503 in the OpenAI envelope and the connection closed), a deadline for
//! a request's headers (hyper closes a connection that has not sent them in time), TCP_NODELAY,
//! connections served on the router's own serving threads when it has them ([`Shards`]), and a
//! graceful stop that lets requests in flight finish. Body deadlines, header sizes and the
//! error bodies of refused requests are the [`crate::http`] layer's.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::shards::Shards;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A connection that has not sent a request's headers within this is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not arrived within this gets a 408 and the connection closed.
    pub body_read_timeout: Duration,
    /// Open connections at most; past it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Largest request head (request line and headers); past it a 431.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// The answer to a connection past the limit: written once, then the connection is closed.
fn busy() -> Vec<u8> {
    let body = r#"{"error":{"message":"too many open connections to this router; retry shortly","type":"server_error","code":"unavailable","metadata":{}}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `stop`; connections are tracked by `connections` so a
/// drain can wait for them. With `shards`, each accepted connection is served on one of their
/// threads in turn; without, on the calling runtime.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    stop: CancellationToken,
    connections: TaskTracker,
    shards: Option<Arc<Shards>>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room above the head limit, so an oversized head reaches the 431 in the envelope.
        .max_buf_size((limits.max_header_bytes * 4).max(64 * 1024));
    let builder = Arc::new(builder);
    loop {
        let (mut stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("switchyard_http_connections_refused_total").increment(1);
            connections.spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(&busy())).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            stop: stop.clone(),
            _permit: permit,
        };
        let Some(shards) = &shards else {
            connections.spawn(connection.serve(stream));
            continue;
        };
        // The socket leaves this runtime's reactor for the serving thread's.
        match stream.into_std() {
            Ok(stream) => shards.spawn(connections.track_future(async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => connection.serve(stream).await,
                    Err(e) => tracing::warn!(error = %e, "handing a connection over failed"),
                }
            })),
            Err(e) => tracing::warn!(error = %e, "handing a connection over failed"),
        }
    }
}

/// One accepted connection, with what serving it takes.
struct Connection {
    builder: Arc<hyper::server::conn::http1::Builder>,
    app: axum::Router,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves requests on `stream` until the client closes it or `stop` (then gracefully).
    async fn serve(self, stream: TcpStream) {
        metrics::gauge!("switchyard_http_connections").increment(1.0);
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(self.app));
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = self.stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        metrics::gauge!("switchyard_http_connections").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_a_whole_http_response_with_an_openai_envelope() {
        let busy = busy();
        let text = std::str::from_utf8(&busy).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
    }
}
