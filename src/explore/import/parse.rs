//! The reading half of the import: sniffs gzip, splits the input into lines, parses
//! and validates each line, and hands batches to the writer through a bounded
//! channel. It does blocking I/O, so it runs on a blocking thread.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use flate2::bufread::MultiGzDecoder;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::Rejected;
use crate::explore::model::ItemInput;
use crate::explore::validate::{content_hash, validate_input};

/// A longer line is rejected without being parsed (an item's body is at most 100 KiB).
pub(super) const MAX_LINE_BYTES: usize = 1024 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A line that parsed and validated.
#[derive(Debug)]
pub(super) struct Parsed {
    pub id: String,
    pub input: ItemInput,
    pub hash: String,
}

/// Consecutive lines of the input, ready to write in one transaction.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Good lines; no id appears twice.
    pub items: Vec<Parsed>,
    pub rejected: Vec<Rejected>,
    /// Lines read from the start of the input up to the end of this batch.
    pub lines_read: u64,
    /// Bytes consumed from the input (compressed bytes for gzip) up to this batch.
    pub bytes_read: u64,
}

/// One line of the catalogue. Unknown fields (such as `score`) are ignored.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object describing an item")]
struct Line {
    #[serde(default)]
    id: Option<String>,
    title: String,
    #[serde(default)]
    body: String,
    category: String,
    category_code: String,
    group: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    source_url: Option<String>,
    published_at: String,
}

/// Parses and validates one non-empty line; the error is the reason to report.
pub(super) fn parse_line(bytes: &[u8]) -> Result<Parsed, String> {
    let raw: Line = serde_json::from_slice(bytes).map_err(|e| describe_json_error(&e))?;
    let published_at = DateTime::parse_from_rfc3339(raw.published_at.trim())
        .map_err(|e| format!("published_at: not an RFC 3339 date-time ({e})"))?
        .with_timezone(&Utc);
    let Some(id) = raw.id else {
        return Err("id: required for import".to_owned());
    };
    let input = ItemInput {
        id: Some(id.clone()),
        title: raw.title,
        body: raw.body,
        category: raw.category,
        category_code: raw.category_code,
        group: raw.group,
        tags: raw.tags,
        source_url: raw.source_url,
        published_at,
    };
    validate_input(&input).map_err(|errors| {
        errors.iter().map(|(field, message)| format!("{field}: {message}")).collect::<Vec<_>>().join("; ")
    })?;
    let hash = content_hash(&input);
    Ok(Parsed { id, input, hash })
}

/// serde_json's message without its "at line 1 column N" suffix (always line 1 here).
fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let message = text.rsplit_once(" at line ").map_or(text.as_str(), |(message, _)| message);
    match error.classify() {
        serde_json::error::Category::Data => message.to_owned(),
        _ => format!("invalid JSON at column {}: {message}", error.column()),
    }
}

/// Reads `input` to the end, sending a batch every `batch_size` lines (and early when
/// an id repeats, so that a later line is applied after an earlier one exactly as if
/// they were in different batches). The first `skip_lines` lines are read past, not
/// parsed: batching starts after them as it started after the batch that ended there.
/// Stops quietly when the receiver is gone.
pub(super) fn read_batches<R: BufRead>(
    input: R,
    batch_size: usize,
    skip_lines: u64,
    tx: &mpsc::Sender<Batch>,
) -> io::Result<()> {
    let consumed = Rc::new(Cell::new(0u64));
    let mut lines = decoded(Counting { inner: input, consumed: Rc::clone(&consumed) })?;

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut line_no = 0u64;
    let mut in_batch = 0usize;
    let mut ids = HashSet::new();
    let mut batch = Batch::default();
    loop {
        buf.clear();
        let read = read_line(lines.as_mut(), &mut buf)?;
        if read == LineRead::Eof {
            break;
        }
        line_no += 1;
        if line_no <= skip_lines {
            continue;
        }
        let parsed = match read {
            LineRead::TooLong => Some(Err(format!("line is longer than {MAX_LINE_BYTES} bytes"))),
            _ => {
                let text = buf.trim_ascii();
                (!text.is_empty()).then(|| parse_line(text))
            }
        };
        match parsed {
            // Blank lines are skipped silently.
            None => {}
            Some(Ok(item)) => {
                if ids.contains(&item.id) {
                    batch.lines_read = line_no - 1;
                    batch.bytes_read = consumed.get();
                    if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                        return Ok(());
                    }
                    ids.clear();
                    in_batch = 0;
                }
                ids.insert(item.id.clone());
                batch.items.push(item);
            }
            Some(Err(reason)) => batch.rejected.push(Rejected { line: line_no, reason }),
        }
        in_batch += 1;
        if in_batch >= batch_size {
            batch.lines_read = line_no;
            batch.bytes_read = consumed.get();
            if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
            ids.clear();
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        batch.lines_read = line_no;
        batch.bytes_read = consumed.get();
        // A closed channel here only means the writer stopped first; it reports why.
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// The input's lines: gunzipped when it starts with the gzip magic bytes.
fn decoded<'r, R: BufRead + 'r>(mut input: R) -> io::Result<Box<dyn BufRead + 'r>> {
    Ok(if input.fill_buf()?.starts_with(&GZIP_MAGIC) {
        Box::new(BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(input)))
    } else {
        Box::new(input)
    })
}

/// Counts the lines [`read_batches`] would number: every newline, and a last line
/// without one.
pub(super) fn count_lines<R: BufRead>(input: R) -> io::Result<u64> {
    let mut lines = decoded(input)?;
    let mut count = 0u64;
    let mut open_line = false;
    loop {
        let chunk = lines.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let newlines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        count += newlines;
        open_line = chunk.last() != Some(&b'\n');
        let len = chunk.len();
        lines.consume(len);
    }
    Ok(count + u64::from(open_line))
}

#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one line (without a length limit on what is skipped, but never holding more
/// than [`MAX_LINE_BYTES`] + 1 bytes).
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    let limit = MAX_LINE_BYTES as u64 + 1;
    let n = Read::take(&mut *reader, limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if n <= MAX_LINE_BYTES || buf.last() == Some(&b'\n') {
        return Ok(LineRead::Line);
    }
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        if let Some(end) = available.iter().position(|&b| b == b'\n') {
            reader.consume(end + 1);
            break;
        }
        let len = available.len();
        reader.consume(len);
    }
    Ok(LineRead::TooLong)
}

/// Counts the bytes consumed from the raw input, for progress.
struct Counting<R> {
    inner: R,
    consumed: Rc<Cell<u64>>,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.consumed.set(self.consumed.get() + n as u64);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.consumed.set(self.consumed.get() + amount as u64);
        self.inner.consume(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id": "2506.20941", "title": "A title", "body": "Text.", "category": "Computer Vision and Pattern Recognition", "tags": ["cs.CV", "cs.AI"], "published_at": "2025-06-26T01:02:03Z", "score": null, "source_url": "https://arxiv.org/abs/2506.20941", "category_code": "cs.CV", "group": "Computer Science"}"#;

    fn reason(line: &str) -> String {
        parse_line(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_catalogue_line_parses() {
        let parsed = parse_line(GOOD.as_bytes()).unwrap();
        assert_eq!(parsed.id, "2506.20941");
        assert_eq!(parsed.input.group, "Computer Science");
        assert_eq!(parsed.input.tags, ["cs.CV", "cs.AI"]);
        assert_eq!(parsed.hash, content_hash(&parsed.input));
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(reason("{not json").starts_with("invalid JSON at column"), "{}", reason("{not json"));
        assert!(reason("42").contains("a JSON object describing an item"));
        assert!(reason(&GOOD.replace(r#""title": "A title", "#, "")).contains("missing field `title`"));
        assert!(reason(&GOOD.replace("2025-06-26T01:02:03Z", "yesterday")).starts_with("published_at:"));
        assert_eq!(reason(&GOOD.replace(r#""id": "2506.20941", "#, "")), "id: required for import");
        let many: Vec<String> = (0..21).map(|i| format!("\"cs.T{i}\"")).collect();
        let too_many = GOOD.replace(r#"["cs.CV", "cs.AI"]"#, &format!("[{}]", many.join(",")));
        assert_eq!(reason(&too_many), "tags: at most 20 tags (got 21)");
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let long = format!("{}\n{GOOD}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let mut reader = long.as_bytes();
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::TooLong);
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf.trim_ascii(), GOOD.as_bytes());
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), LineRead::Eof);
    }

    #[test]
    fn batches_split_on_size_and_on_repeated_ids() {
        let other = GOOD.replace("2506.20941", "2506.00001");
        let third = GOOD.replace("2506.20941", "2506.00002");
        let text = format!("{GOOD}\n\n{GOOD}\nbad\n{other}\n\n{third}");
        let (tx, mut rx) = mpsc::channel(16);
        read_batches(text.as_bytes(), 4, 0, &tx).unwrap();
        drop(tx);
        let mut batches = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            batches.push(batch);
        }
        let shape: Vec<(Vec<&str>, Vec<u64>, u64)> = batches
            .iter()
            .map(|b| {
                let ids = b.items.iter().map(|i| &i.id[5..]).collect();
                (ids, b.rejected.iter().map(|r| r.line).collect(), b.lines_read)
            })
            .collect();
        // Line 3 repeats line 1's id: the first batch closes before it; the second is
        // full after 4 lines; the last line (no newline) makes the third.
        let expected =
            [(vec!["20941"], vec![], 2), (vec!["20941", "00001"], vec![4], 6), (vec!["00002"], vec![], 7)];
        assert_eq!(shape, expected);
        assert_eq!(batches[2].bytes_read, text.len() as u64);
    }

    fn batches(text: &str, batch_size: usize, skip: u64) -> Vec<(Vec<String>, u64)> {
        let (tx, mut rx) = mpsc::channel(64);
        read_batches(text.as_bytes(), batch_size, skip, &tx).unwrap();
        drop(tx);
        let mut out = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            out.push((batch.items.iter().map(|i| i.id.clone()).collect(), batch.lines_read));
        }
        out
    }

    #[test]
    fn a_resumed_read_skips_lines_and_cuts_batches_where_the_first_did() {
        let mut lines: Vec<String> =
            (0..7).map(|i| GOOD.replace("2506.20941", &format!("2506.0000{i}"))).collect();
        lines.insert(2, GOOD.replace("2506.20941", "2506.00000")); // a repeat cuts a batch early
        let text = lines.join("\n") + "\n";
        let full = batches(&text, 3, 0);
        assert_eq!(full.iter().map(|(_, l)| *l).collect::<Vec<_>>(), [2, 5, 8]);
        for (k, (_, done)) in full.iter().enumerate() {
            assert_eq!(batches(&text, 3, *done), full[k + 1..], "resumed after line {done}");
        }
        assert!(batches(&text, 3, 100).is_empty());
    }

    #[test]
    fn lines_are_counted_as_they_are_numbered() {
        assert_eq!(count_lines(&b""[..]).unwrap(), 0);
        assert_eq!(count_lines(&b"a\n"[..]).unwrap(), 1);
        assert_eq!(count_lines(&b"a\n\nb"[..]).unwrap(), 3);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"a\nb\n\n").unwrap();
        let zipped = gz.finish().unwrap();
        assert_eq!(count_lines(zipped.as_slice()).unwrap(), 3);
    }
}
