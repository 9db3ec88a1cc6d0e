//! Bearer tokens for gRPC callers: claims (office, actor, roles, validity) signed with an
//! issuer's Ed25519 key, and their verification against the trusted issuer keys.
//!
//! Format: `cb1.<claims>.<signature>`, both parts unpadded base64url; the signature
//! covers the ASCII bytes `cb1.<claims>`. Claims are JSON with fixed field order.

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
struct TrustedIssuer {
    key_id: String,
    public_key: String,
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

    /// Issues a token for `office`/`actor` with `roles`, valid from `now` for `ttl`.
    ///
    /// # Errors
    /// [`IssuerError::Claims`] when the actor is empty or longer than 128 chars, no role is
    /// given, or the ttl is not positive.
    pub fn issue(
        &self,
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
        let mut jti = [0u8; 12];
        getrandom::fill(&mut jti)
            .map_err(|e| IssuerError::Claims(format!("random source failed: {e}")))?;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let claims = Claims {
            iss: self.key_id.clone(),
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

/// The issuer keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedIssuers {
    keys: BTreeMap<String, VerifyingKey>,
}

impl TrustedIssuers {
    /// Trusts `key`.
    pub fn with(mut self, key: &IssuerKey) -> Self {
        self.keys
            .insert(key.key_id.clone(), key.key.verifying_key());
        self
    }

    /// Loads a trust file: `[[issuer]] key_id = "...", public_key = "<base64>"`.
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
            if keys.insert(issuer.key_id.clone(), key).is_some() {
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
                .map(|(key_id, key)| TrustedIssuer {
                    key_id: key_id.clone(),
                    public_key: B64.encode(key.to_bytes()),
                })
                .collect(),
        };
        toml::to_string_pretty(&file).unwrap_or_default()
    }

    /// Verifies a token at `now` and returns its claims.
    ///
    /// # Errors
    /// [`TokenError`] naming why the token is refused.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, TokenError> {
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
        let key = self
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
                &office(),
                "li.wei",
                &[Role::Reader, Role::Clerk],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        let claims = TrustedIssuers::default()
            .with(&issuer)
            .verify(&token, NOW)
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
                &office(),
                "a",
                &[Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        assert!(matches!(
            trust.verify(&token, NOW + time::Duration::hours(2)),
            Err(TokenError::Expired(_))
        ));
        let forged = other
            .issue(
                &office(),
                "a",
                &[Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        assert_eq!(trust.verify(&forged, NOW), Err(TokenError::BadSignature));
        let stranger = IssuerKey::from_seed("elsewhere", [7; 32]);
        let foreign = stranger
            .issue(
                &office(),
                "a",
                &[Role::Reader],
                NOW,
                time::Duration::hours(1),
            )
            .expect("issue");
        assert_eq!(
            trust.verify(&foreign, NOW),
            Err(TokenError::UnknownIssuer("elsewhere".into()))
        );
        // Changing the claims (e.g. the office) breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: Claims =
            serde_json::from_slice(&B64URL.decode(&parts[1]).expect("b64")).expect("json");
        claims.office = OfficeId::new("court:x").expect("valid");
        parts[1] = B64URL.encode(serde_json::to_vec(&claims).expect("json"));
        assert_eq!(
            trust.verify(&parts.join("."), NOW),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "cb1", "cb1.x.y", "xx.yy.zz", "cb1..", &"a".repeat(5000)] {
            assert!(
                matches!(trust.verify(junk, NOW), Err(TokenError::Malformed(_))),
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
                &office(),
                "a",
                &[Role::Admin],
                NOW,
                time::Duration::minutes(5),
            )
            .expect("issue");
        assert!(parsed.verify(&token, NOW).is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("issuer.key");
        issuer.save(&path).expect("save");
        assert_eq!(
            IssuerKey::load(&path).expect("load").public_key_base64(),
            issuer.public_key_base64()
        );
    }
}
