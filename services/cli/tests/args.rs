//! Bad arguments get a clear message naming the argument and exit code 2, before
//! anything is touched; an unreachable NATS gives exit code 3; every subcommand's
//! `--help` explains it with an example.

mod common;

use common::*;

#[tokio::test]
async fn bad_arguments_exit_2_naming_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["bogus"], "unrecognized subcommand 'bogus'"),
        (&["events", "list", "--case", "a.b"], "--case"),
        (&["verify", "--case", "a.b"], "case id \"a.b\" contains '.'"),
        (&["case", "show", "a.b"], "contains '.'"),
        (&["export", "--case", "a*", "--out", "x.json"], "--case"),
        (
            &[
                "replay",
                "--consumer",
                "svc",
                "--to-seq",
                "3",
                "--to-time",
                "2h",
            ],
            "cannot be used with",
        ),
        (&["replay", "--consumer", "svc"], "--to-seq"),
        (&["verify"], "--case"),
        (&["verify", "--all", "--case", "A"], "cannot be used with"),
        (
            &["events", "list", "--from-seq", "0"],
            "stream sequences start at 1",
        ),
        (&["events", "list", "--since", "last tuesday"], "--since"),
        (
            &["events", "list", "--type", "Bogus"],
            "known types: CaseOpened",
        ),
        (&["events", "list", "--agency", "navy"], "is not an agency"),
        (&["events", "list", "--office", "Customs:X"], "--office"),
        (&["dlq", "show", "x"], "is not a stream sequence"),
        (
            &["streams", "provision", "--replicas", "2"],
            "replicas must be 1",
        ),
        (&["audit"], "--case"),
        (
            &["--nats-inbox-prefix", "_INBOX.>", "streams", "status"],
            "inbox prefix \"_INBOX.>\" contains '>'",
        ),
        (
            &[
                "--nats-inbox-prefix",
                "_INBOX..operator",
                "streams",
                "status",
            ],
            "has an empty token",
        ),
        (
            &[
                "keys", "generate", "--office", "navy:x", "--label", "a", "--out", "k",
            ],
            "--office",
        ),
    ];
    for (args, expected) in cases {
        let run = run_offline(args).await;
        assert_eq!(
            run.code, 2,
            "casebus {args:?} exits 2\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        assert!(
            run.stderr.contains(expected),
            "casebus {args:?}: stderr should name {expected:?}:\n{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn a_missing_registry_or_an_inverted_range_is_a_usage_error() {
    let f = Fixture::start().await;
    let url = f.server.url();
    let env = [("CASEBUS_NATS_URL", url.as_str())];
    for args in [
        &["case", "show", "C1"][..],
        &["export", "--case", "C1", "--out", "/tmp/never-written.json"][..],
        &["dlq", "retry", "1"][..],
        &["keys", "list"][..],
    ] {
        let run = run_with_env(args, &env).await;
        assert_eq!(run.code, 2, "casebus {args:?}: {}", run.stderr);
        assert!(run.stderr.contains("--registry"), "{}", run.stderr);
    }
    let inverted = f
        .cli(&["events", "list", "--from-seq", "9", "--to-seq", "3"])
        .await;
    inverted.expect_code(2);
    assert!(
        inverted.stderr.contains("--from-seq 9 is after --to-seq 3"),
        "{}",
        inverted.stderr
    );
}

#[tokio::test]
async fn an_unreachable_nats_exits_3_naming_the_url() {
    for args in [
        &["streams", "status"][..],
        &["events", "list"][..],
        &["dlq", "list"][..],
    ] {
        let run = run_offline(args).await;
        assert_eq!(run.code, 3, "casebus {args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("cannot reach NATS at nats://127.0.0.1:1"),
            "{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn every_subcommand_explains_itself_with_an_example() {
    let top = run_offline(&["--help"]).await;
    top.expect_code(0);
    assert!(top.stdout.contains("Exit codes:"), "{}", top.stdout);
    assert!(top.stdout.contains("3  NATS unavailable"), "{}", top.stdout);
    for args in [
        &["events", "list"][..],
        &["events", "tail"][..],
        &["case", "show"][..],
        &["verify"][..],
        &["replay"][..],
        &["rebuild"][..],
        &["dlq", "list"][..],
        &["dlq", "show"][..],
        &["dlq", "retry"][..],
        &["dlq", "drop"][..],
        &["export"][..],
        &["audit"][..],
        &["keys", "generate"][..],
        &["keys", "register"][..],
        &["keys", "rotate"][..],
        &["keys", "list"][..],
        &["token", "issue"][..],
        &["issuer", "generate"][..],
        &["streams", "status"][..],
        &["streams", "provision"][..],
    ] {
        let mut with_help = args.to_vec();
        with_help.push("--help");
        let run = run_offline(&with_help).await;
        assert_eq!(run.code, 0, "casebus {with_help:?}");
        assert!(
            run.stdout.contains("Example:") && run.stdout.contains("casebus "),
            "casebus {with_help:?} shows an example:\n{}",
            run.stdout
        );
    }
}
