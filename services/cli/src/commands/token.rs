//! `casebus token issue` and `casebus issuer generate`: bearer tokens for gRPC callers,
//! signed with an issuer key, and the issuer keys with the trust files services verify
//! tokens against.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use casebus_integrity::token::{IssuerKey, Role, TrustedIssuers};
use casebus_proto::OfficeId;

use crate::context::Ctx;
use crate::error::{CliError, Outcome};
use crate::times::rfc3339;

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Clerk => "clerk",
        Role::Reader => "reader",
        Role::Admin => "admin",
        Role::Operator => "operator",
    }
}

/// `casebus token issue`.
pub fn issue(
    ctx: &Ctx,
    issuer_key: &Path,
    office: &OfficeId,
    actor: &str,
    roles: &[Role],
    ttl: Duration,
) -> Result<Outcome, CliError> {
    let key = IssuerKey::load(issuer_key).map_err(CliError::from_source)?;
    let ttl = time::Duration::try_from(ttl).map_err(|_| CliError::usage("--ttl is too long"))?;
    let now = OffsetDateTime::now_utc();
    let token = key
        .issue(office, actor, roles, now, ttl)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "token": token,
            "issuer": key.key_id(),
            "office": office.as_str(),
            "actor": actor,
            "roles": roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>(),
            "issued_at": rfc3339(now),
            "expires_at": rfc3339(now + ttl),
        }))?;
    } else {
        ctx.out.line(&token)?;
        ctx.out.note(format!(
            "token for {actor} at {office}, roles {}, valid until {} (issuer {})",
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
) -> Result<Outcome, CliError> {
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
        let text = trusted.with(&key).to_toml();
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
