//! Named timeouts and polling: [`wait_until`] and the deadline loop the harness uses,
//! and [`retry_pause`], the backoff of a load client retrying a command.

use std::time::Duration;

use tokio::time::Instant;

use crate::HarnessError;

/// Ceiling for one server to write its ports file and answer JetStream requests.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Ceiling for a cluster to elect a JetStream meta leader once all its nodes listen.
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a graceful stop waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two checks of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Ceiling for one readiness probe (a connect or one JetStream API request).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of one check in [`wait_until`]: `true` or `Some(value)` ends the wait.
pub trait Ready {
    /// What [`wait_until`] returns once the condition holds.
    type Output;

    /// `Some` when the condition holds.
    fn ready(self) -> Option<Self::Output>;
}

impl Ready for bool {
    type Output = ();

    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Output = T;

    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `true` or `Some(value)`.
///
/// `timeout` is a ceiling, not a delay: the first check runs at once. A check still
/// running at the deadline is cancelled. When the deadline passes, the error is
/// [`HarnessError::Timeout`] naming `what`, so write `what` as the awaited condition
/// ("projection to show case 7 closed").
pub async fn wait_until<R: Ready>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> R,
) -> Result<R::Output, HarnessError> {
    let deadline = Instant::now() + timeout;
    let polled = poll(deadline, async || Ok(check().await.ready())).await?;
    polled.ok_or_else(|| HarnessError::Timeout {
        what: what.to_owned(),
        after: timeout,
    })
}

/// [`wait_until`] for a check that builds an owned future each time (a closure like
/// `|| { let x = x.clone(); async move { ... } }`), whose wait is `Send` when the future
/// is: usable inside spawned tasks, where an `async ||` closure borrowing its captures
/// is not.
///
/// # Errors
/// [`HarnessError::Timeout`] naming `what` when `check` is still false at the deadline.
pub async fn wait_until_owned<F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> Result<(), HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(true) = tokio::time::timeout_at(deadline, check()).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` until it yields `Some`, fails, or `deadline` passes (then `Ok(None)`).
pub(crate) async fn poll<T>(
    deadline: Instant,
    mut check: impl AsyncFnMut() -> Result<Option<T>, HarnessError>,
) -> Result<Option<T>, HarnessError> {
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(Some(value))) => return Ok(Some(value)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) => return Ok(None),
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The pause a load client takes before it retries a command whose outcome it does not
/// know (UNAVAILABLE during a fault): 25 ms doubling per retry up to 400 ms, as a real
/// client backs off. Not for waiting on a condition: that is [`wait_until`].
pub async fn retry_pause(retries: u32) {
    let millis = 25u64 << retries.min(4);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{HarnessError, wait_until};

    const SHORT: Duration = Duration::from_millis(60);

    #[tokio::test]
    async fn a_condition_that_never_holds_times_out_naming_what_was_awaited() {
        let err = wait_until(SHORT, "the moon to turn blue", async || false)
            .await
            .expect_err("the condition is always false");
        assert!(
            matches!(err, HarnessError::Timeout { ref what, .. } if what == "the moon to turn blue")
        );
        assert!(err.to_string().contains("the moon to turn blue"), "{err}");
    }

    #[tokio::test]
    async fn a_condition_that_holds_on_the_third_check_returns_its_value() {
        let mut checks = 0;
        let value = wait_until(Duration::from_secs(5), "third check", async || {
            checks += 1;
            (checks == 3).then_some(checks * 10)
        })
        .await
        .expect("holds on the third check");
        assert_eq!(value, 30);
    }

    #[tokio::test]
    async fn a_closure_returning_a_future_works_like_an_async_closure() {
        wait_until(SHORT, "an immediate true", || async { true })
            .await
            .expect("holds at once");
    }
}
