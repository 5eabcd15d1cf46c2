//! The streaming decoder: bytes in, normalized events out, whatever form the input takes.
//!
//! It is push-based so that every source drives it the same way: a file import feeds chunks
//! and calls [`Decoder::finish`] at the end; the tailer feeds bytes as the API server writes them
//! and only calls `finish` when a rotated file is done, so a partial last line is waited for and
//! never parsed early; the webhook feeds one request body.
//!
//! Framing is detected from the first line (or forced): **lines** (JSON lines of events,
//! EventLists, Azure records or Docker json-file records; CRI container-runtime lines) or a
//! **stream** of JSON values that may span lines (pretty-printed objects, several concatenated,
//! a JSON array). Lines are the fast path and the robust one: a broken line costs that line only.
//! Container-runtime partial lines (CRI `P`, Docker records without a trailing newline) are
//! joined before parsing. A UTF-8 byte-order mark at the start is skipped.

use std::borrow::Cow;
use std::fmt;

use memchr::memchr;
use sonic_rs::LazyValue;

use crate::error::{IgnoreReason, Rejection, Skip, SkipReason};
use crate::json;
use crate::model::{AuditEvent, RawJson};
use crate::normalize::{Document, classify};
use crate::wire::BoxedWireObject;

/// The form of the input an event came in, also used to force a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputFormat {
    /// One event per line, as the log backend writes them.
    JsonLines,
    /// Events as JSON values that may span lines: pretty-printed, concatenated, or in an array.
    Json,
    /// `EventList` documents, as the webhook backend POSTs them (one per line or pretty-printed).
    EventList,
    /// CRI container-runtime log lines (`<time> stdout F <json>`), partial `P` lines joined.
    Cri,
    /// Docker json-file log lines (`{"log": "<json>\n", "stream": "stdout", …}`).
    Docker,
    /// Azure/AKS diagnostic records (`{"records": [{"properties": {"log": …}}]}`).
    Azure,
}

impl InputFormat {
    /// Every format.
    pub const ALL: [InputFormat; 6] = [
        InputFormat::JsonLines,
        InputFormat::Json,
        InputFormat::EventList,
        InputFormat::Cri,
        InputFormat::Docker,
        InputFormat::Azure,
    ];

    /// The stable name, as accepted by `--format`.
    pub const fn as_str(self) -> &'static str {
        match self {
            InputFormat::JsonLines => "jsonl",
            InputFormat::Json => "json",
            InputFormat::EventList => "eventlist",
            InputFormat::Cri => "cri",
            InputFormat::Docker => "docker",
            InputFormat::Azure => "azure",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<Self> {
        InputFormat::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decoder settings.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Force a format instead of detecting it.
    pub format: Option<InputFormat>,
    /// Events larger than this many bytes are skipped as `too-large`.
    pub max_event_bytes: usize,
    /// Lines and documents (an EventList, an Azure batch) larger than this are skipped without
    /// being buffered whole.
    pub max_document_bytes: usize,
    /// Events whose JSON nests objects and arrays deeper than this are skipped as `too-deep`
    /// (see [`DEFAULT_MAX_DEPTH`]).
    pub max_depth: usize,
    /// Skips carry the bad input ([`Skip::input`]), for sources that quarantine it.
    pub keep_skipped_input: bool,
}

/// The deepest nesting an event may have by default. kube-apiserver records a request body
/// that Go's JSON parser accepted, which allows 10,000 levels, one level down in the event; the
/// margin covers that. Deeper input cannot come from an API server.
pub const DEFAULT_MAX_DEPTH: usize = 10_100;

/// The parser used for documents (sonic-rs) recurses once per level of nesting, so documents
/// nested deeper than this are handed to it with their deep parts masked (see
/// [`Decoder::deep_document`]). Its frames are small in release builds (about 250 bytes a
/// level) but take about 25 KiB a level in debug builds, where 64 levels already fill a 2 MiB
/// thread stack; 32 leaves room in both.
const PARSER_DEPTH: usize = 32;

/// Events nested deeper than this are marked with [`NESTING_ANNOTATION`]: deeper than many
/// JSON libraries accept by default (serde_json's limit is 128, .NET's 64).
const MARKED_DEPTH: usize = 128;

/// The annotation added to an event nested deeper than 128 levels: its depth. Such events are
/// stored and searched in full; the mark lets people find them (a patch nested thousands of
/// levels deep is an attack on JSON parsers, not a configuration change).
pub const NESTING_ANNOTATION: &str = "kubetrail.io/nesting-depth";

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            format: None,
            max_event_bytes: 16 << 20,
            max_document_bytes: 256 << 20,
            max_depth: DEFAULT_MAX_DEPTH,
            keep_skipped_input: false,
        }
    }
}

/// Where an event came from in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The 1-based line where the event (or its envelope) starts.
    pub line: u64,
    /// The form it came in.
    pub format: InputFormat,
    /// Its index in the `EventList` it came in.
    pub item: Option<usize>,
}

/// What the decoder hands out.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// An event.
    Event(Box<AuditEvent<'a>>, Origin),
    /// Input that should have been an event and is broken.
    Skipped(Skip),
    /// Well-formed input that is not audit data.
    Ignored {
        /// Its line.
        line: u64,
        /// What it is.
        reason: IgnoreReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Lines,
    Stream,
}

/// Container-runtime content of a line split across records, waiting for its last piece.
struct PartialLine {
    text: String,
    line: u64,
    format: InputFormat,
    /// Input offset of the line holding its first piece.
    start: u64,
}

/// A push-based decoder; see the module documentation.
pub struct Decoder {
    options: DecodeOptions,
    framing: Option<Framing>,
    buf: Vec<u8>,
    /// Lines fully consumed so far.
    line: u64,
    at_start: bool,
    /// Dropping the rest of an oversized line or value.
    discarding: bool,
    /// Stream framing: the state of the value being scanned at `buf[0]`, and how far it got.
    scan: Option<(ValueScanner, usize)>,
    partial: Option<PartialLine>,
    /// Line framing: input bytes consumed so far (complete lines, a byte-order mark, what was
    /// discarded), i.e. the input offset of the next line.
    offset: u64,
    /// Line framing: the input offset of the line being decoded.
    line_start: u64,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Decoder {
    /// A decoder for one input stream.
    pub fn new(options: DecodeOptions) -> Self {
        let framing = match options.format {
            Some(InputFormat::JsonLines | InputFormat::Cri | InputFormat::Docker) => {
                Some(Framing::Lines)
            }
            Some(InputFormat::Json) => Some(Framing::Stream),
            _ => None,
        };
        Decoder {
            options,
            framing,
            buf: Vec::new(),
            line: 0,
            at_start: true,
            discarding: false,
            scan: None,
            partial: None,
            offset: 0,
            line_start: 0,
        }
    }

    /// Decodes what `chunk` completes; incomplete trailing input waits for the next call.
    pub fn feed<F: FnMut(Decoded<'_>)>(&mut self, chunk: &[u8], out: &mut F) {
        if self.framing != Some(Framing::Lines) || self.at_start {
            self.buf.extend_from_slice(chunk);
            // Framing is chosen from the first line: wait for its end rather than looking at
            // the same bytes again for every small chunk.
            let undecided = self.framing.is_none() && !self.at_start;
            if !undecided
                || memchr(b'\n', chunk).is_some()
                || self.buf.len() > self.options.max_document_bytes
            {
                self.process(false, out);
            }
            return;
        }
        // Line framing decodes straight from the caller's chunk and copies only what a line
        // split across chunks needs: copying every byte showed up as a tenth of the time.
        let mut rest = chunk;
        if !self.buf.is_empty() {
            let Some(newline) = memchr(b'\n', chunk) else {
                // Still inside the pending line: no need to look at it again until it ends.
                self.buf.extend_from_slice(chunk);
                if self.buf.len() > self.options.max_document_bytes {
                    self.process(false, out);
                }
                return;
            };
            self.buf.extend_from_slice(&chunk[..=newline]);
            self.process(false, out);
            rest = &chunk[newline + 1..];
        }
        let consumed = self.process_lines(rest, 0, false, out);
        self.buf.extend_from_slice(&rest[consumed..]);
    }

    /// Where the container log line still waiting for its last piece began, as an offset
    /// into the input fed so far (line framing): a reader that stops now and resumes later (a
    /// tailer's checkpoint) must resume there, or the pieces already fed are lost with this
    /// decoder. `None` when no line is split.
    pub fn pending_line_start(&self) -> Option<u64> {
        self.partial.as_ref().map(|p| p.start)
    }

    /// Decodes everything left: the input has ended.
    pub fn finish<F: FnMut(Decoded<'_>)>(&mut self, out: &mut F) {
        self.process(true, out);
        if let Some(partial) = self.partial.take() {
            out(Decoded::Skipped(Skip {
                offset: None,
                input: None,
                item: None,
                line: partial.line,
                reason: SkipReason::Truncated,
                message: format!(
                    "the input ended inside a split {} log line (its last piece never came)",
                    partial.format
                ),
            }));
        }
    }

    fn process<F: FnMut(Decoded<'_>)>(&mut self, eof: bool, out: &mut F) {
        let buf = std::mem::take(&mut self.buf);
        let consumed = self.process_buf(&buf, eof, out);
        self.buf = buf;
        self.buf.drain(..consumed);
    }

    fn process_buf<F: FnMut(Decoded<'_>)>(&mut self, buf: &[u8], eof: bool, out: &mut F) -> usize {
        let mut start = 0;
        if self.at_start {
            if buf.len() < BOM.len() && BOM.starts_with(buf) && !eof {
                return 0;
            }
            if buf.starts_with(BOM) {
                start = BOM.len();
                self.offset += BOM.len() as u64;
            }
            self.at_start = false;
        }
        let framing = match self.framing {
            Some(f) => f,
            None => match detect_framing(&buf[start..], eof, self.options.max_document_bytes) {
                Some(f) => {
                    self.framing = Some(f);
                    f
                }
                None => return start,
            },
        };
        match framing {
            Framing::Lines => self.process_lines(buf, start, eof, out),
            Framing::Stream => self.process_stream(buf, start, eof, out),
        }
    }

    fn process_lines<F: FnMut(Decoded<'_>)>(
        &mut self,
        buf: &[u8],
        pos: usize,
        eof: bool,
        out: &mut F,
    ) -> usize {
        // `buf[pos]` is at input offset `self.offset`; everything before it was consumed.
        let base = self.offset - pos as u64;
        let consumed = self.process_lines_at(buf, pos, base, eof, out);
        self.offset = base + consumed as u64;
        consumed
    }

    /// [`process_lines`](Self::process_lines) with `buf[0]` at input offset `base`.
    fn process_lines_at<F: FnMut(Decoded<'_>)>(
        &mut self,
        buf: &[u8],
        mut pos: usize,
        base: u64,
        eof: bool,
        out: &mut F,
    ) -> usize {
        let max = self.options.max_document_bytes;
        loop {
            match memchr(b'\n', &buf[pos..]) {
                Some(len) => {
                    self.line += 1;
                    if self.discarding {
                        self.discarding = false;
                    } else if len > max {
                        out(Decoded::Skipped(too_long(self.line, max, "line")));
                    } else {
                        self.line_start = base + pos as u64;
                        self.line_document(&buf[pos..pos + len], self.line, false, out);
                    }
                    pos += len + 1;
                }
                None => {
                    let rest = buf.len() - pos;
                    if eof {
                        if rest > 0 && !self.discarding {
                            self.line += 1;
                            if rest > max {
                                out(Decoded::Skipped(too_long(self.line, max, "line")));
                            } else {
                                self.line_start = base + pos as u64;
                                self.line_document(&buf[pos..], self.line, true, out);
                            }
                        }
                        self.discarding = false;
                        return buf.len();
                    }
                    if self.discarding {
                        return buf.len();
                    }
                    if rest > max {
                        out(Decoded::Skipped(too_long(self.line + 1, max, "line")));
                        self.discarding = true;
                        return buf.len();
                    }
                    return pos;
                }
            }
        }
    }

    /// One line of line-framed input. `last` is set for a final line without a newline, which
    /// is reported as truncated when its JSON ends early.
    fn line_document<F: FnMut(Decoded<'_>)>(
        &mut self,
        bytes: &[u8],
        line: u64,
        last: bool,
        out: &mut F,
    ) {
        let bytes = bytes.trim_ascii();
        if bytes.is_empty() {
            return;
        }
        let offset = self.line_start;
        let input = self.options.keep_skipped_input.then_some(bytes);
        let max = self.options.max_event_bytes;
        let out = &mut |decoded: Decoded<'_>| out(locate(decoded, Some(offset), input, max));
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                out(Decoded::Skipped(Skip {
                    offset: None,
                    input: None,
                    item: None,
                    line,
                    reason: SkipReason::InvalidUtf8,
                    message: format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
                }));
                return;
            }
        };
        match text.as_bytes()[0] {
            b'{' | b'[' => self.json_document(text, line, InputFormat::JsonLines, last, out),
            _ => match CriLine::parse(text) {
                Some(cri) => self.cri_line(cri, line, out),
                None => out(Decoded::Skipped(Skip {
                    offset: None,
                    input: None,
                    item: None,
                    line,
                    reason: SkipReason::InvalidJson,
                    message: format!("not JSON: the line starts with {:?}", preview(text)),
                })),
            },
        }
    }

    fn process_stream<F: FnMut(Decoded<'_>)>(
        &mut self,
        buf: &[u8],
        mut pos: usize,
        eof: bool,
        out: &mut F,
    ) -> usize {
        let max = self.options.max_document_bytes;
        loop {
            let (mut scanner, resume) = match self.scan.take() {
                Some(state) => state,
                None => {
                    while pos < buf.len() && buf[pos].is_ascii_whitespace() {
                        if buf[pos] == b'\n' {
                            self.line += 1;
                        }
                        pos += 1;
                    }
                    if pos == buf.len() {
                        return pos;
                    }
                    if !matches!(buf[pos], b'{' | b'[') {
                        let line_len = memchr(b'\n', &buf[pos..]);
                        if line_len.is_none() && !eof {
                            return pos;
                        }
                        let text = String::from_utf8_lossy(
                            &buf[pos..pos + line_len.unwrap_or(buf.len() - pos)],
                        );
                        out(Decoded::Skipped(Skip {
                            offset: None,
                            input: None,
                            item: None,
                            line: self.line + 1,
                            reason: SkipReason::InvalidJson,
                            message: format!("not JSON: the text starts with {:?}", preview(&text)),
                        }));
                        pos = line_len.map_or(buf.len(), |l| pos + l);
                        continue;
                    }
                    (ValueScanner::default(), 0)
                }
            };
            let value = &buf[pos..];
            match scanner.scan(&value[resume..]) {
                Some(end) => {
                    let end = resume + end;
                    if self.discarding {
                        self.discarding = false;
                        self.line += count_newlines(&value[..end]);
                    } else {
                        let line = self.line + 1;
                        self.line += count_newlines(&value[..end]);
                        self.stream_value(&value[..end], line, out);
                    }
                    pos += end;
                }
                None if eof => {
                    if !self.discarding {
                        out(Decoded::Skipped(Skip {
                            offset: None,
                            input: None,
                            item: None,
                            line: self.line + 1,
                            reason: SkipReason::Truncated,
                            message: "the input ended inside a JSON value".to_owned(),
                        }));
                    }
                    self.discarding = false;
                    return buf.len();
                }
                None if self.discarding || value.len() > max => {
                    if !self.discarding {
                        out(Decoded::Skipped(too_long(self.line + 1, max, "JSON value")));
                        self.discarding = true;
                    }
                    self.line += count_newlines(value);
                    self.scan = Some((scanner, 0));
                    return buf.len();
                }
                None => {
                    self.scan = Some((scanner, value.len()));
                    return pos;
                }
            }
        }
    }

    fn stream_value<F: FnMut(Decoded<'_>)>(&mut self, bytes: &[u8], line: u64, out: &mut F) {
        let input = self.options.keep_skipped_input.then_some(bytes);
        let max = self.options.max_event_bytes;
        let out = &mut |decoded: Decoded<'_>| out(locate(decoded, None, input, max));
        match std::str::from_utf8(bytes) {
            Ok(text) => self.json_document(text, line, InputFormat::Json, false, out),
            Err(e) => out(Decoded::Skipped(Skip {
                offset: None,
                input: None,
                item: None,
                line,
                reason: SkipReason::InvalidUtf8,
                message: format!(
                    "invalid UTF-8 at byte {} of the JSON value",
                    e.valid_up_to() + 1
                ),
            })),
        }
    }

    /// A JSON document (`{…}` or `[…]`) found by the framing. `bare` is the format a bare event
    /// in it is attributed to.
    fn json_document<F: FnMut(Decoded<'_>)>(
        &mut self,
        text: &str,
        line: u64,
        bare: InputFormat,
        last: bool,
        out: &mut F,
    ) {
        if json::nests_deeper_than(text.as_bytes(), PARSER_DEPTH) {
            return self.deep_document(text, line, last, out, |decoder, masked, mut out| {
                decoder.parsable_document(masked, line, bare, last, &mut out)
            });
        }
        self.parsable_document(text, line, bare, last, out);
    }

    /// A document nested deeper than the parser may go. It is validated first (serde_json
    /// validates without recursion, at any depth); then `decode` reads a copy in which every
    /// value deeper than [`PARSER_DEPTH`] levels is masked (replaced by a number padded to the
    /// same length, see [`json::mask`]), and the events it finds get their original text back:
    /// the event itself, its bodies and unknown fields, which are the only places the masked
    /// values can be. An event nested deeper than `max_depth` is skipped as `too-deep`, its
    /// neighbours in the same document are not.
    fn deep_document<F, D>(&mut self, text: &str, line: u64, last: bool, out: &mut F, decode: D)
    where
        F: FnMut(Decoded<'_>),
        D: FnOnce(&mut Self, &str, &mut dyn FnMut(Decoded<'_>)),
    {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            let reason = if e.is_eof() {
                SkipReason::Truncated
            } else {
                SkipReason::InvalidJson
            };
            let message = e.to_string();
            return out(Decoded::Skipped(skip_at(
                Rejection { reason, message },
                line,
                last,
                text,
            )));
        }
        let masked = json::mask(text, &json::deep_regions(text.as_bytes(), PARSER_DEPTH));
        let max_depth = self.options.max_depth;
        let (keep, max_bytes) = (
            self.options.keep_skipped_input,
            self.options.max_event_bytes,
        );
        let mut restore = |decoded: Decoded<'_>| {
            let (mut event, origin) = match decoded {
                Decoded::Event(event, origin) => (event, origin),
                Decoded::Skipped(mut skip) => {
                    // A skipped item keeps its original text, not the masked copy's.
                    if let Some(input) = &mut skip.input
                        && let Some(start) = memchr::memmem::find(masked.as_bytes(), input)
                    {
                        let end = start + input.len();
                        input.copy_from_slice(&text.as_bytes()[start..end]);
                    }
                    return out(Decoded::Skipped(skip));
                }
                other => return out(other),
            };
            // An event read from a string inside the document (a container log line) is not in
            // the copy; its own text went through this check by itself.
            let Some(span) = span_in(&masked, event.raw.as_str()) else {
                return out(Decoded::Event(event, origin));
            };
            let original = &text[span];
            let depth = json::nesting_depth(original.as_bytes());
            if depth > max_depth {
                return out(Decoded::Skipped(Skip {
                    offset: None,
                    input: keep
                        .then(|| original.as_bytes()[..original.len().min(max_bytes)].to_vec()),
                    item: origin.item,
                    line: origin.line,
                    reason: SkipReason::TooDeep,
                    message: format!(
                        "the event nests {depth} levels of JSON, deeper than the limit of {max_depth}"
                    ),
                }));
            }
            if depth > PARSER_DEPTH {
                restore_masked(&mut event, &masked, text);
            }
            if depth > MARKED_DEPTH {
                let depth = depth.to_string();
                event
                    .annotations
                    .retain(|(key, _)| key != NESTING_ANNOTATION);
                event
                    .annotations
                    .push((Cow::Borrowed(NESTING_ANNOTATION), Cow::Owned(depth.clone())));
                event.raw = RawJson(Cow::Owned(with_annotation(
                    event.raw.as_str(),
                    NESTING_ANNOTATION,
                    &depth,
                )));
            }
            out(Decoded::Event(event, origin));
        };
        decode(self, &masked, &mut restore);
    }

    /// A document the parser can read without running out of stack (see [`PARSER_DEPTH`]).
    fn parsable_document<F: FnMut(Decoded<'_>)>(
        &mut self,
        text: &str,
        line: u64,
        bare: InputFormat,
        last: bool,
        out: &mut F,
    ) {
        if text.starts_with('[') {
            match sonic_rs::from_str::<Vec<LazyValue<'_>>>(text) {
                Ok(items) => {
                    for item in items {
                        let raw = item.as_raw_cow();
                        self.object_document(&raw, line, bare, false, out);
                    }
                }
                Err(e) => out(Decoded::Skipped(json_error(&e, line, last, text))),
            }
        } else {
            self.object_document(text, line, bare, last, out);
        }
    }

    fn object_document<F: FnMut(Decoded<'_>)>(
        &mut self,
        text: &str,
        line: u64,
        bare: InputFormat,
        last: bool,
        out: &mut F,
    ) {
        let document = match parse_object(text) {
            Ok(document) => document,
            Err(skip) => {
                out(Decoded::Skipped(skip_at(skip, line, last, text)));
                return;
            }
        };
        let forced = self.options.format;
        let accept = |found: InputFormat| forced.is_none_or(|f| f == found);
        match document {
            Document::Event(event) => {
                if !accept(bare) {
                    return out(Decoded::Skipped(wrong_format(line, forced, bare)));
                }
                let origin = Origin {
                    line,
                    format: bare,
                    item: None,
                };
                self.emit(event, origin, out);
            }
            Document::EventList(items) => {
                if !accept(InputFormat::EventList) {
                    return out(Decoded::Skipped(wrong_format(
                        line,
                        forced,
                        InputFormat::EventList,
                    )));
                }
                for (index, item) in items.iter().enumerate() {
                    self.nested_event(
                        &item.as_raw_cow(),
                        line,
                        InputFormat::EventList,
                        Some(index),
                        out,
                        || format!("EventList item {index}"),
                    );
                }
            }
            Document::AzureRecords(records) => {
                if !accept(InputFormat::Azure) {
                    return out(Decoded::Skipped(wrong_format(
                        line,
                        forced,
                        InputFormat::Azure,
                    )));
                }
                for (index, record) in records.iter().enumerate() {
                    let raw = record.as_raw_cow();
                    match parse_object(&raw) {
                        Ok(Document::AzureRecord { category, log }) => {
                            self.azure_record(category.as_deref(), &log, line, out)
                        }
                        Ok(_) => out(Decoded::Skipped(Skip {
                            offset: None,
                            input: None,
                            item: None,
                            line,
                            reason: SkipReason::InvalidEnvelope,
                            message: format!("Azure record {index} has no `properties.log`"),
                        })),
                        Err(rejection) => out(Decoded::Skipped(Skip {
                            offset: None,
                            input: None,
                            item: None,
                            line,
                            reason: SkipReason::InvalidEnvelope,
                            message: format!("Azure record {index}: {}", rejection.message),
                        })),
                    }
                }
            }
            Document::AzureRecord { category, log } => {
                if !accept(InputFormat::Azure) {
                    return out(Decoded::Skipped(wrong_format(
                        line,
                        forced,
                        InputFormat::Azure,
                    )));
                }
                self.azure_record(category.as_deref(), &log, line, out);
            }
            Document::DockerLine { log, stream } => {
                if !accept(InputFormat::Docker) {
                    return out(Decoded::Skipped(wrong_format(
                        line,
                        forced,
                        InputFormat::Docker,
                    )));
                }
                if stream.as_deref() == Some("stderr") {
                    return out(Decoded::Ignored {
                        line,
                        reason: IgnoreReason::ContainerOutput,
                    });
                }
                match log.strip_suffix('\n') {
                    Some(complete) => {
                        self.container_piece(complete, true, line, InputFormat::Docker, out)
                    }
                    None => self.container_piece(&log, false, line, InputFormat::Docker, out),
                }
            }
        }
    }

    fn azure_record<F: FnMut(Decoded<'_>)>(
        &mut self,
        category: Option<&str>,
        log: &LazyValue<'_>,
        line: u64,
        out: &mut F,
    ) {
        if category.is_some_and(|c| !c.starts_with("kube-audit")) {
            return out(Decoded::Ignored {
                line,
                reason: IgnoreReason::AzureCategory,
            });
        }
        let raw = log.as_raw_cow();
        if raw.starts_with('"') {
            match sonic_rs::from_str::<String>(&raw) {
                Ok(text) => {
                    self.nested_event(text.trim(), line, InputFormat::Azure, None, out, || {
                        "Azure record `properties.log`".to_owned()
                    })
                }
                Err(e) => out(Decoded::Skipped(Skip {
                    offset: None,
                    input: None,
                    item: None,
                    line,
                    reason: SkipReason::InvalidEnvelope,
                    message: format!("Azure record `properties.log`: {e}"),
                })),
            }
        } else {
            self.nested_event(&raw, line, InputFormat::Azure, None, out, || {
                "Azure record `properties.log`".to_owned()
            });
        }
    }

    /// An event inside an envelope (`item`: its index in an `EventList`); anything else there
    /// is reported with `context`.
    fn nested_event<F: FnMut(Decoded<'_>)>(
        &mut self,
        text: &str,
        line: u64,
        format: InputFormat,
        item: Option<usize>,
        out: &mut F,
        context: impl Fn() -> String,
    ) {
        let input = self.options.keep_skipped_input.then_some(text.as_bytes());
        let max = self.options.max_event_bytes;
        let out = &mut |decoded: Decoded<'_>| {
            let decoded = match decoded {
                Decoded::Skipped(mut skip) => {
                    skip.item = skip.item.or(item);
                    Decoded::Skipped(skip)
                }
                other => other,
            };
            out(locate(decoded, None, input, max))
        };
        if json::nests_deeper_than(text.as_bytes(), PARSER_DEPTH) {
            return self.deep_document(text, line, false, out, |decoder, masked, mut out| {
                decoder.parsable_event(masked, line, format, item, &mut out, &context)
            });
        }
        self.parsable_event(text, line, format, item, out, &context);
    }

    fn parsable_event<F: FnMut(Decoded<'_>)>(
        &mut self,
        text: &str,
        line: u64,
        format: InputFormat,
        item: Option<usize>,
        out: &mut F,
        context: &impl Fn() -> String,
    ) {
        match parse_object(text) {
            Ok(Document::Event(event)) => self.emit(event, Origin { line, format, item }, out),
            Ok(_) => out(Decoded::Skipped(Skip {
                offset: None,
                input: None,
                item: None,
                line,
                reason: SkipReason::NotAnEvent,
                message: format!(
                    "{}: an envelope inside an envelope, not an event",
                    context()
                ),
            })),
            Err(skip) => {
                let mut skip = skip_at(skip, line, false, text);
                skip.message = format!("{}: {}", context(), skip.message);
                out(Decoded::Skipped(skip));
            }
        }
    }

    fn emit<F: FnMut(Decoded<'_>)>(
        &mut self,
        event: Box<AuditEvent<'_>>,
        origin: Origin,
        out: &mut F,
    ) {
        let size = event.raw.as_str().len();
        if size > self.options.max_event_bytes {
            out(Decoded::Skipped(too_large(
                origin.line,
                size,
                self.options.max_event_bytes,
                "event",
            )));
        } else {
            out(Decoded::Event(event, origin));
        }
    }

    fn cri_line<F: FnMut(Decoded<'_>)>(&mut self, cri: CriLine<'_>, line: u64, out: &mut F) {
        if self.options.format.is_some_and(|f| f != InputFormat::Cri) {
            return out(Decoded::Skipped(wrong_format(
                line,
                self.options.format,
                InputFormat::Cri,
            )));
        }
        if cri.stream == "stderr" {
            return out(Decoded::Ignored {
                line,
                reason: IgnoreReason::ContainerOutput,
            });
        }
        self.container_piece(cri.content, cri.complete, line, InputFormat::Cri, out);
    }

    /// A piece of a container log line: appended to the pending partial line, which is decoded
    /// once its last piece arrives.
    fn container_piece<F: FnMut(Decoded<'_>)>(
        &mut self,
        content: &str,
        complete: bool,
        line: u64,
        format: InputFormat,
        out: &mut F,
    ) {
        let mut start_line = line;
        let joined: Cow<'_, str> = match self.partial.take() {
            Some(mut partial) if partial.format == format => {
                partial.text.push_str(content);
                if partial.text.len() > self.options.max_event_bytes {
                    out(Decoded::Skipped(too_large(
                        partial.line,
                        partial.text.len(),
                        self.options.max_event_bytes,
                        "split container log line",
                    )));
                    return;
                }
                if !complete {
                    self.partial = Some(partial);
                    return;
                }
                start_line = partial.line;
                Cow::Owned(partial.text)
            }
            _ if !complete => {
                self.partial = Some(PartialLine {
                    text: content.to_owned(),
                    line,
                    format,
                    start: self.line_start,
                });
                return;
            }
            _ => Cow::Borrowed(content),
        };
        let text = joined.trim();
        if !text.starts_with('{') {
            return out(Decoded::Ignored {
                line: start_line,
                reason: IgnoreReason::ContainerOutput,
            });
        }
        self.nested_event(text, start_line, format, None, out, || {
            format!("{format} log line")
        });
    }
}

/// Parses one JSON object and classifies it.
fn parse_object(text: &str) -> Result<Document<'_>, Rejection> {
    match sonic_rs::from_str::<BoxedWireObject<'_>>(text) {
        Ok(wire) => classify(wire.0, text),
        Err(e) => Err(parse_failure(&e, text)),
    }
}

/// Explains why `text` did not parse. Errors inside known fields carry the field's name, which
/// hides whether the JSON itself was broken; on this (rare) path the text is checked again to
/// tell broken JSON from a well-formed document with a field of the wrong type.
fn parse_failure(e: &sonic_rs::Error, text: &str) -> Rejection {
    if let Err(syntax) = sonic_rs::from_str::<serde::de::IgnoredAny>(text) {
        let reason = if syntax.is_eof() {
            SkipReason::Truncated
        } else {
            SkipReason::InvalidJson
        };
        return Rejection {
            reason,
            message: clean_error(&syntax),
        };
    }
    let reason = if !text.starts_with('{') || sonic_rs::get(text, ["auditID"]).is_err() {
        // A type error in something without an auditID is some other JSON document.
        SkipReason::NotAnEvent
    } else {
        SkipReason::InvalidEvent
    };
    Rejection {
        reason,
        message: clean_error(e),
    }
}

/// sonic-rs appends the input around the error position; keep the first line only.
fn clean_error(e: &sonic_rs::Error) -> String {
    let message = e.to_string();
    message.lines().next().unwrap_or_default().trim().to_owned()
}

/// Places a rejection at `line`. An early end of JSON is only a truncation when it is the final,
/// unterminated line of the input; inside a complete line it is plain invalid JSON.
fn skip_at(rejection: Rejection, line: u64, last: bool, text: &str) -> Skip {
    let reason = match rejection.reason {
        SkipReason::Truncated if !last => SkipReason::InvalidJson,
        other => other,
    };
    let message = match reason {
        SkipReason::Truncated => format!("the input ends inside this JSON ({} bytes)", text.len()),
        _ => rejection.message,
    };
    Skip {
        offset: None,
        input: None,
        item: None,
        line,
        reason,
        message,
    }
}

fn json_error(e: &sonic_rs::Error, line: u64, last: bool, text: &str) -> Skip {
    skip_at(parse_failure(e, text), line, last, text)
}

fn too_large(line: u64, size: usize, max: usize, what: &str) -> Skip {
    Skip {
        offset: None,
        input: None,
        item: None,
        line,
        reason: SkipReason::TooLarge,
        message: format!("{what} of {size} bytes is above the limit of {max} bytes"),
    }
}

/// A line or value found too large while it is still arriving: its full size is not known.
fn too_long(line: u64, max: usize, what: &str) -> Skip {
    Skip {
        offset: None,
        input: None,
        item: None,
        line,
        reason: SkipReason::TooLarge,
        message: format!("{what} longer than the limit of {max} bytes"),
    }
}

fn wrong_format(line: u64, forced: Option<InputFormat>, found: InputFormat) -> Skip {
    let forced = forced.map_or("auto", InputFormat::as_str);
    Skip {
        offset: None,
        input: None,
        item: None,
        line,
        reason: SkipReason::NotAnEvent,
        message: format!("found {found} input, but the format was forced to {forced}"),
    }
}

fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Completes a skip with where it is and, when kept, the bad input (`input`, at most `max`
/// bytes), unless it already names its own (an item of a document names the item).
fn locate<'d>(
    decoded: Decoded<'d>,
    offset: Option<u64>,
    input: Option<&[u8]>,
    max: usize,
) -> Decoded<'d> {
    match decoded {
        Decoded::Skipped(mut skip) => {
            skip.offset = skip.offset.or(offset);
            if skip.input.is_none() {
                skip.input = input.map(|bytes| bytes[..bytes.len().min(max)].to_vec());
            }
            Decoded::Skipped(skip)
        }
        other => other,
    }
}

/// The text of an event object with one more annotation, the rest byte for byte: added at the
/// end of its `annotations`, or in a new `annotations` member at the end of the event.
fn with_annotation(event: &str, key: &str, value: &str) -> String {
    let member = format!(
        "{}:{}",
        serde_json::Value::from(key),
        serde_json::Value::from(value)
    );
    let mut tokens = json::Tokens::new(event);
    let mut in_annotations = false;
    let mut last_end = None;
    while let Some(token) = tokens.next() {
        match (tokens.depth(), token.kind) {
            (1, json::TokenKind::Key) => {
                in_annotations = json::unescape(&event[token.span]) == "annotations";
            }
            (2, json::TokenKind::ObjectStart) if in_annotations => {
                let end = tokens.skip_container();
                let empty = event[token.span.end..end - 1].trim().is_empty();
                let comma = if empty { "" } else { "," };
                return format!("{}{comma}{member}{}", &event[..end - 1], &event[end - 1..]);
            }
            (2, json::TokenKind::ObjectStart | json::TokenKind::ArrayStart) => {
                tokens.skip_container();
            }
            (0, json::TokenKind::ObjectEnd) => last_end = Some(token.span.start),
            _ => {}
        }
    }
    match last_end {
        Some(end) => format!(
            "{},\"annotations\":{{{member}}}{}",
            &event[..end],
            &event[end..]
        ),
        None => event.to_owned(),
    }
}

/// Where `part` (a slice of `whole`) is in `whole`; None when it is not part of it.
fn span_in(whole: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then(|| start..start + part.len())
}

/// Gives an event read from a masked copy of `original` (see [`Decoder::deep_document`]) the
/// original text of every raw JSON value that came from the copy.
fn restore_masked(event: &mut AuditEvent<'_>, masked: &str, original: &str) {
    let restore = |raw: &mut RawJson<'_>| {
        if let Some(span) = span_in(masked, raw.as_str()) {
            raw.0 = Cow::Owned(original[span].to_owned());
        }
    };
    restore(&mut event.raw);
    event.request_object.iter_mut().for_each(restore);
    event.response_object.iter_mut().for_each(restore);
    if let Some(status) = &mut event.response_status {
        status.details.iter_mut().for_each(restore);
    }
    for (_, value) in &mut event.unknown_fields {
        restore(value);
    }
}

/// Chooses the framing from the start of the input; None until enough has arrived.
///
/// A first line holding one complete JSON value means JSON lines. A first line that opens a value
/// without closing it means pretty-printed JSON, unless the next line starts a new object too:
/// then it is JSON lines whose first line is broken, and line framing keeps the rest.
fn detect_framing(bytes: &[u8], eof: bool, max: usize) -> Option<Framing> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return eof.then_some(Framing::Lines);
    };
    match bytes[start] {
        b'[' => return Some(Framing::Stream),
        b'{' => {}
        _ => return Some(Framing::Lines),
    }
    let rest = &bytes[start..];
    let Some(first_len) = memchr(b'\n', rest) else {
        return (eof || rest.len() > max).then_some(Framing::Lines);
    };
    // A first line longer than a document may be is read as lines whether its end has arrived
    // or not, so the choice never depends on how the input was split into chunks.
    if first_len > max {
        return Some(Framing::Lines);
    }
    let first = &rest[..first_len];
    let mut scanner = ValueScanner::default();
    if let Some(end) = scanner.scan(first) {
        return Some(if first[end..].trim_ascii().is_empty() {
            Framing::Lines
        } else {
            Framing::Stream
        });
    }
    let after = &rest[first_len + 1..];
    match after.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(next) => {
            let next_line_start = after[..next]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            Some(if next == next_line_start && after[next] == b'{' {
                Framing::Lines
            } else {
                Framing::Stream
            })
        }
        None if eof => Some(Framing::Stream),
        None => (rest.len() > max).then_some(Framing::Stream),
    }
}

/// Finds where a JSON value ends, across calls, without parsing it: brackets and braces are
/// counted outside strings.
#[derive(Debug, Default, Clone)]
struct ValueScanner {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ValueScanner {
    /// Scans `bytes` (the continuation of the value); the index just past its end, if there.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// A CRI container-runtime log line: `<RFC 3339 time> <stream> <tags> <content>`, where the
/// first tag is `P` (partial) or `F` (full).
struct CriLine<'a> {
    stream: &'a str,
    complete: bool,
    content: &'a str,
}

impl<'a> CriLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (time, rest) = line.split_once(' ')?;
        if !time.as_bytes().first()?.is_ascii_digit() || !time.contains('T') {
            return None;
        }
        let (stream, rest) = rest.split_once(' ')?;
        if stream != "stdout" && stream != "stderr" {
            return None;
        }
        let (tags, content) = rest.split_once(' ').unwrap_or((rest, ""));
        let complete = match tags.split(':').next()? {
            "F" => true,
            "P" => false,
            _ => return None,
        };
        Some(CriLine {
            stream,
            complete,
            content,
        })
    }
}
