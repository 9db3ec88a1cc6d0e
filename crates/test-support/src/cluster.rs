//! [`NatsCluster`]: a JetStream cluster of `nats-server` nodes on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use async_nats::jetstream::stream;
use tokio::time::Instant;

use crate::HarnessError;
use crate::binary::find_nats_server;
use crate::node::{ClusterBlock, HOST, Node, NodeConfig, Readiness, is_bind_failure, probe};
use crate::wait::{CLUSTER_READY_TIMEOUT, PROBE_TIMEOUT, poll};

/// Cluster name every harness cluster uses.
pub const CLUSTER_NAME: &str = "casebus-test";

/// How many times a cluster start is tried when a reserved route port was taken.
const CLUSTER_START_ATTEMPTS: usize = 3;

/// Stream the readiness check creates and deletes to prove R-n placement works.
const PLACEMENT_PROBE_STREAM: &str = "CASEBUS_HARNESS_PLACEMENT_PROBE";

/// The probe stream's only subject; nothing publishes to it.
const PLACEMENT_PROBE_SUBJECT: &str = "casebus.harness.placement-probe";

/// How to start a [`NatsCluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// The executable to run; `None` looks it up with [`find_nats_server`].
    pub binary: Option<PathBuf>,
    /// Config text appended to every node's generated config file.
    pub extra_config: String,
}

/// A JetStream cluster on `127.0.0.1`; node `i` is named `n{i+1}`.
///
/// Dropping it kills every node.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

/// One node of a [`NatsCluster`], with its own store dir and fixed client and route ports.
#[derive(Debug)]
pub struct ClusterNode {
    name: String,
    cluster_port: u16,
    node: Node,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until every one answers JetStream requests, which
    /// needs an elected meta leader.
    pub async fn start(size: usize) -> Result<Self, HarnessError> {
        Self::start_with(size, ClusterOptions::default()).await
    }

    /// Like [`start`](Self::start), with options.
    ///
    /// Route ports must be known before any node starts, so they are reserved by
    /// binding `127.0.0.1:0` and releasing the listener. Another process may grab such a
    /// port in between; then a node dies with "address already in use" and the whole
    /// cluster start is tried again, up to three times.
    pub async fn start_with(size: usize, options: ClusterOptions) -> Result<Self, HarnessError> {
        if size == 0 {
            return Err(HarnessError::Invalid(
                "a cluster needs at least one node".to_owned(),
            ));
        }
        let binary = find_nats_server(options.binary.as_deref())?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&binary, size, &options.extra_config).await {
                Err(e) if is_bind_failure(&e) && attempt < CLUSTER_START_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_start(binary: &Path, size: usize, extra: &str) -> Result<Self, HarnessError> {
        let route_ports = reserve_ports(size)?;
        let mut nodes = Vec::with_capacity(size);
        for (i, &cluster_port) in route_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = NodeConfig {
                server_name: Some(name.clone()),
                cluster: Some(ClusterBlock {
                    name: CLUSTER_NAME.to_owned(),
                    listen_port: cluster_port,
                    route_ports: route_ports
                        .iter()
                        .copied()
                        .filter(|&p| p != cluster_port)
                        .collect(),
                }),
                extra: extra.to_owned(),
                port: None,
            };
            let node = Node::start(binary.to_path_buf(), &config, Readiness::Connect).await?;
            nodes.push(ClusterNode {
                name,
                cluster_port,
                node,
            });
        }
        let cluster = Self { nodes };
        cluster.wait_for_jetstream().await?;
        Ok(cluster)
    }

    /// Waits, within [`CLUSTER_READY_TIMEOUT`], until every running node answers
    /// JetStream API requests (which needs a meta leader) and the meta leader can place a
    /// stream on every running node. A paused node never answers, so resume it first.
    ///
    /// nats-server 2.9 answers API requests as soon as a meta leader is elected, but
    /// for a while after that it may reject an R3 stream with "no suitable peers for
    /// placement" because it has not yet heard from every peer. So the last step creates
    /// and deletes a small memory stream replicated to every running node.
    pub async fn wait_for_jetstream(&self) -> Result<(), HarnessError> {
        let started = Instant::now();
        let deadline = started + CLUSTER_READY_TIMEOUT;
        let running: Vec<&ClusterNode> =
            self.nodes.iter().filter(|n| !n.node_is_stopped()).collect();
        for node in &running {
            let url = node.url();
            let ready = poll(deadline, async || {
                Ok(probe(&url, Readiness::JetStream).await.then_some(()))
            })
            .await?;
            if ready.is_none() {
                return Err(HarnessError::Timeout {
                    what: format!(
                        "node {} ({url}) of cluster {CLUSTER_NAME} to answer JetStream requests \
                         (no meta leader?); its log is {}",
                        node.name,
                        node.log_path().display()
                    ),
                    after: started.elapsed(),
                });
            }
        }

        let urls: Vec<String> = running.iter().map(|n| n.url()).collect();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(PROBE_TIMEOUT)
            .connect(urls.clone())
            .await
            .map_err(|e| HarnessError::nats(format!("connecting to {}", urls.join(",")), e))?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(PROBE_TIMEOUT);
        let probe_stream = stream::Config {
            name: PLACEMENT_PROBE_STREAM.to_owned(),
            subjects: vec![PLACEMENT_PROBE_SUBJECT.to_owned()],
            storage: stream::StorageType::Memory,
            num_replicas: running.len(),
            ..Default::default()
        };
        let placed = poll(deadline, async || {
            let placed = js.create_stream(probe_stream.clone()).await.is_ok()
                && js.delete_stream(PLACEMENT_PROBE_STREAM).await.is_ok();
            Ok(placed.then_some(()))
        })
        .await?;
        placed.ok_or_else(|| HarnessError::Timeout {
            what: format!(
                "cluster {CLUSTER_NAME} to place an R{} stream on its running nodes",
                running.len()
            ),
            after: started.elapsed(),
        })
    }

    /// The nodes, in name order (`n1`, `n2`, ...).
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// The nodes, mutable, to kill, restart, pause or resume them.
    pub fn nodes_mut(&mut self) -> &mut [ClusterNode] {
        &mut self.nodes
    }

    /// Node `index` (0-based; `n1` is 0). Panics if out of range, like slice indexing.
    pub fn node(&self, index: usize) -> &ClusterNode {
        &self.nodes[index]
    }

    /// Node `index`, mutable. Panics if out of range, like slice indexing.
    pub fn node_mut(&mut self, index: usize) -> &mut ClusterNode {
        &mut self.nodes[index]
    }

    /// Client URLs of all nodes; `async_nats::connect` accepts the `Vec` as is.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(ClusterNode::url).collect()
    }

    /// Connects one client that knows every node, so it fails over when one dies.
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        let urls = self.urls();
        async_nats::connect(urls.clone())
            .await
            .map_err(|e| HarnessError::nats(format!("connecting to {}", urls.join(",")), e))
    }

    /// Connects a client to every node and wraps it in a JetStream context.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, HarnessError> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }
}

impl ClusterNode {
    /// Server name, `n1`, `n2`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// Client port; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// Route (cluster) port; it stays the same across restarts.
    pub fn cluster_port(&self) -> u16 {
        self.cluster_port
    }

    /// Process id of the current process, or of the last one once it is stopped.
    pub fn pid(&self) -> u32 {
        self.node.pid()
    }

    /// This node's JetStream store directory; it survives kills and restarts.
    pub fn store_dir(&self) -> &Path {
        self.node.store_dir()
    }

    /// The temp directory the node owns: config, store, ports file and logs.
    pub fn dir(&self) -> &Path {
        self.node.dir()
    }

    /// File holding the stdout and stderr of the current or last process.
    pub fn log_path(&self) -> PathBuf {
        self.node.log_path()
    }

    /// Whether the process runs (a paused process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.node.is_running()
    }

    /// Connects a client to this node only.
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        self.node.client().await
    }

    /// Kills the process with SIGKILL and waits for it; the store dir is kept.
    pub async fn kill_hard(&mut self) -> Result<(), HarnessError> {
        self.node.kill_hard().await
    }

    /// Stops the process with SIGTERM, then SIGKILL after [`crate::STOP_TIMEOUT`].
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        self.node.stop().await
    }

    /// Starts a stopped node again on the same ports and store dir, and waits until it
    /// accepts clients. It does not wait for JetStream, which needs a quorum of nodes:
    /// call [`NatsCluster::wait_for_jetstream`] or poll the stream you need.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.node.restart().await
    }

    /// Freezes the process with SIGSTOP; it keeps its sockets but answers nothing.
    pub fn pause(&mut self) -> Result<(), HarnessError> {
        self.node.pause()
    }

    /// Thaws a paused process with SIGCONT.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.node.resume()
    }

    fn node_is_stopped(&self) -> bool {
        !self.node.has_child()
    }
}

/// Free TCP ports on loopback, found by binding port 0; all are held until every one is
/// found so they differ, then released (another process may take one before use).
fn reserve_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((HOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("reserving route ports on 127.0.0.1", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HarnessError::io("reading a reserved port", e))
}
