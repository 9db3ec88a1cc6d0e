//! Checks of a service binary's command line, shared by the five agency services' tests:
//! `--help` documents every flag with its environment variable, and a configuration
//! mistake stops the binary at once with a message naming the flag (or, for a bad
//! deadline rules file or holiday calendar, the file, line and field).

use std::path::Path;
use std::process::Command;

/// The `--help` text split into one block per flag: a block starts at a line whose
/// first non-blank character is `-` (descriptions are indented further).
pub fn flag_blocks(help: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent < 10 {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Runs `binary --help` and asserts that it names `name`, documents at least
/// `min_flags` flags besides `--help` and `--version`, and gives each of them its
/// `CASEBUS_` environment variable.
///
/// # Panics
/// When the binary does not run, `--help` fails, or any of the above does not hold.
pub fn assert_help_documents_every_flag(binary: &Path, name: &str, min_flags: usize) {
    let output = Command::new(binary)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains(name), "{help}");
    let blocks = flag_blocks(&help);
    let documented: Vec<&String> = blocks
        .iter()
        .filter(|b| !b.contains("--help") && !b.contains("--version"))
        .collect();
    assert!(documented.len() >= min_flags, "{help}");
    for block in documented {
        assert!(
            block.contains("[env: CASEBUS_"),
            "flag without env var:\n{block}"
        );
    }
}

/// Starts an agency service binary with `--office foreign_office` (an office of another
/// agency) and otherwise plausible flags, and asserts that it exits with an error naming
/// `--office`.
///
/// # Panics
/// When the binary does not run, succeeds, or its error does not name the flag.
pub fn assert_foreign_office_refused(binary: &Path, foreign_office: &str) {
    let dir = std::env::temp_dir();
    let output = Command::new(binary)
        .args(["--office", foreign_office, "--trusted-issuers"])
        .arg(dir.join("none.toml"))
        .args(["--signing-key"])
        .arg(dir.join("none.key"))
        .args(["--registry"])
        .arg(dir.join("none-registry.toml"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("CASEBUS_OFFICE")
        .output()
        .expect("run");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--office"), "{stderr}");
}

/// A deadline rules file whose line 3 sets `clocks.custody.unit` to a unit that does
/// not exist, written to `dir`; returns its path and the text the refusal must contain
/// (the file, the line and the field).
///
/// # Panics
/// When the file cannot be written.
pub fn bad_deadline_rules(dir: &Path) -> (std::path::PathBuf, String) {
    let path = dir.join("bad-rules.toml");
    std::fs::write(
        &path,
        "# site rules\n[clocks.custody]\nunit = \"weeks\"\namount = 2\n",
    )
    .expect("write the rules file");
    let expected = format!("{} line 3: clocks.custody.unit", path.display());
    (path, expected)
}

/// Starts an agency service binary for `office` with a deadline rules file whose line 3
/// names a unit that does not exist, and asserts that it exits with a failure status
/// and an error naming the file, the line and the field.
///
/// # Panics
/// When the binary does not run, succeeds, or its error does not name them.
pub fn assert_bad_deadline_rules_refused(binary: &Path, office: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (rules, expected) = bad_deadline_rules(dir.path());
    let output = Command::new(binary)
        .args(["--office", office, "--deadline-rules"])
        .arg(&rules)
        .args(["--signing-key"])
        .arg(dir.path().join("none.key"))
        .args(["--registry"])
        .arg(dir.path().join("none-registry.toml"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("CASEBUS_CALENDAR_DIR")
        .output()
        .expect("run");
    assert!(!output.status.success(), "{output:?}");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("weeks"), "{stderr}");
}
