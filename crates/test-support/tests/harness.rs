//! Tests of the harness itself against the real `nats-server`: startup, JetStream,
//! kill on drop, crash and restart on the same port and store, the missing-binary hint,
//! startup failures, pause and resume, and the three-node cluster surviving a dead leader.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    publish::PublishAck,
    stream::{Config, StorageType},
};

use casebus_test_support::{
    HarnessError, NatsCluster, NatsServer, NatsServerOptions, process_exists, wait_until,
};

/// Ceiling for one JetStream publish to be acknowledged, or one API call to answer.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Ceiling for a cluster to elect a new stream leader and acknowledge again.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a paused server must stay silent for the test to believe it is frozen.
const SILENCE_WINDOW: Duration = Duration::from_millis(300);

/// Ceiling for the file store to write an acknowledged message to its block file.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// One request the server itself answers (JetStream account info), under [`ACK_TIMEOUT`].
async fn round_trip(client: &async_nats::Client) -> bool {
    let request = client.request("$JS.API.INFO", "".into());
    matches!(tokio::time::timeout(ACK_TIMEOUT, request).await, Ok(Ok(_)))
}

/// Publishes to `subject` until the surviving nodes acknowledge; right after a node dies
/// the stream may have no leader yet, or the client may still be reconnecting.
async fn publish_after_failover(js: &jetstream::Context, subject: &str) -> PublishAck {
    let what = format!("a publish to {subject} acked by the surviving nodes");
    wait_until(FAILOVER_TIMEOUT, &what, async || {
        let sent = tokio::time::timeout(ACK_TIMEOUT, async {
            js.publish(subject.to_owned(), "payload".into())
                .await
                .ok()?
                .await
                .ok()
        });
        sent.await.ok().flatten()
    })
    .await
    .expect("the cluster acknowledges with one node down")
}

fn file_stream(name: &str, replicas: usize) -> Config {
    Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Whether any message block (`*.blk`) under `dir` holds `needle`.
fn store_holds(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            store_holds(&path, needle)
        } else {
            path.extension().is_some_and(|e| e == "blk")
                && std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[tokio::test]
async fn server_starts_on_its_own_port_and_accepts_clients() {
    let server = NatsServer::start().await.expect("server starts");

    assert_ne!(server.port(), 0);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.store_dir().starts_with(server.dir()));
    assert!(process_exists(server.pid()));
    let client = server.client().await.expect("client connects");
    assert!(round_trip(&client).await, "the server answers a request");
}

#[tokio::test]
async fn jetstream_publish_to_a_file_stream_is_acknowledged() {
    let server = NatsServer::start().await.expect("server starts");
    let js = server.jetstream().await.expect("client connects");

    js.create_stream(file_stream("ORDERS", 1))
        .await
        .expect("stream is created");
    let ack = js
        .publish("ORDERS.created", "first".into())
        .await
        .expect("publish is sent")
        .await
        .expect("publish is acknowledged");

    assert_eq!(ack.stream, "ORDERS");
    assert_eq!(ack.sequence, 1);
}

#[tokio::test]
async fn dropping_the_server_kills_its_process_and_removes_its_dir() {
    let server = NatsServer::start().await.expect("server starts");
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));

    drop(server);

    assert!(!process_exists(pid), "pid {pid} still exists after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

#[tokio::test]
async fn hard_killed_server_restarts_on_the_same_port_with_its_messages() {
    let mut server = NatsServer::start().await.expect("server starts");
    let port = server.port();
    let old_pid = server.pid();
    let js = server.jetstream().await.expect("client connects");
    js.create_stream(file_stream("CRASH", 1))
        .await
        .expect("stream is created");
    let payload = "survives-kill-9";
    js.publish("CRASH.one", payload.into())
        .await
        .expect("publish is sent")
        .await
        .expect("publish is acknowledged");
    // nats-server 2.9 acks before its flusher write()s the block; once written, the page
    // cache keeps it across SIGKILL.
    let store = server.store_dir().to_path_buf();
    wait_until(
        FLUSH_TIMEOUT,
        "the message to reach a block file",
        async || store_holds(&store, payload.as_bytes()),
    )
    .await
    .expect("the file store writes the message");

    server.kill_hard().await.expect("SIGKILL");
    assert!(!server.is_running());
    assert!(!process_exists(old_pid), "pid {old_pid} outlived SIGKILL");
    server.restart().await.expect("restart on the same port");

    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), old_pid);
    let js = server.jetstream().await.expect("client reconnects");
    let stream = js.get_stream("CRASH").await.expect("stream survives");
    let message = stream.get_raw_message(1).await.expect("message 1 survives");
    assert_eq!(message.payload, payload.as_bytes());
}

#[tokio::test]
async fn stopped_server_exits_and_can_be_restarted() {
    let mut server = NatsServer::start().await.expect("server starts");
    let pid = server.pid();

    server.stop().await.expect("graceful stop");
    assert!(!server.is_running());
    assert!(!process_exists(pid));

    server.restart().await.expect("restart after stop");
    assert!(server.is_running());
}

#[tokio::test]
async fn restarting_a_running_server_is_rejected() {
    let mut server = NatsServer::start().await.expect("server starts");

    let err = server.restart().await.expect_err("server is running");

    assert!(matches!(err, HarnessError::StillRunning { pid } if pid == server.pid()));
}

#[tokio::test]
async fn missing_binary_fails_with_the_install_hint() {
    let options = NatsServerOptions {
        binary: Some("/nonexistent/casebus/nats-server".into()),
        ..NatsServerOptions::default()
    };

    let err = NatsServer::start_with(options)
        .await
        .expect_err("the binary does not exist");

    assert!(
        matches!(err, HarnessError::BinaryNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("apt-get install -y nats-server"),
        "{message}"
    );
    assert!(message.contains("NATS_SERVER_BIN"), "{message}");
    assert!(
        message.contains("/nonexistent/casebus/nats-server"),
        "{message}"
    );
}

#[tokio::test]
async fn server_that_dies_at_startup_fails_fast_with_its_output() {
    let options = NatsServerOptions {
        extra_config: "jetstream { max_mem: not-a-size }".to_owned(),
        ..NatsServerOptions::default()
    };

    let err = NatsServer::start_with(options)
        .await
        .expect_err("the config is invalid");

    let HarnessError::Exited { output, .. } = &err else {
        panic!("expected Exited, got {err:?}");
    };
    assert!(
        output.contains("max_mem"),
        "output names the bad key: {output}"
    );
}

#[tokio::test]
async fn paused_server_answers_nothing_until_resumed() {
    let mut server = NatsServer::start().await.expect("server starts");
    let client = server.client().await.expect("client connects");

    server.pause().expect("SIGSTOP");
    let request = client.request("$JS.API.INFO", "".into());
    let silent = tokio::time::timeout(SILENCE_WINDOW, request).await;
    assert!(silent.is_err(), "a paused server answered: {silent:?}");

    server.resume().expect("SIGCONT");
    assert!(round_trip(&client).await, "the resumed server answers");
}

#[tokio::test]
async fn cluster_keeps_acknowledging_publishes_after_its_stream_leader_is_killed() {
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    assert_eq!(cluster.urls().len(), 3);

    let js = cluster.jetstream().await.expect("client connects");
    let mut stream = js
        .create_stream(file_stream("REPLICATED", 3))
        .await
        .expect("R3 stream is created");
    js.publish("REPLICATED.before", "before".into())
        .await
        .expect("publish is sent")
        .await
        .expect("publish is acknowledged by the quorum");
    let info = stream.info().await.expect("stream info");
    let cluster_info = info
        .cluster
        .clone()
        .expect("an R3 stream reports its cluster");
    assert_eq!(
        cluster_info.replicas.len(),
        2,
        "two followers besides the leader"
    );
    let leader = cluster_info.leader.expect("the stream has a leader");

    let leader_node = cluster
        .nodes_mut()
        .iter_mut()
        .find(|n| n.name() == leader)
        .expect("the leader is one of the nodes");
    leader_node.kill_hard().await.expect("SIGKILL the leader");

    let ack = publish_after_failover(&js, "REPLICATED.after").await;
    assert!(ack.sequence >= 2);
    let stream = js.get_stream("REPLICATED").await.expect("stream info");
    let new_leader = stream.cached_info().cluster.clone().and_then(|c| c.leader);
    assert_ne!(new_leader.as_deref(), Some(leader.as_str()));
}

#[tokio::test]
async fn cluster_node_rejoins_and_catches_up_after_a_restart() {
    let mut cluster = NatsCluster::start(3).await.expect("cluster starts");
    let js = cluster.jetstream().await.expect("client connects");
    js.create_stream(file_stream("REJOIN", 3))
        .await
        .expect("R3 stream is created");

    let node = cluster.node_mut(2);
    let (port, cluster_port) = (node.port(), node.cluster_port());
    node.kill_hard().await.expect("SIGKILL n3");
    publish_after_failover(&js, "REJOIN.while_down").await;
    let node = cluster.node_mut(2);
    node.restart().await.expect("n3 restarts");
    assert_eq!((node.port(), node.cluster_port()), (port, cluster_port));

    let n3 = node.client().await.expect("client connects to n3");
    let js3 = jetstream::new(n3);
    wait_until(
        FAILOVER_TIMEOUT,
        "n3 to be a current replica of REJOIN",
        async || {
            let Ok(mut stream) = js3.get_stream("REJOIN").await else {
                return false;
            };
            let Ok(info) = stream.info().await else {
                return false;
            };
            let Some(cluster_info) = &info.cluster else {
                return false;
            };
            cluster_info.leader.as_deref() == Some("n3")
                || cluster_info
                    .replicas
                    .iter()
                    .any(|peer| peer.name == "n3" && peer.current && peer.lag.unwrap_or(0) == 0)
        },
    )
    .await
    .expect("n3 catches up");
}
