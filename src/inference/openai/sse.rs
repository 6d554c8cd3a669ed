//! A tolerant reader of server-sent events (the WHATWG `text/event-stream`
//! format) as OpenAI-compatible servers stream them: bytes go in as they arrive,
//! split anywhere (inside a UTF-8 character, between `\r` and `\n`), and whole
//! events come out.
//!
//! Lines end with `\n`, `\r\n` or `\r`; `data:` takes its value with or without
//! one leading space, and several `data:` lines join with `\n`; `event:` names the
//! event; comment lines (`:`), `id:`, `retry:` and unknown fields are read and
//! dropped (castwork never reconnects, so the last id and the retry delay are of
//! no use). A blank line ends an event; an event without data is no event.
//!
//! One event may not grow past `max_event_bytes` (a hostile server must not make
//! castwork buffer without bound).

use std::collections::VecDeque;

/// One event: its `event:` name (when given) and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Why the stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event of the stream is larger than {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// The reader: [`push`](Self::push) bytes, take [`next_event`](Self::next_event)s,
/// and call [`finish`](Self::finish) at the end of the body.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// The bytes of the line being read (decoded once whole, so a split UTF-8
    /// character is never cut).
    line: Vec<u8>,
    /// The last byte pushed was a `\r`: a `\n` right after it ends no new line.
    after_cr: bool,
    /// No line was read yet (a byte-order mark may start the first).
    first_line: bool,
    /// The event being read.
    event: Option<String>,
    data: String,
    has_data: bool,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: None,
            data: String::new(),
            has_data: false,
            ready: VecDeque::new(),
        }
    }

    /// Reads `bytes`, the next part of the body.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        let Some(&first) = bytes.first() else { return Ok(()) };
        if std::mem::replace(&mut self.after_cr, false) && first == b'\n' {
            bytes = &bytes[1..];
        }
        while let Some(end) = bytes.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            self.take_line_part(&bytes[..end])?;
            self.end_line()?;
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        self.take_line_part(bytes)
    }

    /// The next whole event, in order.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// The body ended: a last line without its line end is read, and an event
    /// without its blank line is kept (servers that close right after their last
    /// `data:` line lose nothing). Its events are then in [`next_event`](Self::next_event).
    pub fn finish(&mut self) -> Result<(), SseError> {
        if !self.line.is_empty() {
            self.end_line()?;
        }
        self.dispatch();
        Ok(())
    }

    fn take_line_part(&mut self, part: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + part.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge { limit: self.max_event_bytes });
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), SseError> {
        let mut line = std::mem::take(&mut self.line);
        if std::mem::replace(&mut self.first_line, false) && line.starts_with("\u{feff}".as_bytes()) {
            line.drain(..3);
        }
        if line.is_empty() {
            self.dispatch();
        } else {
            self.field(&String::from_utf8_lossy(&line))?;
        }
        // keep the line's allocation for the next one
        line.clear();
        self.line = line;
        Ok(())
    }

    fn field(&mut self, line: &str) -> Result<(), SseError> {
        let (name, value) = match line.split_once(':') {
            Some(("", _)) => return Ok(()), // a comment
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(SseError::EventTooLarge { limit: self.max_event_bytes });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // "id", "retry" and unknown fields: nothing castwork uses
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        if std::mem::replace(&mut self.has_data, false) {
            let data = std::mem::take(&mut self.data);
            self.ready.push_back(SseEvent { event: event.filter(|e| !e.is_empty()), data });
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 20);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk).unwrap();
            events.extend(std::iter::from_fn(|| parser.next_event()));
        }
        parser.finish().unwrap();
        events.extend(std::iter::from_fn(|| parser.next_event()));
        events
    }

    fn data(text: &str) -> SseEvent {
        SseEvent { event: None, data: text.to_owned() }
    }

    #[test]
    fn reads_openai_style_events() {
        let body = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(parse(&[body]), vec![data("{\"a\":1}"), data("{\"b\":2}"), data("[DONE]")]);
    }

    #[test]
    fn every_line_end_counts_and_crlf_is_one() {
        for body in
            [&b"data: x\n\ndata: y\n\n"[..], b"data: x\r\n\r\ndata: y\r\n\r\n", b"data: x\r\rdata: y\r\r"]
        {
            assert_eq!(parse(&[body]), vec![data("x"), data("y")], "{body:?}");
        }
        // a \r\n split between two pushes is one line end, not a line end and a blank line
        assert_eq!(parse(&[b"data: x\r", b"\ndata: y\r\n\r\n"]), vec![data("x\ny")]);
    }

    #[test]
    fn one_leading_space_is_dropped_and_data_lines_join() {
        assert_eq!(parse(&[b"data:x\ndata:  y\ndata\n\n"]), vec![data("x\n y\n")]);
    }

    #[test]
    fn comments_ids_retries_and_unknown_fields_are_skipped() {
        let body = b": keep-alive\nid: 7\nretry: 100\nfoo: bar\ndata: x\n\n:\n\nid: 8\n\n";
        assert_eq!(parse(&[body]), vec![data("x")]);
    }

    #[test]
    fn an_event_name_belongs_to_its_event_only() {
        let body = b"event: error\ndata: {\"error\":{}}\n\ndata: y\n\nevent: ping\n\ndata: z\n\n";
        assert_eq!(
            parse(&[body]),
            vec![
                SseEvent { event: Some("error".into()), data: "{\"error\":{}}".into() },
                data("y"),
                data("z"),
            ]
        );
    }

    #[test]
    fn a_character_split_between_pushes_survives() {
        let body = "data: é€😀\n\n".as_bytes();
        for cut in 0..body.len() {
            assert_eq!(parse(&[&body[..cut], &body[cut..]]), vec![data("é€😀")], "cut at {cut}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_bad_utf8_is_replaced() {
        assert_eq!(parse(&[b"\xef\xbb\xbfdata: x\n\n"]), vec![data("x")]);
        assert_eq!(parse(&[b"data: a\xffb\n\n"]), vec![data("a\u{fffd}b")]);
    }

    #[test]
    fn the_end_of_the_body_ends_the_last_event() {
        assert_eq!(parse(&[b"data: x\n\ndata: [DONE]"]), vec![data("x"), data("[DONE]")]);
        assert_eq!(parse(&[b"data: [DONE]\n"]), vec![data("[DONE]")]);
        assert_eq!(parse(&[b"event: x\n"]), vec![]);
    }

    #[test]
    fn an_event_past_the_bound_is_refused() {
        let mut parser = SseParser::new(16);
        assert_eq!(parser.push(b"data: 0123456789"), Ok(()));
        assert_eq!(parser.push(b"abcdefgh"), Err(SseError::EventTooLarge { limit: 16 }));
        // many data lines of one event count together
        let mut parser = SseParser::new(16);
        let lines = parser.push(b"data: 0123456\ndata: 0123456\ndata: 0123456\n");
        assert_eq!(lines, Err(SseError::EventTooLarge { limit: 16 }));
        // a line without end counts too
        assert!(SseParser::new(16).push(&[b'x'; 17]).is_err());
    }

    /// A stream of events written in any of the styles the reader accepts.
    fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<SseEvent>)> {
        let field = prop_oneof![
            "[a-z {}\":,é😀]{0,12}".prop_map(|v| (true, v)),
            "[a-z]{0,5}".prop_map(|v| (false, v)),
        ];
        let event = (proptest::collection::vec(field, 1..4), proptest::option::of("[a-z]{1,6}"), 0..3usize);
        proptest::collection::vec(event, 0..6).prop_map(|events| {
            let ends = ["\n", "\r\n", "\r"];
            let mut body = Vec::new();
            let mut expected = Vec::new();
            for (fields, name, end) in events {
                let end = ends[end];
                let mut data: Vec<String> = Vec::new();
                if let Some(name) = &name {
                    body.extend_from_slice(format!("event:{name}{end}").as_bytes());
                }
                for (is_data, value) in fields {
                    if is_data {
                        body.extend_from_slice(format!("data: {value}{end}").as_bytes());
                        data.push(value);
                    } else {
                        body.extend_from_slice(format!(": {value}{end}id: {value}{end}").as_bytes());
                    }
                }
                body.extend_from_slice(end.as_bytes());
                if !data.is_empty() {
                    expected.push(SseEvent { event: name, data: data.join("\n") });
                }
            }
            (body, expected)
        })
    }

    proptest! {
        #[test]
        fn splitting_the_body_anywhere_reads_the_same_events(
            (body, expected) in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts {
                chunks.push(&body[from..cut]);
                from = cut;
            }
            chunks.push(&body[from..]);
            prop_assert_eq!(parse(&[&body]), expected.clone());
            prop_assert_eq!(parse(&chunks), expected);
        }
    }
}
