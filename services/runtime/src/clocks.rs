//! The legal clocks' configuration every service that shows or counts a deadline loads
//! the same way: the deadline rules file and the holiday calendar directory
//! (`ClockArgs`), read and validated once at start. A file that cannot be read or does
//! not validate refuses the start with an error naming the file, line and field; nothing
//! is guessed.

use std::path::{Path, PathBuf};

use casebus_domain::{Calendar, DeadlineRules};

use crate::RuntimeError;

/// Where the deadline rules and the holiday calendar come from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClockArgs {
    /// Deadline rules file (TOML, `[clocks.<name>]`, or the first round's `[handoff_due]`
    /// and `[periods]`; see docs/DEADLINES.md); the built-in defaults of the procedure
    /// law apply to anything it leaves out, or to everything without it.
    #[arg(long = "deadline-rules", env = "CASEBUS_DEADLINE_RULES")]
    pub deadline_rules: Option<PathBuf>,
    /// Directory of holiday calendar files, one `<year>.toml` per year (every `*.toml`
    /// in it is read); without it the calendar compiled in from deploy/calendar/ is used
    /// (2026 published, 2027 awaiting its notice).
    #[arg(long = "calendar-dir", env = "CASEBUS_CALENDAR_DIR")]
    pub calendar_dir: Option<PathBuf>,
}

/// The rules and calendar a service counts every clock with, and their digest.
#[derive(Debug, Clone)]
pub struct Clocks {
    /// The deadline rules.
    pub rules: DeadlineRules,
    /// The holiday calendar.
    pub calendar: Calendar,
    /// [`DeadlineRules::digest`] of both: services with equal digests count alike.
    pub digest: String,
}

impl Default for Clocks {
    /// The default rules on the shipped calendar.
    fn default() -> Self {
        Self::new(DeadlineRules::default(), Calendar::shipped())
    }
}

impl Clocks {
    /// Rules and calendar given in code (tests, tools).
    pub fn new(rules: DeadlineRules, calendar: Calendar) -> Self {
        let digest = rules.digest(&calendar);
        Self {
            rules,
            calendar,
            digest,
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<String, RuntimeError> {
    std::fs::read_to_string(path).map_err(|source| RuntimeError::File {
        what,
        path: path.to_owned(),
        source,
    })
}

fn clock_config(key: &'static str, source: casebus_domain::RulesError) -> RuntimeError {
    RuntimeError::Config {
        key,
        reason: source.to_string(),
    }
}

impl ClockArgs {
    /// Reads and validates the rules file and the calendar directory.
    ///
    /// # Errors
    /// [`RuntimeError::File`] naming a file or directory that cannot be read;
    /// [`RuntimeError::Config`] on `--deadline-rules` or `--calendar-dir` with the
    /// file, line and field of the first invalid value, or a directory without any
    /// `.toml` file.
    pub fn load(&self) -> Result<Clocks, RuntimeError> {
        let rules = match &self.deadline_rules {
            None => DeadlineRules::default(),
            Some(path) => {
                let text = read("deadline rules", path)?;
                DeadlineRules::parse_file(&path.display().to_string(), &text)
                    .map_err(|e| clock_config("--deadline-rules", e))?
            }
        };
        let calendar = match &self.calendar_dir {
            None => Calendar::shipped(),
            Some(dir) => load_calendar(dir)?,
        };
        Ok(Clocks::new(rules, calendar))
    }
}

/// Every `*.toml` of `dir`, in name order, as one calendar.
fn load_calendar(dir: &Path) -> Result<Calendar, RuntimeError> {
    let listing = std::fs::read_dir(dir).map_err(|source| RuntimeError::File {
        what: "holiday calendar directory",
        path: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| RuntimeError::File {
            what: "holiday calendar directory",
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(RuntimeError::Config {
            key: "--calendar-dir",
            reason: format!(
                "{} holds no holiday calendar file (<year>.toml)",
                dir.display()
            ),
        });
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in &paths {
        files.push((path.display().to_string(), read("holiday calendar", path)?));
    }
    Calendar::parse_files(files.iter().map(|(f, t)| (f.as_str(), t.as_str())))
        .map_err(|e| clock_config("--calendar-dir", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    #[test]
    fn without_files_the_defaults_and_the_shipped_calendar_apply() {
        let clocks = ClockArgs::default().load().expect("defaults load");
        assert_eq!(clocks.rules, DeadlineRules::default());
        assert_eq!(clocks.calendar, Calendar::shipped());
        assert_eq!(clocks.digest, Clocks::default().digest);
    }

    #[test]
    fn a_bad_rules_file_is_refused_naming_file_line_and_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(
            dir.path(),
            "rules.toml",
            "# site rules\n[clocks.custody]\nunit = \"weeks\"\namount = 2\n",
        );
        let args = ClockArgs {
            deadline_rules: Some(path.clone()),
            calendar_dir: None,
        };
        let error = args.load().expect_err("weeks is no unit").to_string();
        let expected = format!("{} line 3: clocks.custody.unit", path.display());
        assert!(error.contains(&expected), "{error}");
        assert!(error.contains("--deadline-rules"), "{error}");
    }

    #[test]
    fn a_calendar_directory_is_read_whole_and_a_bad_day_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in casebus_domain::SHIPPED_CALENDAR {
            let base = Path::new(name).file_name().expect("file name");
            write(dir.path(), &base.to_string_lossy(), text);
        }
        write(dir.path(), "README", "not a calendar");
        let args = ClockArgs {
            deadline_rules: None,
            calendar_dir: Some(dir.path().to_owned()),
        };
        let clocks = args
            .load()
            .expect("the shipped files load from a directory");
        assert_eq!(clocks.calendar.years().count(), 2);

        let bad = write(
            dir.path(),
            "2028.toml",
            "year = 2028\nstatus = \"published\"\nnotice = \"n\"\nissued = 2027-11-01\nsource = \"s\"\nrest_days = [2028-01-01]\nworking_days = [2028-01-05]\n",
        );
        let error = args
            .load()
            .expect_err("a Wednesday is no make-up day")
            .to_string();
        assert!(
            error.contains(&format!("{} line 7: working_days", bad.display())),
            "{error}"
        );

        let empty = tempfile::tempdir().expect("temp dir");
        let args = ClockArgs {
            deadline_rules: None,
            calendar_dir: Some(empty.path().to_owned()),
        };
        let error = args.load().expect_err("no file").to_string();
        assert!(error.contains("holds no holiday calendar file"), "{error}");
    }
}
