//! What the daemons' command lines share about output: writing to a standard output or
//! error that may be a closed pipe, and reporting an error as one line (and, with `--json`,
//! as a JSON object).
//!
//! A closed pipe (`satcast-uplink list | head -3`): Rust ignores SIGPIPE, so `println!`
//! would panic. Instead the process ends quietly with [`EXIT_BROKEN_PIPE`], the status a
//! shell reports for a C tool killed by SIGPIPE, so `set -o pipefail` scripts see it as
//! they see `head`'s other neighbours.

use std::error::Error;
use std::io::Write;

use thiserror::Error;

/// Exit status when standard output is a closed pipe: 128 + SIGPIPE (13).
pub const EXIT_BROKEN_PIPE: u8 = 141;
/// Exit status of a command line that does not parse (clap's own choice, kept).
pub const EXIT_USAGE: u8 = 2;

/// Standard output could not be written (not a closed pipe: a full disk, an I/O error).
#[derive(Debug, Error)]
#[error("cannot write to standard output: {0}")]
pub struct OutputError(std::io::Error);

/// Writes `text` to standard output and flushes it. A closed pipe ends the process at
/// once, quietly, with [`EXIT_BROKEN_PIPE`]: whoever read the output stopped reading.
pub fn print(text: &str) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(EXIT_BROKEN_PIPE.into()),
        result => result.map_err(OutputError),
    }
}

/// [`print`] with `format!` arguments and a newline: `outln!("{id}")?`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::print("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to standard error, ignoring failure: there is nowhere left to say it
/// (a closed pipe, a full disk), and it must not change the exit code.
pub fn eprint(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// The error and its causes on one line, joined with ": ". A cause whose text the line
/// already holds is left out: many errors print their source in their own message
/// (`cannot read config X: No such file or directory`) and also return it as `source()`.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = error.source();
    }
    line
}

/// Reports a command's error: `error: <one line>` on standard error and, with `json`,
/// `{"error": "<one line>", "exit_code": N}` on one line on standard output, where a
/// script reading `--json` output looks (standard error also carries the log).
pub fn report(error: &(dyn Error + 'static), exit_code: u8, json: bool) {
    let line = one_line(error);
    eprint(&format!("error: {line}\n"));
    if json {
        let object = serde_json::json!({ "error": line, "exit_code": exit_code });
        // Standard output may be the closed pipe itself: nothing more to do then.
        let _ = print(&format!("{object}\n"));
    }
}

/// Parses the command line as `P::parse()` would, except that a usage error (an unknown
/// flag, a missing value) is reported like every other error: one line, and also as JSON
/// on standard output when `--json` is among the arguments. Help and version go to standard
/// output through [`print`], so `--help | head` does not panic either.
pub fn parse<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(parsed) => parsed,
        Err(error) => {
            let code = match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    let _ = print(&error.render().to_string());
                    0
                }
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    eprint(&error.render().to_string());
                    EXIT_USAGE
                }
                _ => {
                    let json = std::env::args_os().skip(1).any(|arg| arg == "--json");
                    report(&UsageError(usage_line(&error)), EXIT_USAGE, json);
                    EXIT_USAGE
                }
            };
            std::process::exit(code.into())
        }
    }
}

/// A command line that does not parse, as one line.
#[derive(Debug, Error)]
#[error("{0}")]
struct UsageError(String);

/// clap's first line without its "error: " prefix (the rest is a usage block and a tip),
/// with the pointer to `--help` that the block carried.
fn usage_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Error)]
    #[error("cannot read config x.toml: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    #[derive(Debug, Error)]
    #[error("uplink stopped with an error")]
    struct Wraps {
        source: Embeds,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        assert_eq!(one_line(&Embeds { source: io() }), "cannot read config x.toml: No such file or directory");
        assert_eq!(
            one_line(&Wraps { source: Embeds { source: io() } }),
            "uplink stopped with an error: cannot read config x.toml: No such file or directory"
        );
    }
}
