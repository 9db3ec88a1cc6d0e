//! Caller authentication, one implementation for every service and the gateway.
//!
//! A caller proves who it is with a bearer token (`authorization: Bearer cb1.…`) signed by
//! a trusted issuer, or with a TLS client certificate whose common name is its office id.
//! The interceptor puts the resulting [`Caller`] into the request's extensions; handlers
//! read it with [`caller`]. Anything else is UNAUTHENTICATED, and the message never
//! echoes the credential.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Request, Status};

use casebus_integrity::token::{Claims, Role, TrustedIssuers};
use casebus_proto::OfficeId;

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
}

impl Caller {
    /// Whether the caller has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Roles a certificate grants (certificates carry no roles of their own).
const CERTIFICATE_ROLES: [Role; 2] = [Role::Clerk, Role::Reader];
/// Metadata key naming the actor for certificate callers.
pub const ACTOR_HEADER: &str = "x-casebus-actor";

/// Authenticates requests; cheap to clone.
#[derive(Clone, Default)]
pub struct Authenticator {
    issuers: Option<Arc<TrustedIssuers>>,
    certificates: bool,
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
            .field("tokens", &self.issuers.is_some())
            .field("certificates", &self.certificates)
            .finish()
    }
}

impl Authenticator {
    /// Accepts tokens of `issuers` (if any) and client certificates (if `certificates`,
    /// i.e. the server verifies them against a client CA).
    pub fn new(issuers: Option<TrustedIssuers>, certificates: bool) -> Self {
        Self {
            issuers: issuers.map(Arc::new),
            certificates,
            verified: Arc::default(),
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
            let claims = self.verify_token(issuers, token.trim())?;
            return Ok(Caller {
                office: claims.office,
                actor: claims.actor,
                roles: claims.roles,
                method: Method::Token,
                token_id: claims.jti,
            });
        }
        if self.certificates
            && let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let office = office_of_certificate(leaf.as_ref())?;
            let actor = request
                .metadata()
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.is_empty() && a.len() <= 128)
                .unwrap_or("certificate")
                .to_owned();
            return Ok(Caller {
                office,
                actor,
                roles: CERTIFICATE_ROLES.to_vec(),
                method: Method::Certificate,
                token_id: String::new(),
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
        if let Some(claims) = cached
            && now.unix_timestamp() < claims.exp
        {
            return Ok(claims);
        }
        // Not cached, or expired since: the full check gives the precise refusal.
        let claims = issuers
            .verify(token, now)
            .map_err(|e| Status::unauthenticated(format!("token refused: {e}")))?;
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

/// The office named by a client certificate's subject common name.
fn office_of_certificate(der: &[u8]) -> Result<OfficeId, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| Status::unauthenticated("client certificate does not parse"))?;
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
