//! [`NatsServer`]: one JetStream-enabled `nats-server` owned by a test.

use std::path::{Path, PathBuf};

use crate::HarnessError;
use crate::binary::find_nats_server;
use crate::node::{Node, NodeConfig, Readiness};

/// How to start a [`NatsServer`]; `Default` gives a random port and no extra config.
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// The executable to run; `None` looks it up with [`find_nats_server`].
    pub binary: Option<PathBuf>,
    /// Config text appended to the generated config file, e.g. `jetstream { max_mem: 64MB }`.
    /// Host, port, JetStream and its store dir are command-line flags and win over it.
    pub extra_config: String,
    /// A fixed client port; `None` lets the server pick a free one.
    pub port: Option<u16>,
}

/// A running `nats-server` with JetStream, on `127.0.0.1`, in its own temp directory.
///
/// Dropping it kills the process (SIGKILL) and removes the directory. Each test should
/// start its own, so tests run in parallel.
#[derive(Debug)]
pub struct NatsServer {
    node: Node,
}

impl NatsServer {
    /// Starts a server on a free port and waits until JetStream answers.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(NatsServerOptions::default()).await
    }

    /// Starts a server as `options` say and waits until JetStream answers.
    pub async fn start_with(options: NatsServerOptions) -> Result<Self, HarnessError> {
        let binary = find_nats_server(options.binary.as_deref())?;
        let config = NodeConfig {
            extra: options.extra_config,
            port: options.port,
            ..NodeConfig::default()
        };
        let node = Node::start(binary, &config, Readiness::JetStream).await?;
        Ok(Self { node })
    }

    /// Starts `nats-server -c <config>` with a complete config of the test's own (a
    /// deployment config rendered for loopback, say) and returns once its listeners are
    /// bound.
    ///
    /// `render` gets the server's own directory, where it may write the files the config
    /// includes (relative `include`s resolve there) and put the JetStream store, and
    /// returns the config text. The harness adds only `--ports_file_dir`, so the config
    /// must listen on `127.0.0.1` (port `-1` picks a free one) and set everything else
    /// itself. Readiness is only "listening": the harness cannot log in to a server that
    /// demands credentials or TLS, so the test waits for JetStream itself (e.g. with
    /// [`crate::wait_until`] over a request with its own credentials).
    pub async fn start_from_config(
        binary: Option<&Path>,
        render: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Result<Self, HarnessError> {
        let binary = find_nats_server(binary)?;
        let node = Node::start_standalone(binary, render).await?;
        Ok(Self { node })
    }

    /// Client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// Client port; it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// Process id of the current process, or of the last one once it is stopped.
    pub fn pid(&self) -> u32 {
        self.node.pid()
    }

    /// The JetStream store directory (`-sd`); it survives kills and restarts.
    pub fn store_dir(&self) -> &Path {
        self.node.store_dir()
    }

    /// The temp directory the server owns: config, store, ports file and logs.
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

    /// Connects a client with default options (it reconnects after a restart).
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        self.node.client().await
    }

    /// Connects a client and wraps it in a JetStream context.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, HarnessError> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// Kills the process with SIGKILL and waits for it; the store dir is kept.
    pub async fn kill_hard(&mut self) -> Result<(), HarnessError> {
        self.node.kill_hard().await
    }

    /// Stops the process with SIGTERM, then SIGKILL after [`crate::STOP_TIMEOUT`].
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        self.node.stop().await
    }

    /// Starts a stopped server again on the same port and store dir, and waits until
    /// JetStream answers. If the old port is still taken, it retries within
    /// [`crate::STARTUP_TIMEOUT`]. Fails with [`HarnessError::StillRunning`] if the
    /// process runs.
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
}
