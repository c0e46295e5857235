//! Serving a Switchyard gRPC service the same way everywhere: the service itself plus
//! `grpc.health.v1` (reporting it serving) and server reflection (v1 and v1alpha) listing exactly
//! the services the port serves, TCP_NODELAY on accepted connections, mutual TLS when configured
//! (see [`crate::tls`]), and a graceful stop.

use std::convert::Infallible;
use std::future::Future;

use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::server::NamedService;

/// Prepares `service` on `listener`; the returned future serves until `shutdown` and should be
/// spawned. Setup errors (reflection descriptors, TLS files) are returned here, not hidden in
/// the task. When `draining` fires (see [`crate::drain`]), `grpc.health.v1` reports the service
/// NOT_SERVING while it still serves; at `shutdown` it stops accepting and waits for the calls
/// in flight.
pub async fn grpc_server<S>(
    listener: TcpListener,
    service: S,
    draining: CancellationToken,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = ()> + Send, String>
where
    S: Service<Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    tokio::spawn(async move {
        draining.cancelled().await;
        reporter.set_not_serving::<S>().await;
    });
    let reflection_v1 = reflection::<S>()
        .build_v1()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    let reflection_alpha = reflection::<S>()
        .build_v1alpha()
        .map_err(|e| format!("gRPC reflection (v1alpha): {e}"))?;
    let tls = crate::tls::current()?;
    Ok(async move {
        let router = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_alpha)
            .add_service(service);
        let signal = shutdown.cancelled_owned();
        let served = match tls {
            // Mutual TLS: only clients with a certificate signed by the CA get through.
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), signal)
                    .await
            }
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        if let Err(e) = served {
            tracing::error!(service = S::NAME, error = %e, "gRPC server failed");
        }
    })
}

/// The services a port serves, as its reflection lists them: the Switchyard service `S`,
/// `grpc.health.v1.Health` and reflection itself (`v1` and `v1alpha`, which older clients such
/// as Python's `grpcio-reflection` speak), and nothing else.
pub const fn served_services(service: &str) -> [&str; 4] {
    [
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
}

/// A reflection builder that knows every descriptor a port needs and advertises exactly the
/// services it serves.
fn reflection<'b, S: NamedService>() -> tonic_reflection::server::Builder<'b> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        // Both reflection descriptors are registered above, once each.
        .include_reflection_service(false);
    for name in served_services(S::NAME) {
        builder = builder.with_service_name(name);
    }
    builder
}
