//! [`SseParser`]: Server-Sent Events out of a byte stream, as the HTML standard's
//! event-stream format describes them: `field: value` lines, an event ended by a
//! blank line, `:` comments ignored, `\n`, `\r\n` or `\r` line ends, chunks split
//! anywhere (a multi-byte character included).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`; `message` when the event had none.
    pub name: String,
    /// Every `data:` line, joined with `\n`.
    pub data: String,
    /// The last `id:` seen so far in the stream (it carries over to later events).
    pub id: Option<String>,
}

/// Parses a stream fed in chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// The last chunk ended in `\r`: a `\n` opening the next one belongs to that line end.
    after_cr: bool,
    name: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Takes the next chunk; answers the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if chunk.is_empty() {
            return events;
        }
        let mut bytes = chunk;
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte == b'\n' || byte == b'\r' {
                self.partial.extend_from_slice(&bytes[start..i]);
                let line = std::mem::take(&mut self.partial);
                if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                    events.push(event);
                }
                if byte == b'\r' {
                    if bytes.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    } else if i + 1 == bytes.len() {
                        self.after_cr = true;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        self.partial.extend_from_slice(&bytes[start.min(bytes.len())..]);
        events
    }

    /// One whole line; a blank one dispatches the event gathered so far.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let (name, data) = (self.name.take(), self.data.take());
            let name = name.unwrap_or_else(|| "message".to_owned());
            return data.map(|data| SseEvent { name, data, id: self.id.clone() });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent { name: name.to_owned(), data: data.to_owned(), id: id.map(str::to_owned) }
    }

    #[test]
    fn events_comments_and_line_ends() {
        let mut parser = SseParser::default();
        let text = ":keepalive\n\nevent: snapshot\nid: 3\ndata: {\"a\":1}\n\nevent:progress\r\ndata:x\r\ndata: y\r\n\r\ndata: plain\r\r";
        assert_eq!(
            parser.feed(text.as_bytes()),
            vec![
                event("snapshot", "{\"a\":1}", Some("3")),
                event("progress", "x\ny", Some("3")),
                event("message", "plain", Some("3"))
            ]
        );
    }

    #[test]
    fn chunks_may_split_anything() {
        let text = "event: finished\r\nid: 21\r\ndata: {\"state\":\"succeeded\",\"é\":1}\r\n\r\n";
        for split in 0..=text.len() {
            let mut parser = SseParser::default();
            let (a, b) = text.as_bytes().split_at(split);
            let mut events = parser.feed(a);
            events.extend(parser.feed(b));
            assert_eq!(
                events,
                vec![event("finished", "{\"state\":\"succeeded\",\"é\":1}", Some("21"))],
                "{split}"
            );
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"event: snapshot\nid: 1\n\n").is_empty());
        assert_eq!(parser.feed(b"data: z\n\n"), vec![event("message", "z", Some("1"))], "the name was reset");
    }
}
