//! [`PermissionProbe`]: a NATS client that logs in with a given NKey seed (and TLS trust
//! anchor) and tells, for one request or subscription, whether the server refused it for
//! lack of permission. It exists for tests of deployment configs (users and their
//! permissions); everything a service really does goes through casebus-bus.
//!
//! A refused publish or subscription is dropped by the server, which then sends
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` (or `Subscription to`); the
//! client reports that as a server error event, which the probe collects. An allowed
//! request instead gets an answer (for the JetStream API, a JSON reply, possibly an API
//! error) or a "no responders" status, so every probe ends on an event, never on a delay.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use futures::StreamExt as _;
use tokio::sync::mpsc;

use crate::HarnessError;

/// Ceiling for the server to answer a probe or to refuse it.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a probe logs in.
#[derive(Debug, Clone, Default)]
pub struct ProbeLogin {
    /// Server URLs; the probe connects to one of them.
    pub urls: Vec<String>,
    /// The user's NKey seed (`SU...`); `None` connects without credentials.
    pub nkey_seed: Option<String>,
    /// PEM CA file the server's certificate must chain to; `None` uses the system roots.
    pub tls_ca: Option<PathBuf>,
    /// Prefix of the probe's reply inboxes (the user's own, as its service would use);
    /// `None` keeps the NATS default `_INBOX`.
    pub inbox_prefix: Option<String>,
}

/// What the server did with a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// It refused with a permissions violation naming the subject.
    Refused,
    /// It was allowed and answered; the answer's payload as (lossy) UTF-8.
    Answered(String),
    /// It was allowed but nobody listens on the subject.
    NoResponders,
}

/// A logged-in client that probes permissions. See the module docs.
#[derive(Debug)]
pub struct PermissionProbe {
    client: async_nats::Client,
    violations: mpsc::UnboundedReceiver<String>,
}

impl PermissionProbe {
    /// Connects and logs in as `login` says.
    ///
    /// # Errors
    /// [`HarnessError::Nats`] when the server cannot be reached or refuses the login (an
    /// unknown key, a certificate the CA did not sign).
    pub async fn connect(login: &ProbeLogin) -> Result<Self, HarnessError> {
        let (tx, violations) = mpsc::unbounded_channel();
        let mut options = ConnectOptions::new()
            .connection_timeout(REFUSAL_TIMEOUT)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(ServerError::Other(text)) = event {
                        let _ = tx.send(text);
                    }
                }
            });
        if let Some(seed) = &login.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(ca) = &login.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some(prefix) = &login.inbox_prefix {
            options = options.custom_inbox_prefix(prefix.clone());
        }
        let what = format!("logging in to {}", login.urls.join(","));
        let addrs = login
            .urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HarnessError::nats(what.clone(), e))?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| HarnessError::nats(what, e))?;
        Ok(Self { client, violations })
    }

    /// Sends a request to `subject` and reports whether it was answered, found no
    /// responder, or was refused.
    ///
    /// The answer is awaited on an inbox of its own rather than through the client's
    /// request multiplexer, which only recognises answers sent on the reply subject: a
    /// JetStream pull delivers messages under their original subjects.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] when neither an answer nor a refusal comes within
    /// [`REFUSAL_TIMEOUT`]; [`HarnessError::Nats`] when the request cannot be sent.
    pub async fn request(&mut self, subject: &str, payload: &str) -> Result<Probed, HarnessError> {
        self.drain();
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| HarnessError::nats(format!("subscribing to {inbox}"), e))?;
        self.client
            .publish_with_reply(subject.to_owned(), inbox, payload.to_owned().into())
            .await
            .map_err(|e| HarnessError::nats(format!("request to {subject}"), e))?;
        self.client
            .flush()
            .await
            .map_err(|e| HarnessError::nats(format!("flushing a request to {subject}"), e))?;
        let needle = format!("Publish to \"{subject}\"");
        let violations = &mut self.violations;
        let outcome = tokio::time::timeout(REFUSAL_TIMEOUT, async move {
            loop {
                tokio::select! {
                    answer = answers.next() => {
                        return match answer {
                            Some(message)
                                if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) =>
                            {
                                Ok(Probed::NoResponders)
                            }
                            Some(message) => Ok(Probed::Answered(
                                String::from_utf8_lossy(&message.payload).into_owned(),
                            )),
                            None => Err(HarnessError::Invalid(
                                "the probe's answer subscription closed".into(),
                            )),
                        };
                    }
                    text = violations.recv() => match text {
                        Some(text) if is_violation(&text, &needle) => return Ok(Probed::Refused),
                        Some(_) => {}
                        None => return Err(HarnessError::Invalid("the probe's event channel closed".into())),
                    },
                }
            }
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(HarnessError::Timeout {
                what: format!("an answer to, or a refusal of, a request to {subject}"),
                after: REFUSAL_TIMEOUT,
            })
        })
    }

    /// Publishes to `subject` (no reply expected) and waits for the server to refuse it.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] when no refusal comes within [`REFUSAL_TIMEOUT`], which
    /// means the publish was allowed; [`HarnessError::Nats`] when it cannot be sent.
    pub async fn publish_is_refused(
        &mut self,
        subject: &str,
        payload: &str,
    ) -> Result<(), HarnessError> {
        self.drain();
        self.client
            .publish(subject.to_owned(), payload.to_owned().into())
            .await
            .map_err(|e| HarnessError::nats(format!("publish to {subject}"), e))?;
        self.client
            .flush()
            .await
            .map_err(|e| HarnessError::nats(format!("flushing a publish to {subject}"), e))?;
        self.await_refusal(&format!("Publish to \"{subject}\""), subject)
            .await
    }

    /// Subscribes to `subject` and waits for the server to refuse it.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] when no refusal comes within [`REFUSAL_TIMEOUT`], which
    /// means the subscription was allowed; [`HarnessError::Nats`] when it cannot be sent.
    pub async fn subscribe_is_refused(&mut self, subject: &str) -> Result<(), HarnessError> {
        self.drain();
        // Held until the verdict, then dropped, which unsubscribes.
        let _subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| HarnessError::nats(format!("subscribing to {subject}"), e))?;
        self.await_refusal(&format!("Subscription to \"{subject}\""), subject)
            .await
    }

    async fn await_refusal(&mut self, needle: &str, subject: &str) -> Result<(), HarnessError> {
        let violations = &mut self.violations;
        let refused = tokio::time::timeout(REFUSAL_TIMEOUT, async move {
            while let Some(text) = violations.recv().await {
                if is_violation(&text, needle) {
                    return true;
                }
            }
            false
        })
        .await;
        match refused {
            Ok(true) => Ok(()),
            Ok(false) => Err(HarnessError::Invalid(
                "the probe's event channel closed".into(),
            )),
            Err(_) => Err(HarnessError::Timeout {
                what: format!("the server to refuse {subject} for lack of permission"),
                after: REFUSAL_TIMEOUT,
            }),
        }
    }

    /// Forgets violations of earlier probes, so they cannot be taken for this one's.
    fn drain(&mut self) {
        while self.violations.try_recv().is_ok() {}
    }
}

fn is_violation(text: &str, needle: &str) -> bool {
    text.to_ascii_lowercase().contains("permissions violation") && text.contains(needle)
}
