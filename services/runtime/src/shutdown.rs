//! Graceful shutdown: the first SIGINT or SIGTERM cancels the returned token (stop
//! accepting, finish in-flight work, drain NATS); a second one exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code when a second signal forces the exit.
const FORCED_EXIT: i32 = 130;

/// A token cancelled by the first SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown begun");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal; exiting now");
        std::process::exit(FORCED_EXIT);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A SIGHUP listener, installed when the service starts so that a SIGHUP after that
/// reloads instead of ending the process (the default action).
pub struct Hangup(#[cfg(unix)] tokio::signal::unix::Signal);

impl Hangup {
    /// Installs the listener.
    ///
    /// # Errors
    /// When the signal handler cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            signal(SignalKind::hangup()).map(Self)
        }
        #[cfg(not(unix))]
        Ok(Self())
    }

    /// Waits for the next SIGHUP (forever where there are no signals).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if self.0.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}
