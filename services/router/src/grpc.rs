//! gRPC `switchyard.v1.Router`: Chat, ChatStream and ListModels over the same pipeline as the
//! HTTP API, and the request records (`GetRequest`, `ListRequests`). Auth: `authorization: Bearer <key>` metadata. A client deadline (`grpc-timeout`)
//! shortens the workflow's. A stream that fails after its first chunk ends with a non-OK status.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchyard_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::edge::{Api, Caller, Incoming};
use crate::handler::{Failure, Reply, Router};
use crate::stream::StreamEvent;

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

/// What the request carries besides its message, from its metadata.
fn incoming<T>(r: &Request<T>) -> Incoming {
    Incoming::read(Api::Grpc, |name| r.metadata().get(name)?.to_str().ok())
}

fn authenticate<T>(router: &Router, r: &Request<T>) -> Result<(Caller, Incoming), Status> {
    let incoming = incoming(r);
    let caller = router.authenticate(&incoming).map_err(|e| e.to_status())?;
    Ok((caller, incoming))
}

/// A failure as a status; when attempts were made, the routing trace rides along as the
/// binary trailing metadata `switchyard-routing-bin` (a `switchyard.v1.RoutingTrace`), as the
/// HTTP API carries it in the error body.
fn failure_status(f: Failure) -> Status {
    use prost::Message;
    let mut status = f.error.to_status();
    if let Some((a, trace)) = f.routing {
        let bytes = convert::trace(&trace, &a).encode_to_vec();
        status.metadata_mut().insert_bin(
            ROUTING_METADATA,
            tonic::metadata::MetadataValue::from_bytes(&bytes),
        );
    }
    status
}

/// The trailing metadata key of a failed request's routing trace.
pub const ROUTING_METADATA: &str = "switchyard-routing-bin";

/// The stored form of a gRPC reply (the protobuf encoding, base64) and back.
mod stored {
    use base64::Engine;
    use prost::Message;
    use tonic::Status;

    pub fn encode(reply: &impl Message) -> String {
        base64::engine::general_purpose::STANDARD.encode(reply.encode_to_vec())
    }

    pub fn decode<M: Message + Default>(text: &str) -> Result<M, Status> {
        let unreadable = |_| Status::internal("stored reply is not readable");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| unreadable(e.to_string()))?;
        M::decode(bytes.as_slice()).map_err(|e| unreadable(e.to_string()))
    }

    /// A reply stored for an idempotency key, marked when replayed.
    pub fn response<M: Message + Default>(
        text: &str,
        replayed: bool,
    ) -> Result<tonic::Response<M>, Status> {
        let mut resp = tonic::Response::new(decode(text)?);
        if replayed {
            resp.metadata_mut().insert(
                crate::edge::REPLAYED,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        Ok(resp)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ChatStreamEvent, Status>> + Send>>;

impl RouterGrpc {
    async fn chat_inner(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let r = &self.router;
        let (caller, incoming) = authenticate(r, &request)?;
        let req = convert::request(request.into_inner()).map_err(|e| e.to_status())?;
        let reply = |s: &crate::handler::Served| {
            convert::response(&s.response, convert::trace(&s.trace, &s.admitted))
        };
        match r
            .complete(caller, &incoming, req, |s| stored::encode(&reply(s)))
            .await
            .map_err(failure_status)?
        {
            Reply::Served(s) => Ok(Response::new(reply(&s))),
            Reply::Stored { text, replayed } => stored::response(&text, replayed),
        }
    }

    async fn embed_inner(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let r = &self.router;
        let (caller, incoming) = authenticate(r, &request)?;
        let req = convert::embed_request(request.into_inner()).map_err(|e| e.to_status())?;
        let reply = |e: &crate::handler::Embedded| {
            convert::embed_response(&e.response, convert::trace(&e.trace, &e.admitted))
        };
        match r
            .embed(caller, &incoming, req, |e| stored::encode(&reply(e)))
            .await
            .map_err(failure_status)?
        {
            Reply::Served(e) => Ok(Response::new(reply(&e))),
            Reply::Stored { text, replayed } => stored::response(&text, replayed),
        }
    }

    async fn chat_stream_inner(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = &self.router;
        let (caller, incoming) = authenticate(r, &request)?;
        let req = convert::request(request.into_inner()).map_err(|e| e.to_status())?;
        let session = r
            .stream(caller, &incoming, req)
            .await
            .map_err(failure_status)?;
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
        let span = crate::edge::request_span(Api::Grpc);
        tracing::Instrument::instrument(self.chat_inner(request), span).await
    }

    async fn chat_stream(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::ChatStreamStream>, Status> {
        let span = crate::edge::request_span(Api::Grpc);
        tracing::Instrument::instrument(self.chat_stream_inner(request), span).await
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let span = crate::edge::request_span(Api::Grpc);
        tracing::Instrument::instrument(self.embed_inner(request), span).await
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = &self.router;
        let (caller, incoming) = authenticate(r, &request)?;
        let body = request.into_inner();
        let req = if body.openai_json.is_empty() {
            convert::request(body.request.unwrap_or_default())
        } else {
            crate::http::parse(body.openai_json.as_bytes())
        }
        .map_err(|e| e.to_status())?;
        let x = r
            .explain(&caller, &incoming, &req)
            .map_err(|e| e.to_status())?;
        Ok(Response::new(x.to_proto()))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let (caller, _) = authenticate(&self.router, &request)?;
        let workflow = request.get_ref().workflow.clone();
        let listed = crate::models::listing(
            &self.router.catalog().routing,
            &caller,
            (!workflow.is_empty()).then_some(workflow.as_str()),
        )
        .map_err(|e| e.to_status())?;
        let models = listed
            .iter()
            .map(|m| pb::ModelInfo {
                id: m.id.to_string(),
                context_length: m.context_length(),
                max_output: m.max_output(),
                providers: m.providers(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn get_request(
        &self,
        request: Request<pb::GetRequestRecordRequest>,
    ) -> Result<Response<pb::RequestRecordDocument>, Status> {
        let (caller, _) = authenticate(&self.router, &request)?;
        let q = request.into_inner();
        let org = (!q.org_id.is_empty()).then_some(q.org_id.as_str());
        let record = crate::generations::find(&self.router, &caller, org, &q.id)
            .await
            .map_err(unreadable)?;
        Ok(Response::new(document(&record)))
    }

    async fn list_requests(
        &self,
        request: Request<pb::ListRequestRecordsRequest>,
    ) -> Result<Response<pb::ListRequestRecordsResponse>, Status> {
        let (caller, _) = authenticate(&self.router, &request)?;
        let q = request.into_inner();
        let some = |s: String| (!s.is_empty()).then_some(s);
        let filter = crate::generations::Filter {
            outcome: some(q.outcome),
            endpoint: some(q.endpoint),
        };
        let limit = if q.limit == 0 { 50 } else { q.limit as usize };
        let org = (!q.org_id.is_empty()).then_some(q.org_id.as_str());
        let records =
            crate::generations::list(&self.router, &caller, org, q.since_unix_ms, filter, limit)
                .await
                .map_err(unreadable)?;
        Ok(Response::new(pb::ListRequestRecordsResponse {
            records: records.iter().map(document).collect(),
        }))
    }
}

fn document(r: &switchyard_state::RequestRecord) -> pb::RequestRecordDocument {
    pb::RequestRecordDocument {
        json: serde_json::to_string(r).unwrap_or_default(),
    }
}

fn unreadable(u: crate::generations::Unreadable) -> Status {
    use crate::generations::Unreadable;
    match u {
        Unreadable::NotFound(m) => Status::not_found(m),
        Unreadable::Forbidden => Status::permission_denied(
            "reading another org's requests needs a key with the `admin` scope",
        ),
        Unreadable::Failed(e) => e.to_status(),
    }
}
