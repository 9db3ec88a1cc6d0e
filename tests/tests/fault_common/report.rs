//! The figures a scenario measured: printed (visible with `--nocapture`), written as a
//! Markdown file per scenario and server to `target/reliability/`, and appended as one
//! JSON line to `target/reliability/results.jsonl`, which `docs/RELIABILITY.md` is
//! written from.

use std::io::Write as _;
use std::path::PathBuf;

use super::target_dir;

/// Figures of one scenario run.
#[derive(Debug, Clone)]
pub struct Figures {
    pub scenario: String,
    pub server: String,
    pub rows: Vec<(String, String)>,
    /// Free Markdown appended after the table (a curve, a list of lost events).
    pub notes: String,
}

impl Figures {
    pub fn new(scenario: &str, server: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            server: server.to_owned(),
            rows: Vec::new(),
            notes: String::new(),
        }
    }

    pub fn row(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.rows.push((name.to_owned(), value.to_string()));
        self
    }

    /// Prints the figures and writes them under `target/reliability/`.
    pub fn write(&self) {
        let mut md = format!(
            "## {} ({})\n\n| figure | value |\n| --- | --- |\n",
            self.scenario, self.server
        );
        for (k, v) in &self.rows {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        if !self.notes.is_empty() {
            md.push('\n');
            md.push_str(&self.notes);
            md.push('\n');
        }
        eprintln!("\n{md}");
        let dir = dir();
        let slug = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        };
        let file = dir.join(format!(
            "{}-{}.md",
            slug(&self.scenario),
            slug(&self.server)
        ));
        if let Err(e) = std::fs::write(&file, &md) {
            eprintln!("could not write {}: {e}", file.display());
        }
        let mut json = serde_json::Map::new();
        json.insert("scenario".into(), self.scenario.clone().into());
        json.insert("server".into(), self.server.clone().into());
        json.insert(
            "at".into(),
            time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into(),
        );
        json.insert("commit".into(), commit().into());
        for (k, v) in &self.rows {
            json.insert(k.clone(), v.clone().into());
        }
        let line = serde_json::Value::Object(json).to_string();
        let results = dir.join("results.jsonl");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&results)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("could not append to {}: {e}", results.display());
        }
    }
}

/// `target/reliability/`, created if missing.
pub fn dir() -> PathBuf {
    let dir = target_dir().join("reliability");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The commit the suite runs on (`git rev-parse --short HEAD`, plus `+dirty` when the
/// work tree differs), or `unknown`.
pub fn commit() -> String {
    let root = casebus_tests::workspace_root();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+dirty") } else { head }
}

/// Milliseconds with one decimal.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
