//! The `casebus-ip-center` binary's command line: `--help` documents every flag with its
//! environment variable, and a configuration mistake stops it at once with a message
//! naming the flag. (This test also makes `cargo test` build the binary, which the
//! end-to-end tests in `tests/` start.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_casebus-ip-center");

/// The `--help` text split into one block per flag: a block starts at a line whose
/// first non-blank character is `-` (descriptions are indented further).
fn flag_blocks(help: &str) -> Vec<String> {
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

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("casebus-ip-center"), "{help}");
    let blocks = flag_blocks(&help);
    let documented: Vec<&String> = blocks
        .iter()
        .filter(|b| !b.contains("--help") && !b.contains("--version"))
        .collect();
    assert!(documented.len() >= 15, "{help}");
    for block in documented {
        assert!(
            block.contains("[env: CASEBUS_"),
            "flag without env var:\n{block}"
        );
    }
}

#[test]
fn an_office_of_another_agency_is_refused_naming_the_flag() {
    let dir = std::env::temp_dir();
    let output = Command::new(BIN)
        .args(["--office", "court:x", "--trusted-issuers"])
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
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--office"), "{stderr}");
}
