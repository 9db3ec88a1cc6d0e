//! Bearer tokens for gRPC callers: claims (audience, office, actor, roles, validity)
//! signed with an issuer's Ed25519 key, and their verification against the trusted issuer
//! keys and the limits the trust file sets for each issuer (offices, roles, audiences,
//! the longest lifetime).
//!
//! Format: `cb1.<claims>.<signature>`, both parts unpadded base64url; the signature
//! covers the ASCII bytes `cb1.<claims>`. Claims are JSON with fixed field order.
//!
//! A token names the one kind of service it is for (its audience): a clerk's token for an
//! agency service is refused by the gateway and the monitor, so a credential leaked from
//! one surface opens no other. Tokens issued before audiences existed carry none and are
//! refused everywhere: accepting them would keep every old, possibly leaked, token valid
//! on every surface until it expires, and issuing a new token is one command.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use casebus_proto::OfficeId;

const PREFIX: &str = "cb1";
/// Longest token accepted, in bytes.
const MAX_TOKEN_LEN: usize = 4096;
/// Longest lifetime `IssuerKey::issue` signs: a year and a day. A trust file usually caps
/// an issuer far lower; this bound keeps every expiry a representable date.
pub const MAX_TTL: time::Duration = time::Duration::days(366);
/// The cap of an issuer whose trust-file entry sets no `max_ttl`.
pub const DEFAULT_MAX_TTL: time::Duration = time::Duration::days(30);

/// The kind of service a token is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The agency services (commands, inbox, import).
    Agency,
    /// The query gateway.
    Gateway,
    /// The monitoring dashboard.
    Monitor,
}

impl Audience {
    /// Every audience.
    pub const ALL: [Audience; 3] = [Self::Agency, Self::Gateway, Self::Monitor];

    /// Parses `agency`, `gateway` or `monitor`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "agency" => Self::Agency,
            "gateway" => Self::Gateway,
            "monitor" => Self::Monitor,
            _ => return None,
        })
    }

    /// The lower-case name used in tokens and trust files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agency => "agency",
            Self::Gateway => "gateway",
            Self::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller may do, beyond acting for its office.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Records actions for its office (agency services).
    Clerk,
    /// Reads timelines of cases its agency takes part in (gateway).
    Reader,
    /// Sees metadata of every case for monitoring, never sealed payloads.
    Admin,
    /// Operates the bus (replay, dead letters).
    Operator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Self::Clerk, Self::Reader, Self::Admin, Self::Operator];

    /// The lower-case name used in tokens and trust files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clerk => "clerk",
            Self::Reader => "reader",
            Self::Admin => "admin",
            Self::Operator => "operator",
        }
    }

    /// Parses `clerk`, `reader`, `admin` or `operator`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "clerk" => Self::Clerk,
            "reader" => Self::Reader,
            "admin" => Self::Admin,
            "operator" => Self::Operator,
            _ => return None,
        })
    }
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Id of the issuer key that signed the token.
    pub iss: String,
    /// The kind of service the token is for; `None` only in tokens issued before
    /// audiences existed, which every verifier refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The office the caller acts for.
    pub office: OfficeId,
    /// The person or system at the office.
    pub actor: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at (exclusive), unix seconds.
    pub exp: i64,
    /// Unique token id, for audit.
    pub jti: String,
}

impl Claims {
    /// Whether the claims grant `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Why a token was refused. The text never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is not of the form `cb1.<claims>.<signature>` or its parts do not decode.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// No trusted issuer has this key id.
    #[error("token issued by unknown issuer key {0:?}")]
    UnknownIssuer(String),
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token expired.
    #[error("token expired at {0}")]
    Expired(String),
    /// The token is not valid yet.
    #[error("token is not valid before {0}")]
    NotYetValid(String),
    /// The token names no audience (issued before audiences existed).
    #[error("token names no audience; issue a new one with --audience {0}")]
    NoAudience(Audience),
    /// The token is for another kind of service.
    #[error("token is for the {found} audience, not {expected}")]
    WrongAudience {
        /// The audience of this service.
        expected: Audience,
        /// The audience the token names.
        found: Audience,
    },
    /// The trust file does not let the issuer sign for this office.
    #[error("issuer {issuer} may not issue tokens for office {office}")]
    OfficeNotAllowed {
        /// The issuer key id.
        issuer: String,
        /// The office the token names.
        office: String,
    },
    /// The trust file does not let the issuer grant this role.
    #[error("issuer {issuer} may not grant the {role} role")]
    RoleNotAllowed {
        /// The issuer key id.
        issuer: String,
        /// The role the token names.
        role: &'static str,
    },
    /// The trust file does not let the issuer sign for this audience.
    #[error("issuer {issuer} may not issue tokens for the {audience} audience")]
    AudienceNotAllowed {
        /// The issuer key id.
        issuer: String,
        /// The audience the token names.
        audience: Audience,
    },
    /// The token lives longer than the trust file allows its issuer.
    #[error("token lifetime of {lifetime_secs}s exceeds issuer {issuer}'s cap of {cap_secs}s")]
    LifetimeTooLong {
        /// The issuer key id.
        issuer: String,
        /// `exp - iat` of the token, in seconds.
        lifetime_secs: i64,
        /// The issuer's cap, in seconds.
        cap_secs: i64,
    },
    /// The token id is on the revocation list.
    #[error("token {0} is revoked")]
    Revoked(String),
}

/// Errors handling issuer key and trust files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// The file could not be read or written.
    #[error("issuer file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is invalid.
    #[error("issuer file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Claims to issue are invalid.
    #[error("invalid claims: {0}")]
    Claims(String),
}

/// An issuer's secret key, which signs tokens.
#[derive(Clone)]
pub struct IssuerKey {
    key_id: String,
    key: SigningKey,
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IssuerKeyFile {
    key_id: String,
    secret_key: Zeroizing<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct TrustFile {
    #[serde(default)]
    issuer: Vec<TrustedIssuer>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct TrustedIssuer {
    key_id: String,
    public_key: String,
    /// Required: an entry without limits is refused rather than read as "anything".
    offices: Option<Vec<String>>,
    /// Required, like `offices`.
    roles: Option<Vec<Role>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audiences: Option<Vec<Audience>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_ttl: Option<String>,
}

/// A pattern of offices an issuer may sign for: `*` (any office), `<agency>:*` (any office
/// of that agency) or one office id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficePattern(String);

impl OfficePattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// [`IssuerError::Claims`] naming the pattern when it is none of the three forms.
    pub fn parse(pattern: &str) -> Result<Self, IssuerError> {
        let ok = if pattern == "*" {
            true
        } else if let Some(agency) = pattern.strip_suffix(":*") {
            !agency.is_empty()
                && agency
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        } else {
            OfficeId::new(pattern).is_ok()
        };
        if ok {
            Ok(Self(pattern.to_owned()))
        } else {
            Err(IssuerError::Claims(format!(
                "office pattern {pattern:?} must be `*`, `<agency>:*` or an office id"
            )))
        }
    }

    /// Whether `office` matches.
    pub fn matches(&self, office: &OfficeId) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => office.as_str().starts_with(prefix),
            None => office.as_str() == self.0,
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the trust file lets one issuer sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerLimits {
    /// Offices the issuer may sign for.
    pub offices: Vec<OfficePattern>,
    /// Roles it may grant.
    pub roles: Vec<Role>,
    /// Audiences it may sign for.
    pub audiences: Vec<Audience>,
    /// Longest lifetime (`exp - iat`) of its tokens.
    pub max_ttl: time::Duration,
}

impl IssuerLimits {
    /// No limit but the default lifetime cap: any office, role and audience (tests, and
    /// the site-wide issuer of a single-site deployment).
    pub fn any() -> Self {
        Self {
            offices: vec![OfficePattern("*".into())],
            roles: Role::ALL.to_vec(),
            audiences: Audience::ALL.to_vec(),
            max_ttl: DEFAULT_MAX_TTL,
        }
    }

    fn check(&self, issuer: &str, claims: &Claims, aud: Audience) -> Result<(), TokenError> {
        if !self.audiences.contains(&aud) {
            return Err(TokenError::AudienceNotAllowed {
                issuer: issuer.to_owned(),
                audience: aud,
            });
        }
        if !self.offices.iter().any(|p| p.matches(&claims.office)) {
            return Err(TokenError::OfficeNotAllowed {
                issuer: issuer.to_owned(),
                office: claims.office.to_string(),
            });
        }
        if let Some(role) = claims.roles.iter().find(|r| !self.roles.contains(r)) {
            return Err(TokenError::RoleNotAllowed {
                issuer: issuer.to_owned(),
                role: role.as_str(),
            });
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        let cap = self.max_ttl.whole_seconds();
        if lifetime > cap {
            return Err(TokenError::LifetimeTooLong {
                issuer: issuer.to_owned(),
                lifetime_secs: lifetime,
                cap_secs: cap,
            });
        }
        Ok(())
    }
}

/// Parses a lifetime such as `8h`, `30days` or `1year` (humantime syntax).
///
/// # Errors
/// A message naming the value when it is not a duration or is longer than [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<time::Duration, String> {
    let std = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 8h or 30days: {e}"))?;
    let ttl = time::Duration::try_from(std).unwrap_or(time::Duration::MAX);
    if ttl > MAX_TTL {
        return Err(format!(
            "{text:?} is longer than the longest token lifetime, 366 days"
        ));
    }
    Ok(ttl)
}

fn format_ttl(ttl: time::Duration) -> String {
    let secs = ttl.whole_seconds();
    if secs % 86_400 == 0 {
        format!("{}days", secs / 86_400)
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

fn valid_key_id(key_id: &str) -> bool {
    !key_id.is_empty()
        && key_id.len() <= 64
        && key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:#.".contains(c))
}

impl IssuerKey {
    /// Generates a fresh issuer key.
    ///
    /// # Errors
    /// [`IssuerError::Claims`] for a key id that is not 1-64 chars of `[A-Za-z0-9_:#.-]`,
    /// [`IssuerError::Invalid`] when the random source fails.
    pub fn generate(key_id: &str) -> Result<Self, IssuerError> {
        if !valid_key_id(key_id) {
            return Err(IssuerError::Claims(format!(
                "issuer key id {key_id:?} must be 1-64 chars of [A-Za-z0-9_:#.-]"
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| IssuerError::Invalid {
            path: PathBuf::from("<random>"),
            reason: e.to_string(),
        })?;
        Ok(Self {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// An issuer key from a fixed seed (tests, simulations).
    pub fn from_seed(key_id: &str, seed: [u8; 32]) -> Self {
        Self {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Loads an issuer key file (`key_id`, `secret_key` base64 of the 32-byte seed).
    ///
    /// # Errors
    /// [`IssuerError::Io`] or [`IssuerError::Invalid`].
    pub fn load(path: &Path) -> Result<Self, IssuerError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| IssuerError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let invalid = |reason: String| IssuerError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: IssuerKeyFile =
            toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        let seed = Zeroizing::new(
            B64.decode(file.secret_key.as_bytes())
                .map_err(|e| invalid(format!("secret_key is not base64: {e}")))?,
        );
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| invalid("secret_key must be 32 bytes".into()))?;
        Ok(Self {
            key_id: file.key_id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key file with mode 0600; refuses to overwrite.
    ///
    /// # Errors
    /// [`IssuerError::Io`] when the file exists or cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), IssuerError> {
        let file = IssuerKeyFile {
            key_id: self.key_id.clone(),
            secret_key: Zeroizing::new(B64.encode(self.key.to_bytes())),
        };
        let text = Zeroizing::new(toml::to_string(&file).map_err(|e| IssuerError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?);
        let io = |source| IssuerError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)?;
        out.sync_all().map_err(io)
    }

    /// The public half, for a trust file.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.key.verifying_key().to_bytes())
    }

    /// Issues a token for `audience` and `office`/`actor` with `roles`, valid from `now`
    /// for `ttl`.
    ///
    /// # Errors
    /// [`IssuerError::Claims`] when the actor is empty or longer than 128 chars, no role is
    /// given, or the ttl is not positive or longer than [`MAX_TTL`].
    pub fn issue(
        &self,
        audience: Audience,
        office: &OfficeId,
        actor: &str,
        roles: &[Role],
        now: OffsetDateTime,
        ttl: time::Duration,
    ) -> Result<String, IssuerError> {
        if actor.trim().is_empty() || actor.chars().count() > 128 {
            return Err(IssuerError::Claims("actor must be 1-128 characters".into()));
        }
        if roles.is_empty() {
            return Err(IssuerError::Claims("at least one role is required".into()));
        }
        if ttl <= time::Duration::ZERO {
            return Err(IssuerError::Claims("ttl must be positive".into()));
        }
        if ttl > MAX_TTL {
            return Err(IssuerError::Claims(
                "ttl must be at most 366 days (the trust file may cap it lower)".into(),
            ));
        }
        let mut jti = [0u8; 12];
        getrandom::fill(&mut jti)
            .map_err(|e| IssuerError::Claims(format!("random source failed: {e}")))?;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let claims = Claims {
            iss: self.key_id.clone(),
            aud: Some(audience),
            office: office.clone(),
            actor: actor.to_owned(),
            roles,
            iat: now.unix_timestamp(),
            exp: (now + ttl).unix_timestamp(),
            jti: hex::encode(jti),
        };
        let body = serde_json::to_vec(&claims).map_err(|e| IssuerError::Claims(e.to_string()))?;
        let signed_part = format!("{PREFIX}.{}", B64URL.encode(body));
        let signature = self.key.sign(signed_part.as_bytes());
        Ok(format!(
            "{signed_part}.{}",
            B64URL.encode(signature.to_bytes())
        ))
    }
}

/// The issuer keys a verifier trusts, by key id, each with its limits.
#[derive(Debug, Clone, Default)]
pub struct TrustedIssuers {
    keys: BTreeMap<String, (VerifyingKey, IssuerLimits)>,
}

impl TrustedIssuers {
    /// Trusts `key` without limits ([`IssuerLimits::any`]).
    pub fn with(self, key: &IssuerKey) -> Self {
        self.with_limits(key, IssuerLimits::any())
    }

    /// Trusts `key` within `limits`.
    pub fn with_limits(mut self, key: &IssuerKey, limits: IssuerLimits) -> Self {
        self.keys
            .insert(key.key_id.clone(), (key.key.verifying_key(), limits));
        self
    }

    /// Loads a trust file: per `[[issuer]]` its `key_id`, `public_key` (base64), the
    /// `offices` patterns and `roles` it may sign for (both required), and optionally the
    /// `audiences` it may sign for (default all) and `max_ttl` (default 30 days).
    ///
    /// # Errors
    /// [`IssuerError::Io`] or [`IssuerError::Invalid`].
    pub fn load(path: &Path) -> Result<Self, IssuerError> {
        let text = std::fs::read_to_string(path).map_err(|source| IssuerError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| IssuerError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: TrustFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut keys = BTreeMap::new();
        for issuer in file.issuer {
            let raw = B64
                .decode(issuer.public_key.as_bytes())
                .map_err(|e| format!("issuer {}: public_key is not base64: {e}", issuer.key_id))?;
            let raw: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| format!("issuer {}: public_key must be 32 bytes", issuer.key_id))?;
            let key = VerifyingKey::from_bytes(&raw)
                .map_err(|_| format!("issuer {}: not an Ed25519 public key", issuer.key_id))?;
            let id = &issuer.key_id;
            let offices = issuer
                .offices
                .ok_or_else(|| format!("issuer {id}: offices is required (patterns such as \"customs:*\", or [\"*\"])"))?
                .iter()
                .map(|p| OfficePattern::parse(p).map_err(|e| format!("issuer {id}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let roles = issuer.roles.ok_or_else(|| {
                format!("issuer {id}: roles is required (clerk, reader, admin, operator)")
            })?;
            let max_ttl = match &issuer.max_ttl {
                None => DEFAULT_MAX_TTL,
                Some(text) => parse_ttl(text).map_err(|e| format!("issuer {id}: max_ttl {e}"))?,
            };
            let limits = IssuerLimits {
                offices,
                roles,
                audiences: issuer.audiences.unwrap_or_else(|| Audience::ALL.to_vec()),
                max_ttl,
            };
            if keys.insert(issuer.key_id.clone(), (key, limits)).is_some() {
                return Err(format!("issuer {} listed twice", issuer.key_id));
            }
        }
        Ok(Self { keys })
    }

    /// The trust file text for these keys.
    pub fn to_toml(&self) -> String {
        let file = TrustFile {
            issuer: self
                .keys
                .iter()
                .map(|(key_id, (key, limits))| TrustedIssuer {
                    key_id: key_id.clone(),
                    public_key: B64.encode(key.to_bytes()),
                    offices: Some(limits.offices.iter().map(|p| p.0.clone()).collect()),
                    roles: Some(limits.roles.clone()),
                    audiences: Some(limits.audiences.clone()),
                    max_ttl: Some(format_ttl(limits.max_ttl)),
                })
                .collect(),
        };
        toml::to_string_pretty(&file).unwrap_or_default()
    }

    /// Verifies a token for a service of `audience` at `now` and returns its claims: the
    /// signature of a trusted issuer, the audience, the issuer's limits and the validity.
    ///
    /// # Errors
    /// [`TokenError`] naming why the token is refused.
    pub fn verify(
        &self,
        token: &str,
        audience: Audience,
        now: OffsetDateTime,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(prefix), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected cb1.<claims>.<signature>"));
        };
        if prefix != PREFIX {
            return Err(TokenError::Malformed("unknown token version"));
        }
        let json = B64URL
            .decode(body)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&json)
            .map_err(|_| TokenError::Malformed("claims are not valid"))?;
        let (key, limits) = self
            .keys
            .get(&claims.iss)
            .ok_or_else(|| TokenError::UnknownIssuer(claims.iss.clone()))?;
        let signature = B64URL
            .decode(signature)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let signature = ed25519_dalek::Signature::from_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        key.verify_strict(format!("{PREFIX}.{body}").as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        // Only signed claims are judged below, so no refusal tells a forger anything.
        let aud = claims.aud.ok_or(TokenError::NoAudience(audience))?;
        if aud != audience {
            return Err(TokenError::WrongAudience {
                expected: audience,
                found: aud,
            });
        }
        limits.check(&claims.iss, &claims, aud)?;
        let at = |secs: i64| {
            OffsetDateTime::from_unix_timestamp(secs)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| secs.to_string())
        };
        let now_secs = now.unix_timestamp();
        if now_secs >= claims.exp {
            return Err(TokenError::Expired(at(claims.exp)));
        }
        // Allow a minute of clock skew between issuer and verifier.
        if now_secs + 60 < claims.iat {
            return Err(TokenError::NotYetValid(at(claims.iat)));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    fn office() -> OfficeId {
        OfficeId::new("customs:ningbo").expect("valid")
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let issuer = IssuerKey::from_seed("ops#1", [5; 32]);
        let token = issuer
            .issue(
                Audience::Agency,
                &office(),
                "li.wei",
                &[Role::Reader, Role::Clerk],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        let claims = TrustedIssuers::default()
            .with(&issuer)
            .verify(&token, Audience::Agency, NOW)
            .expect("valid");
        assert_eq!(claims.office, office());
        assert_eq!(claims.roles, vec![Role::Clerk, Role::Reader]);
        assert!(claims.has(Role::Reader) && !claims.has(Role::Admin));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let issuer = IssuerKey::from_seed("ops#1", [5; 32]);
        let other = IssuerKey::from_seed("ops#1", [6; 32]);
        let trust = TrustedIssuers::default().with(&issuer);
        let token = issuer
            .issue(
                Audience::Agency,
                &office(),
                "a",
                &[Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        assert!(matches!(
            trust.verify(&token, Audience::Agency, NOW + time::Duration::hours(2)),
            Err(TokenError::Expired(_))
        ));
        let forged = other
            .issue(
                Audience::Agency,
                &office(),
                "a",
                &[Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        assert_eq!(
            trust.verify(&forged, Audience::Agency, NOW),
            Err(TokenError::BadSignature)
        );
        let stranger = IssuerKey::from_seed("elsewhere", [7; 32]);
        let foreign = stranger
            .issue(
                Audience::Agency,
                &office(),
                "a",
                &[Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        assert_eq!(
            trust.verify(&foreign, Audience::Agency, NOW),
            Err(TokenError::UnknownIssuer("elsewhere".into()))
        );
        // Changing the claims (e.g. the office) breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: Claims =
            serde_json::from_slice(&B64URL.decode(&parts[1]).expect("b64")).expect("json");
        claims.office = OfficeId::new("court:x").expect("valid");
        parts[1] = B64URL.encode(serde_json::to_vec(&claims).expect("json"));
        assert_eq!(
            trust.verify(&parts.join("."), Audience::Agency, NOW),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "cb1", "cb1.x.y", "xx.yy.zz", "cb1..", &"a".repeat(5000)] {
            assert!(
                matches!(
                    trust.verify(junk, Audience::Agency, NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn trust_files_round_trip_and_keys_save_privately() {
        let issuer = IssuerKey::from_seed("ops#1", [5; 32]);
        let trust = TrustedIssuers::default().with(&issuer);
        let parsed = TrustedIssuers::parse(&trust.to_toml()).expect("parse");
        let token = issuer
            .issue(
                Audience::Agency,
                &office(),
                "a",
                &[Role::Admin],
                NOW,
                time::Duration::minutes(5),
            )
            .expect("issue");
        assert!(parsed.verify(&token, Audience::Agency, NOW).is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("issuer.key");
        issuer.save(&path).expect("save");
        assert_eq!(
            IssuerKey::load(&path).expect("load").public_key_base64(),
            issuer.public_key_base64()
        );
    }

    /// Signs `claims` as `issuer` would, so a test can build what `issue` refuses to.
    fn sign(issuer: &IssuerKey, claims: &Claims) -> String {
        let body = serde_json::to_vec(claims).expect("json");
        let signed_part = format!("{PREFIX}.{}", B64URL.encode(body));
        let signature = issuer.key.sign(signed_part.as_bytes());
        format!("{signed_part}.{}", B64URL.encode(signature.to_bytes()))
    }

    #[test]
    fn a_token_is_refused_by_a_service_of_another_audience_and_one_without_audience_everywhere() {
        let issuer = IssuerKey::from_seed("ops#1", [5; 32]);
        let trust = TrustedIssuers::default().with(&issuer);
        let clerk = issuer
            .issue(
                Audience::Agency,
                &office(),
                "a",
                &[Role::Clerk, Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        for other in [Audience::Gateway, Audience::Monitor] {
            assert_eq!(
                trust.verify(&clerk, other, NOW),
                Err(TokenError::WrongAudience {
                    expected: other,
                    found: Audience::Agency
                })
            );
        }
        // A validly signed token of the old format, without `aud`.
        let mut claims = trust.verify(&clerk, Audience::Agency, NOW).expect("valid");
        claims.aud = None;
        let old = sign(&issuer, &claims);
        assert!(
            !old.is_empty()
                && !serde_json::to_string(&claims)
                    .expect("json")
                    .contains("aud")
        );
        for audience in Audience::ALL {
            assert_eq!(
                trust.verify(&old, audience, NOW),
                Err(TokenError::NoAudience(audience))
            );
        }
    }

    #[test]
    fn the_trust_file_limits_an_issuer_to_its_offices_roles_audiences_and_lifetime() {
        let issuer = IssuerKey::from_seed("customs-hr", [8; 32]);
        let file = format!(
            "[[issuer]]\nkey_id = \"customs-hr\"\npublic_key = \"{}\"\noffices = [\"customs:*\"]\nroles = [\"clerk\", \"reader\"]\naudiences = [\"agency\"]\nmax_ttl = \"8h\"\n",
            issuer.public_key_base64()
        );
        let trust = TrustedIssuers::parse(&file).expect("parse");
        let issue = |office_id: &str, roles: &[Role], audience: Audience, ttl| {
            issuer
                .issue(
                    audience,
                    &OfficeId::new(office_id).expect("valid"),
                    "a",
                    roles,
                    NOW,
                    ttl,
                )
                .expect("issue")
        };
        let hour = time::Duration::hours(1);
        let ok = issue("customs:ningbo", &[Role::Clerk], Audience::Agency, hour);
        assert!(trust.verify(&ok, Audience::Agency, NOW).is_ok());
        let court = issue("court:hangzhou", &[Role::Clerk], Audience::Agency, hour);
        assert_eq!(
            trust.verify(&court, Audience::Agency, NOW),
            Err(TokenError::OfficeNotAllowed {
                issuer: "customs-hr".into(),
                office: "court:hangzhou".into()
            })
        );
        let admin = issue(
            "customs:ningbo",
            &[Role::Clerk, Role::Admin],
            Audience::Agency,
            hour,
        );
        assert_eq!(
            trust.verify(&admin, Audience::Agency, NOW),
            Err(TokenError::RoleNotAllowed {
                issuer: "customs-hr".into(),
                role: "admin"
            })
        );
        let gateway = issue("customs:ningbo", &[Role::Reader], Audience::Gateway, hour);
        assert_eq!(
            trust.verify(&gateway, Audience::Gateway, NOW),
            Err(TokenError::AudienceNotAllowed {
                issuer: "customs-hr".into(),
                audience: Audience::Gateway
            })
        );
        let long = issue(
            "customs:ningbo",
            &[Role::Clerk],
            Audience::Agency,
            time::Duration::hours(9),
        );
        assert_eq!(
            trust.verify(&long, Audience::Agency, NOW),
            Err(TokenError::LifetimeTooLong {
                issuer: "customs-hr".into(),
                lifetime_secs: 9 * 3600,
                cap_secs: 8 * 3600
            })
        );
        // An entry without limits is an error naming the issuer, not "anything goes".
        let bare = format!(
            "[[issuer]]\nkey_id = \"x\"\npublic_key = \"{}\"\n",
            issuer.public_key_base64()
        );
        let error = TrustedIssuers::parse(&bare).expect_err("refused");
        assert!(error.contains("issuer x: offices is required"), "{error}");
        let bad = file.replace("customs:*", "customs*");
        let error = TrustedIssuers::parse(&bad).expect_err("refused");
        assert!(error.contains("office pattern \"customs*\""), "{error}");
    }

    #[test]
    fn an_absurd_ttl_is_a_clear_error_not_a_panic() {
        let issuer = IssuerKey::from_seed("ops#1", [5; 32]);
        let error = parse_ttl("100000years").expect_err("refused");
        assert!(
            error.contains("longer than the longest token lifetime"),
            "{error}"
        );
        assert!(parse_ttl("soon").is_err());
        assert_eq!(parse_ttl("8h"), Ok(time::Duration::hours(8)));
        let refused = issuer.issue(
            Audience::Agency,
            &office(),
            "a",
            &[Role::Clerk],
            NOW,
            time::Duration::MAX,
        );
        assert!(
            matches!(&refused, Err(IssuerError::Claims(m)) if m.contains("at most 366 days")),
            "{refused:?}"
        );
    }
}
