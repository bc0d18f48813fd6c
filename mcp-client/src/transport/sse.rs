//! A server-sent-events parser that keeps what MCP needs.
//!
//! Written here rather than taken from a crate because MCP's priming event
//! (revision 2025-11-25) is an id with *empty* data: the usual parsers follow
//! the browser rule of not dispatching such events, and lose the id the
//! client must resume from, and its `retry`.

/// One event as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The `id` field, if the event had one.
    pub(crate) id: Option<String>,
    /// The `data` lines joined with `\n` (empty for a priming event).
    pub(crate) data: String,
    /// The `retry` field in milliseconds.
    pub(crate) retry: Option<u64>,
}

/// Incremental parser: feed bytes, take complete events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_field: bool,
    data_lines: usize,
}

impl SseParser {
    /// Adds bytes and returns the events they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR LF pair is one line ending; a lone CR at the end of the
            // buffer may be the first half of one, so wait for more.
            let crlf = self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n');
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let line: Vec<u8> = self.buffer.drain(..end).collect();
            self.buffer.drain(..if crlf { 2 } else { 1 });
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_field {
                return None;
            }
            self.has_field = false;
            self.data_lines = 0;
            return Some(std::mem::take(&mut self.current));
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data_lines > 0 {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.data_lines += 1;
                self.has_field = true;
            }
            "id" if !value.contains('\0') => {
                self.current.id = Some(value.to_string());
                self.has_field = true;
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.current.retry = Some(ms);
                    self.has_field = true;
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_priming_event_with_its_id_and_retry() {
        let mut p = SseParser::default();
        let events = p.push(b"id: s1_0\nretry: 500\ndata: \n\nid: s1_1\ndata: {\"a\":1}\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("s1_0".into()),
                    data: String::new(),
                    retry: Some(500)
                },
                SseEvent {
                    id: Some("s1_1".into()),
                    data: "{\"a\":1}".into(),
                    retry: None
                },
            ]
        );
    }

    #[test]
    fn handles_split_chunks_crlf_comments_and_multiline_data() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\r\n\r\ndata: line one\r").is_empty());
        assert!(p.push(b"\ndata: line two").is_empty());
        let events = p.push(b"\r\n\r\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "line one\nline two");
        assert_eq!(events[0].id, None);
        let events = p.push(b"data:no-space\n\n");
        assert_eq!(events[0].data, "no-space");
    }
}
