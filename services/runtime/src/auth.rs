//! Caller authentication, one implementation for every service and the gateway.
//!
//! A caller proves who it is with a bearer token (`authorization: Bearer cb1.…`) signed by
//! a trusted issuer for this service's audience, or with a TLS client certificate whose
//! common name is its office id. The interceptor puts the resulting [`Caller`] into the
//! request's extensions; handlers read it with [`caller`]. Anything else is
//! UNAUTHENTICATED, and the message never echoes the credential.
//!
//! Every call also checks the token id against the revocation list, a file of token ids
//! polled for changes at most once a second (so a revocation takes effect within a second
//! on every instance that reads the file). A list that becomes unreadable or invalid keeps
//! the last good one in force: an accident must never un-revoke a token.
//!
//! The actor of a certificate caller comes from its certificate: a URI subject alternative
//! name `casebus:actor:<name>` names it (otherwise it is `certificate <serial>`). Only a
//! certificate with the URI `casebus:actor:*` (a back-office system acting for many
//! people) may name the actor per call in the `x-casebus-actor` header; any other
//! certificate's header is ignored.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tonic::{Request, Status};

use casebus_integrity::token::{Audience, Claims, Role, TrustedIssuers};
use casebus_proto::OfficeId;

use crate::RuntimeError;
use crate::files::Fingerprint;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A bearer token.
    Token,
    /// A TLS client certificate.
    Certificate,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The office the caller acts for.
    pub office: OfficeId,
    /// The person or system at the office.
    pub actor: String,
    /// Granted roles.
    pub roles: Vec<Role>,
    /// How it authenticated.
    pub method: Method,
    /// Token id (for audit), empty for certificates.
    pub token_id: String,
    /// When the credential stops being valid (the token's expiry, the certificate's
    /// `notAfter`); streams it opened end then with UNAUTHENTICATED.
    pub expires_at: Option<OffsetDateTime>,
}

impl Caller {
    /// Whether the caller has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// A future that completes when the caller's credential expires (never, for one
    /// without expiry). It owns what it needs, so a stream's task can hold it.
    pub fn expiry(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let left = self
            .expires_at
            .map(|at| Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO));
        async move {
            match left {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// The status a stream ends with when the credential that opened it expires.
pub fn credential_expired(caller: &Caller) -> Status {
    let at = caller
        .expires_at
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let what = match caller.method {
        Method::Token => "token",
        Method::Certificate => "client certificate",
    };
    Status::unauthenticated(format!(
        "the {what} that opened this stream expired at {at}; open it again with a valid credential"
    ))
}

/// The status a stream ends with when the token that opened it is revoked.
fn credential_revoked(caller: &Caller) -> Status {
    Status::unauthenticated(format!(
        "the token that opened this stream ({}) was revoked; open it again with a valid credential",
        caller.token_id
    ))
}

/// The token ids refused however valid their signature: one id a line, blank lines and
/// lines starting with `#` ignored.
#[derive(Debug)]
struct RevocationList {
    path: PathBuf,
    state: Mutex<Revoked>,
}

#[derive(Debug)]
struct Revoked {
    checked: Instant,
    stamp: Option<Fingerprint>,
    ids: Arc<HashSet<String>>,
}

/// How often the revocation file is checked for changes, at most.
const REVOCATION_POLL: Duration = Duration::from_secs(1);

fn read_revocations(path: &Path) -> Result<HashSet<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut ids = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > 64 || !line.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("line {}: {line:?} is not a token id", n + 1));
        }
        ids.insert(line.to_owned());
    }
    Ok(ids)
}

impl RevocationList {
    fn load(path: &Path) -> Result<Self, RuntimeError> {
        let invalid = |reason: String| RuntimeError::Config {
            key: "--revoked-tokens",
            reason: format!("{}: {reason}", path.display()),
        };
        // The fingerprint is taken before the read, so a change during the read is seen
        // at the next poll rather than missed.
        let stamp = Fingerprint::of(path);
        let ids = read_revocations(path).map_err(invalid)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(Revoked {
                checked: Instant::now(),
                stamp,
                ids: Arc::new(ids),
            }),
        })
    }

    fn contains(&self, token_id: &str) -> bool {
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock means a panic while reloading; refusing is the safe answer.
            return true;
        };
        if state.checked.elapsed() >= REVOCATION_POLL {
            state.checked = Instant::now();
            let now = Fingerprint::of(&self.path);
            if now != state.stamp {
                match read_revocations(&self.path) {
                    Ok(ids) => {
                        tracing::info!(path = %self.path.display(), revoked = ids.len(), "revocation list reloaded");
                        state.ids = Arc::new(ids);
                        state.stamp = now;
                    }
                    Err(error) => {
                        tracing::error!(path = %self.path.display(), error = %error, "revocation list unreadable; keeping the last good one");
                    }
                }
            }
        }
        state.ids.contains(token_id)
    }
}

/// Roles a certificate grants (certificates carry no roles of their own).
const CERTIFICATE_ROLES: [Role; 2] = [Role::Clerk, Role::Reader];
/// Metadata key naming the actor for certificate callers whose certificate allows it.
pub const ACTOR_HEADER: &str = "x-casebus-actor";
/// URI subject alternative name prefix naming a certificate's actor.
pub const ACTOR_URI_PREFIX: &str = "casebus:actor:";
/// URI subject alternative name letting a certificate name its actor per call.
pub const ACTOR_DELEGATION_URI: &str = "casebus:actor:*";

/// Authenticates requests; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    audience: Audience,
    issuers: Option<Arc<TrustedIssuers>>,
    certificates: bool,
    revoked: Option<Arc<RevocationList>>,
    /// Why bearer tokens are refused on this listener, if they are (plaintext gRPC on an
    /// address others can reach).
    plaintext_refusal: Option<Arc<str>>,
    /// Tokens whose signature was verified, with their claims. A back-office sends the
    /// same token on every call; checking its signature once saves an Ed25519
    /// verification per request. Expiry is still checked on every use.
    verified: Arc<std::sync::Mutex<std::collections::HashMap<String, Claims>>>,
}

/// Verified tokens remembered at most; beyond that the cache starts over.
const TOKEN_CACHE: usize = 4096;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("audience", &self.audience)
            .field("tokens", &self.issuers.is_some())
            .field("certificates", &self.certificates)
            .finish()
    }
}

impl Authenticator {
    /// Accepts tokens of `issuers` (if any) for `audience` and client certificates (if
    /// `certificates`, i.e. the server verifies them against a client CA).
    pub fn new(audience: Audience, issuers: Option<TrustedIssuers>, certificates: bool) -> Self {
        Self {
            audience,
            issuers: issuers.map(Arc::new),
            certificates,
            revoked: None,
            plaintext_refusal: None,
            verified: Arc::default(),
        }
    }

    /// Refuses tokens whose id is listed in the file at `path` (reloaded on change).
    ///
    /// # Errors
    /// [`RuntimeError::Config`] when the file cannot be read or has a line that is not a
    /// token id.
    pub fn with_revocation_list(mut self, path: &Path) -> Result<Self, RuntimeError> {
        self.revoked = Some(Arc::new(RevocationList::load(path)?));
        Ok(self)
    }

    /// Refuses every bearer token with UNAUTHENTICATED naming `reason` (a plaintext
    /// listener others can reach, where a token would travel in clear).
    pub fn refuse_tokens(mut self, reason: &str) -> Self {
        self.plaintext_refusal = Some(Arc::from(reason));
        self
    }

    /// A future that completes, with the status to end the stream with, when the
    /// credential that opened a stream stops being good: at its expiry, or within
    /// [`REVOCATION_POLL`] of its token id appearing in the revocation list. A stream's
    /// task selects on it, so what a caller reads is bounded by its credential's life.
    pub fn stream_end(
        &self,
        caller: &Caller,
    ) -> impl std::future::Future<Output = Status> + Send + 'static {
        let expiry = caller.expiry();
        let revoked = self
            .revoked
            .clone()
            .filter(|_| caller.method == Method::Token && !caller.token_id.is_empty());
        let caller = caller.clone();
        async move {
            let revocation = async {
                match revoked {
                    Some(list) => loop {
                        if list.contains(&caller.token_id) {
                            return;
                        }
                        tokio::time::sleep(REVOCATION_POLL).await;
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = expiry => credential_expired(&caller),
                () = revocation => credential_revoked(&caller),
            }
        }
    }

    /// Whether any method is configured. A service with none refuses every call.
    pub fn is_configured(&self) -> bool {
        self.issuers.is_some() || self.certificates
    }

    /// Authenticates one request from its metadata and peer certificates.
    ///
    /// # Errors
    /// UNAUTHENTICATED naming what is missing or wrong.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if let Some(value) = request.metadata().get("authorization") {
            let Some(issuers) = &self.issuers else {
                return Err(Status::unauthenticated(
                    "bearer tokens are not accepted by this server",
                ));
            };
            let text = value
                .to_str()
                .map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
            let token = text
                .strip_prefix("Bearer ")
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            // Refused before the token is looked at: it has crossed the network in clear.
            if let Some(reason) = &self.plaintext_refusal {
                return Err(Status::unauthenticated(reason.to_string()));
            }
            let claims = self.verify_token(issuers, token.trim())?;
            let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).ok();
            return Ok(Caller {
                office: claims.office,
                actor: claims.actor,
                roles: claims.roles,
                method: Method::Token,
                token_id: claims.jti,
                expires_at,
            });
        }
        if self.certificates
            && let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let identity = certificate_identity(leaf.as_ref())?;
            let named = request
                .metadata()
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.trim().is_empty() && a.len() <= 128);
            let actor = match named {
                Some(named) if identity.delegates => named.to_owned(),
                _ => identity.actor,
            };
            return Ok(Caller {
                office: identity.office,
                actor,
                roles: CERTIFICATE_ROLES.to_vec(),
                method: Method::Certificate,
                token_id: String::new(),
                expires_at: Some(identity.not_after),
            });
        }
        Err(Status::unauthenticated(
            "missing credentials: send `authorization: Bearer <token>` or a client certificate",
        ))
    }

    fn verify_token(&self, issuers: &TrustedIssuers, token: &str) -> Result<Claims, Status> {
        let now = OffsetDateTime::now_utc();
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        let claims = match cached {
            Some(claims) if now.unix_timestamp() < claims.exp => claims,
            // Not cached, or expired since: the full check gives the precise refusal.
            _ => issuers
                .verify(token, self.audience, now)
                .map_err(|e| Status::unauthenticated(format!("token refused: {e}")))?,
        };
        if let Some(revoked) = &self.revoked
            && revoked.contains(&claims.jti)
        {
            return Err(Status::unauthenticated(format!(
                "token refused: token {} is revoked",
                claims.jti
            )));
        }
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= TOKEN_CACHE {
                cache.clear();
            }
            cache.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    /// A tonic interceptor that authenticates and stores the [`Caller`] in extensions.
    pub fn interceptor(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let this = self.clone();
        move |mut request: Request<()>| {
            let caller = this.authenticate(&request)?;
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }
}

/// Who a client certificate names.
struct CertificateIdentity {
    office: OfficeId,
    actor: String,
    /// Whether the certificate may name the actor per call.
    delegates: bool,
    not_after: OffsetDateTime,
}

/// The office (subject common name), actor and validity end of a client certificate.
fn certificate_identity(der: &[u8]) -> Result<CertificateIdentity, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Status::unauthenticated("client certificate does not parse"))?;
    let mut actor = None;
    let mut delegates = false;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if *uri == ACTOR_DELEGATION_URI {
                    delegates = true;
                } else if let Some(named) = uri.strip_prefix(ACTOR_URI_PREFIX)
                    && !named.is_empty()
                    && named.len() <= 128
                    && actor.is_none()
                {
                    actor = Some(named.to_owned());
                }
            }
        }
    }
    let actor = actor.unwrap_or_else(|| format!("certificate {}", cert.raw_serial_as_string()));
    let not_after = cert.validity().not_after.to_datetime();
    let office = office_of_certificate(&cert)?;
    Ok(CertificateIdentity {
        office,
        actor,
        delegates,
        not_after,
    })
}

/// The office named by a client certificate's subject common name.
fn office_of_certificate(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<OfficeId, Status> {
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| Status::unauthenticated("client certificate has no common name"))?;
    OfficeId::new(cn)
        .map_err(|e| Status::unauthenticated(format!("client certificate common name: {e}")))
}

/// The authenticated caller of a request.
///
/// # Errors
/// UNAUTHENTICATED when the request did not pass the interceptor (a wiring bug).
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}
