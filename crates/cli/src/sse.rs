//! An incremental Server-Sent Events parser: bytes arrive in arbitrary chunks (a line, an event,
//! or a multi-byte character may be split anywhere), complete events come out.

use reelay_protocol::JobView;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any (`message` is the SSE default).
    pub event: Option<String>,
    /// All `data:` lines of the event, joined with `\n`.
    pub data: String,
}

/// A line or an event larger than this is dropped, so a hostile server cannot make the client
/// buffer without bound.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    /// The incomplete line at the end of the previous chunk.
    line: Vec<u8>,
    /// Set when the current line grew too long; everything up to the next newline is skipped.
    skipping_line: bool,
    data: Option<String>,
    event: Option<String>,
    oversized_event: bool,
}

impl SseParser {
    /// Feeds one chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(newline);
            rest = &tail[1..];
            if self.skipping_line {
                self.skipping_line = false;
                self.line.clear();
                continue;
            }
            self.line.extend_from_slice(head);
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.process_line(&line, &mut events);
            line.clear();
            self.line = line;
        }
        if !self.skipping_line {
            self.line.extend_from_slice(rest);
            if self.line.len() > MAX_EVENT_BYTES {
                self.line = Vec::new();
                self.skipping_line = true;
                self.oversized_event = true;
            }
        }
        events
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            if std::mem::take(&mut self.oversized_event) {
                tracing::debug!("dropped an oversized server-sent event");
                return;
            }
            if let Some(data) = data {
                events.push(SseEvent { event, data });
            }
            return;
        }
        if line[0] == b':' {
            return; // a comment, typically a keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                let pending = self.data.as_ref().map_or(0, String::len);
                if pending + value.len() > MAX_EVENT_BYTES {
                    self.oversized_event = true;
                    self.data = Some(String::new());
                    return;
                }
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter here
        }
    }
}

/// The job view carried by an event, or `None` (logged) when the data is not one.
pub fn job_view(event: &SseEvent) -> Option<JobView> {
    match serde_json::from_str::<JobView>(&event.data) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(event = ?event.event, error = %e, "ignoring an event that is not a job view");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_json(status: &str, progress: f64) -> String {
        serde_json::json!({
            "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2",
            "cluster": "aws",
            "status": status,
            "progress": progress,
            "attempts": 1,
            "created_at": "2024-11-26T08:23:00Z",
            "started_at": null,
            "finished_at": null,
            "error": null,
            "outputs": []
        })
        .to_string()
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<JobView> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.feed(c))
            .filter_map(|e| job_view(&e))
            .collect()
    }

    #[test]
    fn events_split_at_every_byte_boundary() {
        let stream = format!(
            ": keep-alive\n\ndata: {}\n\nevent: job\r\ndata: {}\r\n\r\ndata: {}\n\n",
            view_json("queued", 0.0),
            view_json("running", 0.5),
            view_json("succeeded", 1.0)
        );
        let bytes = stream.as_bytes();
        let whole = parse_chunks(&[bytes]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].progress, 0.5);
        assert_eq!(whole[2].status, reelay_protocol::JobStatus::Succeeded);
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at {split}");
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&single_bytes), whole);
    }

    #[test]
    fn multi_line_data_is_joined_and_fields_parsed() {
        let mut parser = SseParser::default();
        let events = parser.feed(b"event: update\ndata:{\"a\":\ndata: 1}\nid: 7\nretry: 100\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("update".into()),
                data: "{\"a\":\n1}".into()
            }]
        );
        // An event without data is not dispatched, and its event name does not leak.
        assert!(parser.feed(b"event: ping\n\n").is_empty());
        assert_eq!(parser.feed(b"data\n\n")[0].event, None);
    }

    #[test]
    fn incomplete_and_garbage_events_are_ignored() {
        let good = view_json("running", 0.25);
        let views = parse_chunks(&[
            b"data: not json\n\n",
            b"data: {\"id\": 1}\n\n",
            b"\xff\xfe garbage line\n\n",
            format!("data: {good}\n\n").as_bytes(),
            b"data: {\"truncated\":",
        ]);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].progress, 0.25);
    }

    #[test]
    fn a_multibyte_character_split_across_chunks_survives() {
        let mut parser = SseParser::default();
        let text = "data: héllo\n\n".as_bytes();
        let cut = text.iter().position(|&b| b == 0xc3).unwrap() + 1;
        assert!(parser.feed(&text[..cut]).is_empty());
        assert_eq!(parser.feed(&text[cut..])[0].data, "héllo");
    }

    #[test]
    fn oversized_lines_are_dropped_without_unbounded_buffering() {
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; 1024 * 1024];
        assert!(parser.feed(b"data: ").is_empty());
        for _ in 0..10 {
            assert!(parser.feed(&chunk).is_empty());
        }
        assert!(parser.line.len() <= MAX_EVENT_BYTES);
        assert!(parser.feed(b"\n\n").is_empty());
        assert_eq!(parser.feed(b"data: ok\n\n")[0].data, "ok");
    }
}
