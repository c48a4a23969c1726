//! Logging: text for people or JSON lines for tools, on stderr.
//!
//! - `--log-format text|json` (or `MEDIAMESH_LOG_FORMAT`); the level from `RUST_LOG`.
//! - Colour only when stderr is a terminal and `NO_COLOR` is unset or empty
//!   (<https://no-color.org>), so a log file or journald gets plain text.
//! - Text lines write `key=value`, quoting a value that holds spaces, quotes or `=`
//!   (`reason="the edge closed the tunnel"`), so a line splits the same way for a person and
//!   for `grep`/logfmt tools.
//! - JSON lines carry `timestamp`, `level`, `target`, the event's fields (`message` among them)
//!   and `spans`, each span with its name and fields (the connection, node and stream).
//! - The hub, the edge and the demo also capture what libraries write to stderr behind the log's
//!   back ([`capture_stderr`]): OpenH264's warnings become log events like any other.

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; with `capture`, takes over the process's stderr first
/// ([`capture_stderr`]).
pub fn init(default_level: &str, format: LogFormat, capture: bool) {
    let out = match capture.then(capture_stderr) {
        Some(Ok(file)) => LogOut::File(Arc::new(file)),
        Some(Err(e)) => {
            eprintln!("warning: cannot capture stderr ({e}); library messages bypass the log");
            LogOut::Stderr
        }
        None => LogOut::Stderr,
    };
    let _ = CONSOLE.set(out.clone());
    let terminal = match &out {
        LogOut::File(f) => f.is_terminal(),
        LogOut::Stderr => std::io::stderr().is_terminal(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let writer = move || out.clone();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => {
            let ansi = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_target(false).with_ansi(ansi).fmt_fields(QuotedFields).init();
        }
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(true).init();
        }
    }
}

/// Where the log goes, for messages written outside it.
static CONSOLE: std::sync::OnceLock<LogOut> = std::sync::OnceLock::new();

/// The process's original stderr, also when fd 2 is captured: a message written here before
/// exiting is not left in the capture pipe, which the process may leave before it is read.
pub fn console() -> impl Write {
    CONSOLE.get().cloned().unwrap_or(LogOut::Stderr)
}

/// Where log lines go: the original stderr, kept as a file when stderr itself is captured.
#[derive(Clone)]
enum LogOut {
    Stderr,
    File(Arc<File>),
}

impl Write for LogOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LogOut::Stderr => std::io::stderr().write(buf),
            LogOut::File(f) => (&**f).write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LogOut::Stderr => std::io::stderr().flush(),
            LogOut::File(f) => (&**f).flush(),
        }
    }
}

/// Points the process's stderr (fd 2) at a pipe read by a thread, and returns a duplicate of the
/// original stderr for the log itself. C libraries print to fd 2 directly (OpenH264 prints a
/// warning at every encoder start, before its log level can be set); the thread turns their
/// lines into log events, and passes anything else (a panic's message) on unchanged. Panics are
/// written straight to the log's file too, so none is lost if the process exits at once.
fn capture_stderr() -> std::io::Result<File> {
    use std::io::BufRead;
    use std::os::fd::AsFd;
    let log = File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
    let (read, write) = nix::unistd::pipe()?;
    nix::unistd::dup2_stderr(&write)?;
    drop(write);
    let forward = log.try_clone()?;
    std::thread::Builder::new().name("stderr".into()).spawn(move || {
        let mut forward = forward;
        for line in std::io::BufReader::new(File::from(read)).lines().map_while(Result::ok) {
            match line.strip_prefix("[OpenH264] ") {
                Some(text) => openh264_event(text),
                None => {
                    let _ = writeln!(forward, "{line}");
                }
            }
        }
    })?;
    let panics = log.try_clone()?;
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let _ = writeln!(&panics, "thread '{}' {info}", thread.name().unwrap_or("<unnamed>"));
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            let _ = writeln!(&panics, "{backtrace}");
        }
    }));
    Ok(log)
}

/// An OpenH264 line (`this = 0x…, Warning:…`) as a log event. Its one warning for our settings
/// (no frame skipping, on purpose: the test pattern never drops a frame) is expected, so its
/// warnings are debug events; its errors are warnings.
fn openh264_event(text: &str) {
    let text = text.split_once(", ").filter(|(this, _)| this.starts_with("this = ")).map_or(text, |(_, rest)| rest);
    match text.split_once(':') {
        Some(("Error", m)) => tracing::warn!(target: "openh264", "OpenH264: {}", m.trim()),
        Some((_, m)) => tracing::debug!(target: "openh264", "OpenH264: {}", m.trim()),
        None => tracing::debug!(target: "openh264", "OpenH264: {text}"),
    }
}

/// Formats fields as `key=value`, quoting values that need it.
struct QuotedFields;

impl<'w> MakeVisitor<Writer<'w>> for QuotedFields {
    type Visitor = QuotedVisitor<'w>;

    fn make_visitor(&self, target: Writer<'w>) -> Self::Visitor {
        QuotedVisitor { writer: target, first: true, result: Ok(()) }
    }
}

struct QuotedVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl QuotedVisitor<'_> {
    fn field(&mut self, field: &Field, text: &str) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{text}")
        } else {
            write!(self.writer, "{sep}{}={}", field.name(), quoted(text))
        };
    }
}

impl Visit for QuotedVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, &format!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for QuotedVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for QuotedVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// `text` as is, or in double quotes with `"`, `\` and control characters escaped when it is
/// empty or holds whitespace, `"` or `=`.
fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if plain {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_spaces_quotes_or_equals_are_quoted() {
        assert_eq!(quoted("edge-1"), "edge-1");
        assert_eq!(quoted("127.0.0.1:443"), "127.0.0.1:443");
        assert_eq!(quoted("the edge closed"), "\"the edge closed\"");
        assert_eq!(quoted("a=b"), "\"a=b\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("say \"hi\"\nbye"), "\"say \\\"hi\\\"\\nbye\"");
    }
}
