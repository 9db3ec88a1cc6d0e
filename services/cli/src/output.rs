//! Where results go: readable text or JSON on standard output, notes and progress bars
//! on standard error. `--json` makes standard output machine-readable (one JSON value
//! per line for streams of records, one document otherwise); `--quiet` silences notes
//! and progress bars but never results or problems. A reader that closes the pipe
//! (`casebus events list | head`) ends the command quietly.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::CliError;

/// Output settings of one run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    /// Output as the global flags say.
    pub fn new(json: bool, quiet: bool) -> Self {
        Self { json, quiet }
    }

    /// Whether results are JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Writes one line of text to standard output.
    ///
    /// # Errors
    /// [`CliError`] of kind broken pipe when the reader went away.
    pub fn line(&self, text: impl std::fmt::Display) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        Ok(())
    }

    /// Writes one JSON value on one line to standard output.
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn json_line(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, value).map_err(|e| {
            if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) {
                CliError::broken_pipe()
            } else {
                CliError::caused("writing JSON failed", e)
            }
        })?;
        writeln!(out)?;
        Ok(())
    }

    /// Writes a JSON document, pretty-printed, to standard output.
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn json_document(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::caused("rendering JSON failed", e))?;
        self.line(text)
    }

    /// Writes a table to standard output.
    ///
    /// # Errors
    /// As [`Output::line`].
    pub fn table(&self, table: &Table) -> Result<(), CliError> {
        self.line(table)
    }

    /// A note for the operator on standard error, unless `--quiet`.
    pub fn note(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// A warning on standard error, shown even with `--quiet`.
    pub fn warn(&self, text: impl std::fmt::Display) {
        eprintln!("warning: {text}");
    }

    /// A progress bar over `total` units on standard error, with rate and ETA; hidden
    /// with `--json` or `--quiet` or when standard error is not a terminal.
    pub fn progress(&self, total: u64, unit: &str) -> ProgressBar {
        let visible = !self.json && !self.quiet && std::io::stderr().is_terminal();
        if !visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let template = format!(
            "{{spinner}} [{{elapsed_precise}}] [{{wide_bar}}] {{pos}}/{{len}} {unit} ({{rate}}, ETA {{eta}}) {{msg}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            let style = style
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", state.per_sec());
                    },
                )
                .progress_chars("=> ");
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// A table in the house style: Markdown-compatible ASCII, so it pastes into tickets.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    table
}

/// A two-column table of names and values, without a header.
pub fn kv_table() -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
}

/// Shortens `text` to `max` characters, marking the cut with `…`.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_short_text_and_marks_the_cut() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdefgh", 5), "abcd…");
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = table(&["a", "b"]);
        t.add_row(["1", "2"]);
        let text = t.to_string();
        assert!(text.contains("| a | b |"), "{text}");
        assert!(text.contains("| 1 | 2 |"), "{text}");
    }
}
