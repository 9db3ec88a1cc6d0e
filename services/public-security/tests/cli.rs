//! The `casebus-public-security` binary's command line: `--help` documents every flag with its
//! environment variable, and a configuration mistake stops it at once with a message
//! naming the flag. (This test also makes `cargo test` build the binary, which the
//! end-to-end tests in `tests/` start.)

use std::path::Path;

use casebus_test_support::command_line::{
    assert_bad_deadline_rules_refused, assert_foreign_office_refused,
    assert_help_documents_every_flag,
};

const BIN: &str = env!("CARGO_BIN_EXE_casebus-public-security");

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    assert_help_documents_every_flag(Path::new(BIN), "casebus-public-security", 15);
}

#[test]
fn an_office_of_another_agency_is_refused_naming_the_flag() {
    assert_foreign_office_refused(Path::new(BIN), "court:x");
}

#[test]
fn a_bad_deadline_rules_file_refuses_the_start_naming_file_line_and_field() {
    assert_bad_deadline_rules_refused(Path::new(BIN), "public_security:ningbo");
}
