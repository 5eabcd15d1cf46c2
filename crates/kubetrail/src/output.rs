//! Everything the CLI prints: results on stdout, diagnostics on stderr, and the exit status.
//!
//! Exit status (documented in the README and `kubetrail --help`):
//! 0 everything was read; 1 a fatal error (an input could not be opened or read, bad
//! arguments to a command); 2 a usage error; 3 the command completed but skipped bad input
//! (every good event around it was still processed; the messages on stderr say where); 4
//! `policy lint` found error-level findings.

use std::io::{self, Write};
use std::process::ExitCode;

use kubetrail_event::Skip;

/// How a command ended, mapped to the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All input was read.
    Clean,
    /// Some input was skipped or could not be read; the rest was processed.
    Skipped,
    /// A check ran and found errors (`policy lint`).
    Findings,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Clean => ExitCode::SUCCESS,
            Outcome::Skipped => ExitCode::from(EXIT_SKIPPED),
            Outcome::Findings => ExitCode::from(EXIT_FINDINGS),
        }
    }
}

/// Exit status for a fatal error.
pub const EXIT_FATAL: u8 = 1;
/// Exit status when bad input was skipped.
pub const EXIT_SKIPPED: u8 = 3;
/// Exit status when a check found errors.
pub const EXIT_FINDINGS: u8 = 4;

/// Buffered standard output that treats a closed pipe (`kubetrail cat | head`) as the reader
/// having seen enough, not as an error.
pub struct StdoutSink {
    out: io::BufWriter<io::StdoutLock<'static>>,
    closed: bool,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            out: io::BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            closed: false,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.out.write_all(bytes) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => Ok(other?),
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        match self.out.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        }
    }
}

/// Reports bad input on stderr, up to a limit, and remembers that there was some.
pub struct Diagnostics {
    limit: u64,
    reported: u64,
    total: u64,
}

impl Diagnostics {
    /// `limit` messages at most; 0 means no limit.
    pub fn new(limit: u64) -> Self {
        Diagnostics {
            limit,
            reported: 0,
            total: 0,
        }
    }

    /// A skipped piece of `input`.
    pub fn skipped(&mut self, input: &str, skip: &Skip) {
        self.total += 1;
        if self.limit == 0 || self.reported < self.limit {
            self.reported += 1;
            eprintln!(
                "kubetrail: {input}:{}: {}: {}",
                skip.line, skip.reason, skip.message
            );
        }
    }

    /// A bad piece of `input` at `line`, described by `message`.
    pub fn problem(&mut self, input: &str, line: u64, message: &str) {
        self.total += 1;
        if self.limit == 0 || self.reported < self.limit {
            self.reported += 1;
            eprintln!("kubetrail: {input}:{line}: {message}");
        }
    }

    /// An input that failed as a whole (could not be opened, or a read error part-way).
    pub fn input_failed(&mut self, error: &anyhow::Error) {
        self.total += 1;
        self.reported += 1;
        eprintln!("kubetrail: {error:#}");
    }

    /// Prints the summary line and returns the outcome.
    pub fn finish(self) -> Outcome {
        if self.total > self.reported {
            eprintln!(
                "kubetrail: {} more problems not shown (raise --error-limit, or 0 for all)",
                self.total - self.reported
            );
        }
        if self.total == 0 {
            Outcome::Clean
        } else {
            Outcome::Skipped
        }
    }
}
