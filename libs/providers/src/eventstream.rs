//! AWS's binary event stream (`application/vnd.amazon.eventstream`), as Bedrock's
//! ConverseStream sends it, decoded with the maintained smithy decoder (prelude, header and
//! message CRCs checked) into the same [`SseEvent`]s the SSE formats produce: the event name is
//! the message's `:event-type`, or `exception:` + its `:exception-type` for an exception (and
//! `error:` + `:error-code` for an error message); the data is the payload.

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Buf, BytesMut};

use crate::sse::{LineTooLong, MAX_LINE, SseEvent, SseParser};

/// The largest event-stream message accepted (the format's own limit is 16 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Decodes event-stream messages from bytes split anywhere.
#[derive(Debug, Default)]
pub struct EventStreamParser {
    buf: BytesMut,
}

impl EventStreamParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and emits every complete message. A broken frame (bad CRC, impossible
    /// length) is an error: the rest of the stream cannot be trusted.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        // Each message starts with its total length; the smithy reader checks the rest.
        while self.buf.len() >= 4 {
            let total = (&self.buf[..4]).get_u32() as usize;
            if total > MAX_MESSAGE {
                return Err(format!("event-stream message of {total} bytes"));
            }
            if self.buf.len() < total {
                break;
            }
            let frame = self.buf.split_to(total).freeze();
            match read_message_from(frame) {
                Ok(message) => out.push(event_of(&message)),
                Err(e) => return Err(format!("broken event-stream frame: {e}")),
            }
        }
        Ok(())
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

fn event_of(message: &Message) -> SseEvent {
    let event = match header(message, ":message-type") {
        Some("exception") => format!(
            "exception:{}",
            header(message, ":exception-type").unwrap_or("unknown")
        ),
        Some("error") => format!(
            "error:{}",
            header(message, ":error-code").unwrap_or("unknown")
        ),
        _ => header(message, ":event-type").unwrap_or("").to_string(),
    };
    let data = match (
        header(message, ":message-type"),
        header(message, ":error-message"),
    ) {
        (Some("error"), Some(text)) => serde_json::json!({ "message": text }).to_string(),
        _ => String::from_utf8_lossy(message.payload()).into_owned(),
    };
    SseEvent { event, data }
}

/// Cuts a stream into events the way its format frames them.
#[derive(Debug)]
pub(crate) enum Framer {
    Sse(SseParser),
    Aws(EventStreamParser),
}

impl Framer {
    pub(crate) fn new(framing: crate::adapter::Framing) -> Self {
        match framing {
            crate::adapter::Framing::Sse => Framer::Sse(SseParser::new()),
            crate::adapter::Framing::AwsEventStream => Framer::Aws(EventStreamParser::new()),
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        match self {
            Framer::Sse(p) => p
                .push(bytes, out)
                .map_err(|LineTooLong| format!("an event line over {MAX_LINE} bytes")),
            Framer::Aws(p) => p.push(bytes, out),
        }
    }
}

/// Encodes one event-stream message (for the simulator and tests): an `event` with JSON payload,
/// or an `exception` of `exception_type`.
pub fn encode(event_type: &str, exception: bool, payload: &[u8]) -> Vec<u8> {
    use aws_smithy_types::event_stream::Header;
    let mut message = Message::new(bytes::Bytes::copy_from_slice(payload))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String((if exception { "exception" } else { "event" }).into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    message = message.add_header(Header::new(
        if exception {
            ":exception-type"
        } else {
            ":event-type"
        },
        HeaderValue::String(event_type.to_string().into()),
    ));
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for messages under the format's limits.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_decode_to_events() {
        let mut bytes = encode("messageStart", false, br#"{"role":"assistant"}"#);
        bytes.extend(encode(
            "contentBlockDelta",
            false,
            br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        bytes.extend(encode(
            "throttlingException",
            true,
            br#"{"message":"slow down"}"#,
        ));
        for split in 1..bytes.len() {
            let mut p = EventStreamParser::new();
            let mut out = Vec::new();
            p.push(&bytes[..split], &mut out).unwrap();
            p.push(&bytes[split..], &mut out).unwrap();
            assert_eq!(out.len(), 3, "split at {split}");
            assert_eq!(out[0].event, "messageStart");
            assert_eq!(
                out[1].data,
                r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#
            );
            assert_eq!(out[2].event, "exception:throttlingException");
        }
    }

    #[test]
    fn a_corrupted_frame_is_an_error() {
        let mut bytes = encode("messageStart", false, br#"{"role":"assistant"}"#);
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        let mut out = Vec::new();
        assert!(EventStreamParser::new().push(&bytes, &mut out).is_err());
    }
}
