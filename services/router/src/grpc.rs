//! gRPC `switchyard.v1.Router`: Chat, ChatStream and ListModels over the same pipeline as the
//! HTTP API. Auth: `authorization: Bearer <key>` metadata. A client deadline (`grpc-timeout`)
//! shortens the workflow's. A stream that fails after its first chunk ends with a non-OK status.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use switchyard_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::pipeline::{AdmitOptions, Admitted, Claim, Router, StreamEvent};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct RouterGrpc {
    router: Arc<Router>,
}

impl RouterGrpc {
    /// Serves `router` (streams open at its drain deadline end with an error status).
    pub fn new(router: Arc<Router>) -> Self {
        RouterGrpc { router }
    }
}

fn bearer<T>(r: &Request<T>) -> Option<String> {
    r.metadata()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|k| k.trim().to_string())
}

/// `grpc-timeout` ("100m", "5S", …) as a duration.
fn grpc_timeout<T>(r: &Request<T>) -> Option<Duration> {
    let v = r.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The caller's deadline and route seed from the request metadata.
fn options<T>(r: &Request<T>) -> Result<AdmitOptions, Status> {
    let seed = match r.metadata().get("switchyard-route-seed") {
        None => None,
        Some(v) => Some(
            AdmitOptions::parse_seed(v.to_str().unwrap_or("(not text)"))
                .map_err(|e| e.to_status())?,
        ),
    };
    Ok(AdmitOptions {
        seed,
        timeout: grpc_timeout(r),
    })
}

async fn admit<T>(
    r: &Router,
    request: &Request<T>,
    req: &switchyard_core::ChatRequest,
) -> Result<Arc<Admitted>, Status> {
    let key = bearer(request);
    let (policy, record) = r.authenticate(key.as_deref()).map_err(|e| e.to_status())?;
    r.admit(&policy, record, req, options(request)?)
        .await
        .map_err(|e| e.to_status())
}

/// A Chat with `idempotency-key` metadata: the stored reply is the protobuf encoding, base64.
async fn idempotent(
    r: &Arc<Router>,
    probe: &Request<()>,
    req: &switchyard_core::ChatRequest,
    idem: &str,
) -> Result<Response<pb::ChatResponse>, Status> {
    use base64::Engine;
    use prost::Message;
    use sha2::Digest;
    let (policy, record) = r
        .authenticate(bearer(probe).as_deref())
        .map_err(|e| e.to_status())?;
    let hash: String = sha2::Sha256::digest(serde_json::to_vec(req).unwrap_or_default())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let encode = |resp: &switchyard_core::ChatResponse,
                  trace: &[crate::engine::AttemptTrace],
                  a: &Admitted| {
        let pb = convert::response(resp, convert::trace(trace, a));
        base64::engine::general_purpose::STANDARD.encode(pb.encode_to_vec())
    };
    let out = r
        .run_idempotent(
            &policy,
            record,
            req,
            options(probe)?,
            Claim {
                key: &format!("grpc:{idem}"),
                request_hash: &hash,
            },
            encode,
        )
        .await
        .map_err(|e| e.to_status())?;
    let (text, replayed) = match out {
        crate::pipeline::Idempotent::Fresh(t) => (t, false),
        crate::pipeline::Idempotent::Replay(t) => (t, true),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Status::internal("stored reply is not readable"))?;
    let reply = pb::ChatResponse::decode(bytes.as_slice())
        .map_err(|_| Status::internal("stored reply is not readable"))?;
    let mut resp = Response::new(reply);
    if replayed {
        resp.metadata_mut().insert(
            "idempotent-replayed",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    Ok(resp)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ChatStreamEvent, Status>> + Send>>;

impl RouterGrpc {
    async fn chat_inner(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let r = &self.router;
        let (metadata, extensions, body) = request.into_parts();
        let probe = Request::from_parts(metadata, extensions, ());
        let req = convert::request(body).map_err(|e| e.to_status())?;
        if let Some(idem) = probe
            .metadata()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        {
            return idempotent(r, &probe, &req, &idem).await;
        }
        let a = admit(r, &probe, &req).await?;
        match r.run_complete(&a, &req).await {
            Ok((resp, trace)) => Ok(Response::new(convert::response(
                &resp,
                convert::trace(&trace, &a),
            ))),
            Err((error, _)) => Err(error.to_status()),
        }
    }

    async fn chat_stream_inner(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = self.router.clone();
        let (metadata, extensions, body) = request.into_parts();
        let probe = Request::from_parts(metadata, extensions, ());
        let req = convert::request(body).map_err(|e| e.to_status())?;
        let a = admit(&r, &probe, &req).await?;
        let session = r
            .start_stream(&a, &req)
            .await
            .map_err(|(e, _)| e.to_status())?;
        let events = futures::stream::unfold(session, |mut s| async move {
            loop {
                let event = match s.next().await? {
                    StreamEvent::Chunk(chunk) => match convert::chunk(&chunk) {
                        Some(event) => Ok(event),
                        None => continue,
                    },
                    StreamEvent::Done(usage) => Ok(pb::ChatStreamEvent {
                        event: Some(pb::chat_stream_event::Event::Done(pb::StreamDone {
                            usage: Some(convert::usage(&usage)),
                            trace: Some(convert::trace(&s.trace, &s.admitted)),
                        })),
                    }),
                    // After content went out: a non-OK status ends the stream.
                    StreamEvent::Failed(error) => Err(error.to_status()),
                };
                return Some((event, s));
            }
        });
        Ok(Response::new(Box::pin(events)))
    }
}

#[tonic::async_trait]
impl pb::router_server::Router for RouterGrpc {
    type ChatStreamStream = EventStream;

    async fn chat(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let span = crate::observe::request_span("grpc");
        tracing::Instrument::instrument(self.chat_inner(request), span).await
    }

    async fn chat_stream(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatStreamStream>, Status> {
        let span = crate::observe::request_span("grpc");
        tracing::Instrument::instrument(self.chat_stream_inner(request), span).await
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = &self.router;
        let (policy, key) = r
            .authenticate(bearer(&request).as_deref())
            .map_err(|e| e.to_status())?;
        let options = options(&request)?;
        let body = request.into_inner();
        let req = if body.openai_json.is_empty() {
            convert::request(body.request.unwrap_or_default())
        } else {
            crate::http::parse(body.openai_json.as_bytes())
        }
        .map_err(|e| e.to_status())?;
        let x = r
            .explain(&policy, &key, &req, options)
            .map_err(|e| e.to_status())?;
        Ok(Response::new(x.to_proto(r)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.router
            .authenticate(bearer(&request).as_deref())
            .map_err(|e| e.to_status())?;
        let models = self
            .router
            .models
            .iter()
            .map(|(id, ctx, out)| pb::ModelInfo {
                id: id.clone(),
                context_length: *ctx,
                max_output: *out,
                providers: self
                    .router
                    .routing
                    .candidates(id)
                    .unwrap_or(&[])
                    .iter()
                    .map(|c| c.provider.to_string())
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}
