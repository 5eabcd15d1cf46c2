//! Reading inputs named on the command line: files (plain or gzip, detected by their magic
//! bytes, so rotated `audit-….log.gz` files need no flag) and standard input, fed to a
//! [`Decoder`] in large chunks.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use kubetrail_event::{DecodeOptions, Decoded, Decoder};

/// Chunk size for feeding the decoder: large enough to amortize calls, small enough for caches.
const CHUNK: usize = 1 << 20;

/// One input: a file path or `-` for standard input.
#[derive(Debug, Clone)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn from_arg(arg: &Path) -> Input {
        if arg == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(arg.to_path_buf())
        }
    }

    /// The name used in messages.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_owned(),
            Input::File(path) => path.display().to_string(),
        }
    }

    /// Whether the input can be read again after a crash: a regular file, not stdin or a pipe
    /// (`<(zcat …)`).
    pub fn is_rereadable(&self) -> bool {
        match self {
            Input::Stdin => false,
            Input::File(path) => std::fs::metadata(path).is_ok_and(|m| m.is_file()),
        }
    }

    /// Size on disk, when known (for progress).
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
        }
    }

    fn open(&self) -> Result<Box<dyn Read>> {
        let raw: Box<dyn Read> = match self {
            Input::Stdin => Box::new(io::stdin().lock()),
            Input::File(path) => Box::new(
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
            ),
        };
        let mut reader = BufReader::with_capacity(CHUNK, raw);
        let is_gzip = {
            use std::io::BufRead;
            let head = reader
                .fill_buf()
                .with_context(|| format!("cannot read {}", self.name()))?;
            head.starts_with(&[0x1f, 0x8b])
        };
        Ok(if is_gzip {
            Box::new(MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        })
    }
}

/// Receives what decoding an input yields.
pub trait DecodeHandler {
    /// An event, a skipped or an ignored piece of input.
    fn decoded(&mut self, decoded: Decoded<'_>);
    /// `bytes` more (decompressed) bytes were read.
    fn progress(&mut self, bytes: u64);
}

/// Decodes one input to the end.
pub fn decode_input(
    input: &Input,
    options: &DecodeOptions,
    handler: &mut impl DecodeHandler,
) -> Result<()> {
    let mut reader = input.open()?;
    let mut decoder = Decoder::new(options.clone());
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Whatever was decoded so far stands; the rest of this input is lost.
                decoder.finish(&mut |d| handler.decoded(d));
                return Err(e).with_context(|| format!("cannot read {}", input.name()));
            }
        };
        decoder.feed(&chunk[..n], &mut |d| handler.decoded(d));
        handler.progress(n as u64);
    }
    decoder.finish(&mut |d| handler.decoded(d));
    Ok(())
}

/// A byte progress bar on stderr, only for people (a terminal) and only for inputs large
/// enough to wait for.
pub fn progress_bar(inputs: &[Input]) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = inputs.iter().filter_map(Input::size).sum();
    let unknown_size = inputs.iter().any(|i| i.size().is_none());
    if total < 64 << 20 && !unknown_size {
        return None;
    }
    let bar = if unknown_size {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    Some(bar)
}
