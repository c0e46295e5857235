//! An incremental server-sent-events parser (the WHATWG event-stream format): bytes in, in any
//! split, events out. Lines end in LF, CRLF or CR (a CR at the end of one read and an LF at the
//! start of the next are one line break); `data:` lines of one event are joined with LF; lines
//! starting with `:` are comments (keep-alives); an event is dispatched at a blank line, and an
//! unterminated event at the end of the stream is dropped, as the format requires.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty when absent (a plain `message`).
    pub event: String,
    /// The `data:` lines joined with LF.
    pub data: String,
}

/// Longest line accepted; a longer one means a broken or hostile upstream.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// A line longer than [`MAX_LINE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; appends every event they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        let mut rest = bytes;
        // The byte after a CR that ended the previous read: an LF there is part of that break.
        // (An empty read says nothing about that byte, so the state survives it.)
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some((&b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (head, tail) = rest.split_at(pos);
            if self.line.len() + head.len() > MAX_LINE {
                return Err(LineTooLong);
            }
            self.line.extend_from_slice(head);
            let was_cr = tail[0] == b'\r';
            rest = &tail[1..];
            if was_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                });
            } else {
                self.event.clear();
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            // `id` and `retry` matter to browsers reconnecting, not to a one-shot completion.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let text = b": keep-alive\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\ndata:a\ndata: b\nid: 7\nretry: 10\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse_all(&[text]),
            vec![
                ev("ping", "{\"type\": \"ping\"}"),
                ev("", "a\nb"),
                ev("", "[DONE]")
            ]
        );
    }

    #[test]
    fn any_line_ending_and_split_crlf() {
        assert_eq!(parse_all(&[b"data: x\r\n\r\n"]), vec![ev("", "x")]);
        assert_eq!(parse_all(&[b"data: x\r\r"]), vec![ev("", "x")]);
        assert_eq!(
            parse_all(&[b"data: x\r", b"\n\r", b"\n"]),
            vec![ev("", "x")]
        );
    }

    #[test]
    fn unterminated_event_is_dropped_and_event_without_data_ignored() {
        assert_eq!(parse_all(&[b"event: a\n\ndata: partial"]), vec![]);
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_LINE + 1];
        assert_eq!(p.push(&big, &mut Vec::new()), Err(LineTooLong));
    }

    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        let event = (
            prop::option::of("[a-z_]{1,12}"),
            prop::collection::vec("[ -~é{}\":]{0,20}", 1..3),
            prop::sample::select(vec!["\n", "\r\n", "\r"]),
            any::<bool>(),
        )
            .prop_map(|(name, lines, eol, comment)| {
                let mut s = String::new();
                if comment {
                    s.push_str(": keep-alive");
                    s.push_str(eol);
                }
                if let Some(n) = name {
                    s.push_str(&format!("event: {n}{eol}"));
                }
                for l in lines {
                    s.push_str(&format!("data: {l}{eol}"));
                }
                s.push_str(eol);
                s
            });
        prop::collection::vec(event, 0..12).prop_map(|v| v.concat().into_bytes())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            stream in stream_strategy(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let whole = parse_all(&[&stream]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&stream[last..p]);
                last = p;
            }
            pieces.push(&stream[last..]);
            prop_assert_eq!(parse_all(&pieces), whole.clone());
            // Byte by byte, the harshest split.
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(parse_all(&bytes), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            for c in &chunks {
                p.push(c, &mut out).unwrap();
            }
        }
    }
}
