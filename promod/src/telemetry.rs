//! Logging setup: tracing to stderr as text or JSON, and optionally to
//! daily-rotated files.

use crate::config::LogConfig;
use std::ffi::OsStr;
use std::io::IsTerminal;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Installs the global subscriber. Keep the guard alive: dropping it flushes
/// the file writer.
pub fn init(cfg: &LogConfig) -> anyhow::Result<Option<WorkerGuard>> {
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| anyhow::anyhow!("log.level `{}` is invalid: {e}", cfg.level))?;
    let json = cfg.format == "json";
    let stderr = if json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        let tty = std::io::stderr().is_terminal();
        let ansi = colour(tty, std::env::var_os("NO_COLOR").as_deref());
        fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (file, guard) = match &cfg.dir {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "promod.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = if json {
                fmt::layer().json().with_writer(writer).boxed()
            } else {
                fmt::layer().with_ansi(false).with_writer(writer).boxed()
            };
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    // A second init (tests spawn several apps in one process) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    Ok(guard)
}

/// Colour only for a terminal, and not when NO_COLOR is set to anything but
/// the empty string (no-color.org): escape codes in a redirected log file
/// or a pipe are noise.
fn colour(tty: bool, no_color: Option<&OsStr>) -> bool {
    tty && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
