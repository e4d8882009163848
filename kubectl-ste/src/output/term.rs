//! stdout (data) and stderr (diagnostics), whether each is a terminal, and
//! colour per `--color` and `NO_COLOR`.

use std::io::{IsTerminal, Write};

use ste_core::table::Style;

use crate::cli::ColorWhen;

/// Whether to colour a stream: `always`/`never` as given; `auto` when it is
/// a terminal, `NO_COLOR` is unset or empty, and `TERM` is not `dumb`.
pub fn use_color(when: ColorWhen, is_tty: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            is_tty
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
        }
    }
}

/// Where output goes. Write errors (e.g. a closed pipe under `| head`) are
/// ignored: there is nobody left to tell.
pub struct Term {
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    /// Colour on stdout.
    pub out_color: bool,
    /// Colour on stderr.
    pub err_color: bool,
    /// stderr is a terminal (progress bars go there).
    pub err_tty: bool,
    /// stdin is a terminal (confirmation prompts need one).
    pub in_tty: bool,
}

impl Term {
    /// The process's stdout and stderr.
    pub fn stdio(color: ColorWhen) -> Term {
        let out_tty = std::io::stdout().is_terminal();
        let err_tty = std::io::stderr().is_terminal();
        Term {
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
            out_color: use_color(color, out_tty),
            err_color: use_color(color, err_tty),
            err_tty,
            in_tty: std::io::stdin().is_terminal(),
        }
    }

    /// Writes `text` to stdout as is.
    pub fn out(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Writes `text` and a newline to stdout.
    pub fn out_line(&mut self, text: &str) {
        self.out(&format!("{text}\n"));
    }

    /// Writes `text` to stderr as is.
    pub fn err(&mut self, text: &str) {
        let _ = self.err.write_all(text.as_bytes());
        let _ = self.err.flush();
    }

    /// A `! `-prefixed note on stderr, yellow when colour is on.
    pub fn warn(&mut self, text: &str) {
        let line = if self.err_color {
            Style::Yellow.paint(&format!("! {text}"))
        } else {
            format!("! {text}")
        };
        self.err(&format!("{line}\n"));
    }
}
