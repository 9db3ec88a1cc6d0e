//! `casebus keys generate|register|rotate|list`: office signing keys and the office
//! registry file. Secret key files are written with mode 0600 and never overwritten;
//! the registry is rewritten atomically.
//!
//! Roll a key out by registering it everywhere first and signing with it afterwards: a
//! consumer whose registry lacks the key dead-letters the events signed with it.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use casebus_integrity::{KeyEntry, OfficeEntry, OfficeRegistry, OfficeSigner};
use casebus_proto::OfficeId;

use crate::commands::export::write_new;
use crate::context::{Ctx, load_registry};
use crate::error::{CliError, Outcome};
use crate::output::table;
use crate::times::{rfc3339, short, short_or_dash};

/// How long old keys stay valid after a rotation unless told otherwise: time to roll
/// the registry out to every service.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);

/// The public half of an office key, as written beside the secret key file.
#[derive(Debug, Serialize, Deserialize)]
struct PublicKeyFile {
    key_id: String,
    office_id: String,
    public_key: String,
}

fn public_path(secret: &Path) -> std::path::PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    std::path::PathBuf::from(name)
}

/// Generates a key, writes the secret file (0600) and the `.pub` file.
fn generate_files(office: &OfficeId, label: &str, out: &Path) -> Result<OfficeSigner, CliError> {
    let signer = OfficeSigner::generate(office.clone(), label)
        .map_err(|e| CliError::usage(format!("--label: {e}")))?;
    let public = public_path(out);
    if out.exists() {
        return Err(CliError::usage(format!(
            "{} exists already; refusing to overwrite it",
            out.display()
        )));
    }
    if public.exists() {
        return Err(CliError::usage(format!(
            "{} exists already; refusing to overwrite it",
            public.display()
        )));
    }
    signer.save(out).map_err(CliError::from_source)?;
    let text = toml::to_string(&PublicKeyFile {
        key_id: signer.key_id().to_owned(),
        office_id: office.to_string(),
        public_key: B64.encode(signer.public_key()),
    })
    .map_err(|e| CliError::caused("rendering the public key file failed", e))?;
    write_new(&public, text.as_bytes())?;
    Ok(signer)
}

/// `casebus keys generate`.
pub fn generate(
    ctx: &Ctx,
    office: &OfficeId,
    label: &str,
    out: &Path,
) -> Result<Outcome, CliError> {
    let signer = generate_files(office, label, out)?;
    let public = public_path(out);
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "key_id": signer.key_id(),
            "office": office.as_str(),
            "public_key": B64.encode(signer.public_key()),
            "secret_key_file": out.display().to_string(),
            "public_key_file": public.display().to_string(),
        }))?;
    } else {
        ctx.out.line(format!(
            "generated key {} for {office}\n  secret key: {} (mode 0600; keep it on the office's service only)\n  public key: {} ({})",
            signer.key_id(),
            out.display(),
            public.display(),
            B64.encode(signer.public_key())
        ))?;
        ctx.out.note(format!(
            "next: casebus keys register --registry <offices.toml> --office {office} --public-key-from {}",
            public.display()
        ));
    }
    Ok(Outcome::Ok)
}

/// Reads a public key from a `.pub` file or a secret key file: (key id, office, base64).
fn read_public_key(path: &Path) -> Result<(String, OfficeId, String), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::caused(format!("cannot read {}", path.display()), e))?;
    if let Ok(public) = toml::from_str::<PublicKeyFile>(&text) {
        let office = OfficeId::new(&public.office_id)
            .map_err(|e| CliError::usage(format!("--public-key-from {}: {e}", path.display())))?;
        return Ok((public.key_id, office, public.public_key));
    }
    let signer = OfficeSigner::load(path).map_err(|e| {
        CliError::usage(format!(
            "--public-key-from {}: neither a public key file nor a key file ({e})",
            path.display()
        ))
    })?;
    Ok((
        signer.key_id().to_owned(),
        signer.office().clone(),
        B64.encode(signer.public_key()),
    ))
}

/// The registry at `path`, or an empty one when the file does not exist yet.
fn registry_or_new(path: &Path) -> Result<OfficeRegistry, CliError> {
    if path.exists() {
        load_registry(path)
    } else {
        Ok(OfficeRegistry::default())
    }
}

fn add_key(
    registry: &mut OfficeRegistry,
    office: &OfficeId,
    name: Option<String>,
    key: KeyEntry,
) -> Result<(), CliError> {
    let result = if registry.contains(office) {
        registry.add_key(office, key)
    } else {
        registry.insert_office(OfficeEntry {
            id: office.clone(),
            name: name.unwrap_or_default(),
            keys: vec![key],
            encryption_keys: Vec::new(),
        })
    };
    result.map_err(|e| CliError::refused(e.to_string()))
}

/// `casebus keys register`.
pub fn register(
    ctx: &Ctx,
    office: &OfficeId,
    public_key_from: &Path,
    valid_from: Option<OffsetDateTime>,
    name: Option<String>,
) -> Result<Outcome, CliError> {
    let path = ctx.registry_path("to name the registry file to change")?;
    let (key_id, key_office, public_key) = read_public_key(public_key_from)?;
    if &key_office != office {
        return Err(CliError::usage(format!(
            "--public-key-from holds key {key_id} of office {key_office}, not of --office {office}"
        )));
    }
    let mut registry = registry_or_new(path)?;
    let valid_from = valid_from.unwrap_or_else(OffsetDateTime::now_utc);
    add_key(
        &mut registry,
        office,
        name,
        KeyEntry {
            key_id: key_id.clone(),
            public_key,
            valid_from,
            valid_until: None,
        },
    )?;
    registry.save(path).map_err(CliError::from_source)?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "registry": path.display().to_string(),
            "office": office.as_str(),
            "key_id": key_id,
            "valid_from": rfc3339(valid_from),
        }))?;
    } else {
        ctx.out.line(format!(
            "registered key {key_id} of {office} in {}, valid from {}",
            path.display(),
            rfc3339(valid_from)
        ))?;
        ctx.out
            .note("roll the registry out to every service before the office signs with the key");
    }
    Ok(Outcome::Ok)
}

/// `casebus keys rotate`.
pub fn rotate(
    ctx: &Ctx,
    office: &OfficeId,
    label: &str,
    out: &Path,
    valid_from: Option<OffsetDateTime>,
    retire_at: Option<OffsetDateTime>,
) -> Result<Outcome, CliError> {
    let path = ctx.registry_path("to name the registry file to change")?;
    let mut registry = load_registry(path)?;
    let Some(entry) = registry.office(office).cloned() else {
        return Err(CliError::refused(format!(
            "office {office} is not in {}; register its first key with `casebus keys register`",
            path.display()
        )));
    };
    let valid_from = valid_from.unwrap_or_else(OffsetDateTime::now_utc);
    let retire_at = retire_at.unwrap_or(valid_from + DEFAULT_OVERLAP);
    if retire_at < valid_from {
        return Err(CliError::usage(
            "--retire-at is before the new key's --valid-from: the office would have no valid key in between",
        ));
    }
    let new_key_id = format!("{office}#{label}");
    if entry.keys.iter().any(|k| k.key_id == new_key_id) {
        return Err(CliError::usage(format!(
            "--label: key {new_key_id} is registered already"
        )));
    }
    // Keys still open-ended or valid beyond the retirement time get retired.
    let retiring: Vec<String> = entry
        .keys
        .iter()
        .filter(|k| k.valid_until.is_none_or(|until| until > retire_at))
        .filter(|k| k.valid_from < retire_at)
        .map(|k| k.key_id.clone())
        .collect();
    // Check the whole change on a copy before writing any file.
    let mut next = registry.clone();
    let probe = OfficeSigner::generate(office.clone(), label)
        .map_err(|e| CliError::usage(format!("--label: {e}")))?;
    add_key(&mut next, office, None, probe.key_entry(valid_from))?;
    for key_id in &retiring {
        next.retire_key(key_id, retire_at)
            .map_err(|e| CliError::refused(e.to_string()))?;
    }

    let signer = generate_files(office, label, out)?;
    add_key(&mut registry, office, None, signer.key_entry(valid_from))?;
    for key_id in &retiring {
        registry
            .retire_key(key_id, retire_at)
            .map_err(|e| CliError::refused(e.to_string()))?;
    }
    registry.save(path).map_err(CliError::from_source)?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "registry": path.display().to_string(),
            "office": office.as_str(),
            "new_key_id": signer.key_id(),
            "valid_from": rfc3339(valid_from),
            "retired": retiring,
            "retire_at": rfc3339(retire_at),
            "secret_key_file": out.display().to_string(),
        }))?;
    } else {
        ctx.out.line(format!(
            "rotated {office}: new key {} valid from {} (secret key in {}); {} retired at {}",
            signer.key_id(),
            rfc3339(valid_from),
            out.display(),
            if retiring.is_empty() {
                "no old key".to_owned()
            } else {
                retiring.join(", ")
            },
            rfc3339(retire_at)
        ))?;
        ctx.out.note(
            "roll the registry out to every service now; switch the office's service to the new key file before the retirement time",
        );
    }
    Ok(Outcome::Ok)
}

/// `casebus keys list`.
pub fn list(ctx: &Ctx) -> Result<Outcome, CliError> {
    let registry = ctx.registry("to list its keys")?;
    let now = OffsetDateTime::now_utc();
    let state = |k: &KeyEntry| {
        if k.valid_at(now) {
            "valid"
        } else if k.valid_from > now {
            "future"
        } else {
            "retired"
        }
    };
    if ctx.out.is_json() {
        let offices: Vec<_> = registry
            .offices()
            .map(|o| {
                json!({
                    "office": o.id.as_str(),
                    "name": o.name,
                    "keys": o.keys.iter().map(|k| json!({
                        "key_id": k.key_id,
                        "public_key": k.public_key,
                        "valid_from": rfc3339(k.valid_from),
                        "valid_until": k.valid_until.map(rfc3339),
                        "state": state(k),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        ctx.out.json_document(&json!({ "offices": offices }))?;
        return Ok(Outcome::Ok);
    }
    let mut t = table(&[
        "office",
        "name",
        "key id",
        "state",
        "valid from",
        "valid until",
        "public key",
    ]);
    for office in registry.offices() {
        if office.keys.is_empty() {
            t.add_row([
                office.id.to_string(),
                office.name.clone(),
                "(no key)".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for key in &office.keys {
            t.add_row([
                office.id.to_string(),
                office.name.clone(),
                key.key_id.clone(),
                state(key).to_owned(),
                short(key.valid_from),
                short_or_dash(key.valid_until),
                key.public_key.clone(),
            ]);
        }
    }
    ctx.out.table(&t)?;
    Ok(Outcome::Ok)
}
