//! `casebus token issue` and `casebus issuer generate`: bearer tokens for gRPC callers,
//! signed with an issuer key, and the issuer keys with the trust files services verify
//! tokens against.

use std::path::Path;

use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use casebus_integrity::token::{
    Audience, IssuerKey, IssuerLimits, OfficePattern, Role, TrustedIssuers,
};
use casebus_proto::OfficeId;

use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::times::rfc3339;

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// What `casebus issuer generate --trust-file` lets the new issuer sign.
#[derive(Debug)]
pub struct Limits {
    /// Office patterns (required with a trust file).
    pub offices: Vec<OfficePattern>,
    /// Roles it may grant; empty means all.
    pub roles: Vec<Role>,
    /// Audiences it may sign for; empty means all.
    pub audiences: Vec<Audience>,
    /// Longest token lifetime.
    pub max_ttl: time::Duration,
}

/// `casebus token issue`.
pub fn issue(
    ctx: &Ctx,
    issuer_key: &Path,
    audience: Audience,
    office: &OfficeId,
    actor: &str,
    roles: &[Role],
    ttl: time::Duration,
) -> Result<Outcome, CliError> {
    let key = IssuerKey::load(issuer_key).map_err(CliError::from_source)?;
    let now = OffsetDateTime::now_utc();
    let token = key
        .issue(audience, office, actor, roles, now, ttl)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "token": token,
            "issuer": key.key_id(),
            "audience": audience.as_str(),
            "office": office.as_str(),
            "actor": actor,
            "roles": roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>(),
            "issued_at": rfc3339(now),
            "expires_at": rfc3339(now + ttl),
        }))?;
    } else {
        ctx.out.line(&token)?;
        ctx.out.note(format!(
            "token for {actor} at {office}, audience {audience}, roles {}, valid until {} (issuer {})",
            roles
                .iter()
                .map(|r| role_name(*r))
                .collect::<Vec<_>>()
                .join(","),
            rfc3339(now + ttl),
            key.key_id()
        ));
    }
    Ok(Outcome::Ok)
}

/// Just the key ids of a trust file, to refuse adding one twice.
#[derive(Deserialize, Default)]
struct TrustIds {
    #[serde(default)]
    issuer: Vec<TrustId>,
}

#[derive(Deserialize)]
struct TrustId {
    key_id: String,
}

/// `casebus issuer generate`.
pub fn generate_issuer(
    ctx: &Ctx,
    key_id: &str,
    out: &Path,
    trust_file: Option<&Path>,
    limits: Limits,
) -> Result<Outcome, CliError> {
    if trust_file.is_some() && limits.offices.is_empty() {
        return Err(CliError::usage(
            "--trust-file needs --offices: the office patterns the issuer may sign for (e.g. customs:* or *)",
        ));
    }
    let limits = IssuerLimits {
        offices: limits.offices,
        roles: if limits.roles.is_empty() {
            Role::ALL.to_vec()
        } else {
            limits.roles
        },
        audiences: if limits.audiences.is_empty() {
            Audience::ALL.to_vec()
        } else {
            limits.audiences
        },
        max_ttl: limits.max_ttl,
    };
    if out.exists() {
        return Err(CliError::usage(format!(
            "{} exists already; refusing to overwrite it",
            out.display()
        )));
    }
    let key = IssuerKey::generate(key_id).map_err(|e| CliError::usage(format!("--key-id: {e}")))?;
    // Check the trust file before writing anything.
    let trust = match trust_file {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::caused(format!("cannot read {}", path.display()), e))?;
            let ids: TrustIds = toml::from_str(&text).map_err(|e| {
                CliError::usage(format!("--trust-file {}: {}", path.display(), e.message()))
            })?;
            if ids.issuer.iter().any(|i| i.key_id == key_id) {
                return Err(CliError::usage(format!(
                    "--key-id {key_id} is in {} already",
                    path.display()
                )));
            }
            Some((
                path,
                TrustedIssuers::load(path).map_err(CliError::from_source)?,
            ))
        }
        Some(path) => Some((path, TrustedIssuers::default())),
        None => None,
    };
    key.save(out).map_err(CliError::from_source)?;
    if let Some((path, trusted)) = trust {
        let text = trusted.with_limits(&key, limits).to_toml();
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| CliError::caused(format!("cannot write {}", path.display()), e))?;
    }
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "key_id": key.key_id(),
            "public_key": key.public_key_base64(),
            "secret_key_file": out.display().to_string(),
            "trust_file": trust_file.map(|p| p.display().to_string()),
        }))?;
    } else {
        ctx.out.line(format!(
            "generated issuer key {} in {} (mode 0600); public key {}",
            key.key_id(),
            out.display(),
            key.public_key_base64()
        ))?;
        if let Some(path) = trust_file {
            ctx.out.line(format!("trusted it in {}", path.display()))?;
        }
    }
    Ok(Outcome::Ok)
}
