//! Structured logs through `tracing`, as text for people or JSON for collectors.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected text or json"
            )),
        }
    }
}

/// The filter directive in force: `RUST_LOG` wins over the flag so an operator can
/// raise one module's level without redeploying with new arguments.
pub fn filter_directive(flag_level: &str, rust_log: Option<&str>) -> String {
    match rust_log {
        Some(env) if !env.trim().is_empty() => env.to_string(),
        _ => flag_level.to_string(),
    }
}

/// Installs the global subscriber. Safe to call more than once (tests do): later
/// calls keep the first subscriber.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let directive = filter_directive(level, std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directive)
        .map_err(|e| format!("invalid log level {directive:?}: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        // Colours only on a terminal: in a container log they are noise.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(true)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
    };
    // A second init in the same process is not an error worth failing over.
    let _ = result;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_flag_only_when_set() {
        assert_eq!(filter_directive("info", None), "info");
        assert_eq!(filter_directive("info", Some("")), "info");
        assert_eq!(
            filter_directive("info", Some("debug,kube=warn")),
            "debug,kube=warn"
        );
    }

    #[test]
    fn parses_formats_and_rejects_others() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().unwrap_err().contains("yaml"));
    }

    #[test]
    fn rejects_a_bad_level() {
        assert!(init(LogFormat::Text, "not a [level").is_err());
    }
}
