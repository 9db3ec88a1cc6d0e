//! `casebus keys generate|register|rotate|list`: office keys and the office registry
//! file. An office has signing keys (Ed25519, `--kind signing`, the default) and
//! encryption keys (X25519, `--kind encryption`: what is sealed for the office is
//! wrapped for them). Secret key files are written with mode 0600 and never
//! overwritten; the registry is rewritten atomically. `generate --kind log|witness`
//! makes a transparency-log key instead (`casebus_runtime::tlog_keys`), which no
//! registry holds.
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

use casebus_integrity::seal::OpeningKey;
use casebus_integrity::{KeyEntry, OfficeEntry, OfficeRegistry, OfficeSigner};
use casebus_proto::OfficeId;
use casebus_runtime::tlog_keys::{self, LogKeyKind};

use crate::cli::{GenerateKind, KeyKind};

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
    /// `encryption` for an encryption key; absent for a signing key (files written
    /// before encryption keys existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
}

fn public_path(secret: &Path) -> std::path::PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    std::path::PathBuf::from(name)
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            Self::Signing => "signing",
            Self::Encryption => "encryption",
        }
    }

    fn from_file(kind: Option<&str>) -> Result<Self, String> {
        match kind {
            None | Some("signing") => Ok(Self::Signing),
            Some("encryption") => Ok(Self::Encryption),
            Some(other) => Err(format!("unknown key kind {other:?}")),
        }
    }
}

/// A freshly generated key of either kind.
enum Generated {
    Signing(OfficeSigner),
    Encryption(OpeningKey),
}

impl Generated {
    fn new(kind: KeyKind, office: &OfficeId, label: &str) -> Result<Self, CliError> {
        let bad = |e: String| CliError::usage(format!("--label: {e}"));
        Ok(match kind {
            KeyKind::Signing => Self::Signing(
                OfficeSigner::generate(office.clone(), label).map_err(|e| bad(e.to_string()))?,
            ),
            KeyKind::Encryption => Self::Encryption(
                OpeningKey::generate(office.clone(), label).map_err(|e| bad(e.to_string()))?,
            ),
        })
    }

    fn key_id(&self) -> &str {
        match self {
            Self::Signing(k) => k.key_id(),
            Self::Encryption(k) => k.key_id(),
        }
    }

    fn public_base64(&self) -> String {
        match self {
            Self::Signing(k) => B64.encode(k.public_key()),
            Self::Encryption(k) => k.public_base64(),
        }
    }

    fn save(&self, path: &Path) -> Result<(), CliError> {
        match self {
            Self::Signing(k) => k.save(path).map_err(CliError::from_source),
            Self::Encryption(k) => k.save(path).map_err(CliError::from_source),
        }
    }

    fn entry(&self, valid_from: OffsetDateTime) -> KeyEntry {
        KeyEntry {
            key_id: self.key_id().to_owned(),
            public_key: self.public_base64(),
            valid_from,
            valid_until: None,
        }
    }
}

/// Generates a key, writes the secret file (0600) and the `.pub` file.
fn generate_files(
    kind: KeyKind,
    office: &OfficeId,
    label: &str,
    out: &Path,
) -> Result<Generated, CliError> {
    let key = Generated::new(kind, office, label)?;
    let public = public_path(out);
    for file in [out, public.as_path()] {
        if file.exists() {
            return Err(CliError::usage(format!(
                "{} exists already; refusing to overwrite it",
                file.display()
            )));
        }
    }
    key.save(out)?;
    let text = toml::to_string(&PublicKeyFile {
        key_id: key.key_id().to_owned(),
        office_id: office.to_string(),
        public_key: key.public_base64(),
        kind: (kind == KeyKind::Encryption).then(|| kind.name().to_owned()),
    })
    .map_err(|e| CliError::caused("rendering the public key file failed", e))?;
    write_new(&public, text.as_bytes())?;
    Ok(key)
}

/// `casebus keys generate`.
pub fn generate(
    ctx: &Ctx,
    kind: KeyKind,
    office: &OfficeId,
    label: &str,
    out: &Path,
) -> Result<Outcome, CliError> {
    let key = generate_files(kind, office, label, out)?;
    let public = public_path(out);
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "kind": kind.name(),
            "key_id": key.key_id(),
            "office": office.as_str(),
            "public_key": key.public_base64(),
            "secret_key_file": out.display().to_string(),
            "public_key_file": public.display().to_string(),
        }))?;
    } else {
        ctx.out.line(format!(
            "generated {} key {} for {office}\n  secret key: {} (mode 0600; keep it on the office's service only)\n  public key: {} ({})",
            kind.name(),
            key.key_id(),
            out.display(),
            public.display(),
            key.public_base64()
        ))?;
        ctx.out.note(format!(
            "next: casebus keys register --registry <offices.toml> --office {office} --public-key-from {}",
            public.display()
        ));
    }
    Ok(Outcome::Ok)
}

/// `casebus keys generate` of any kind: an office key (with office and label) or a
/// transparency-log key (with a name).
pub fn generate_any(
    ctx: &Ctx,
    kind: GenerateKind,
    office: Option<OfficeId>,
    label: Option<String>,
    name: Option<String>,
    out: &Path,
) -> Result<Outcome, CliError> {
    let office_key = |kind| match (office.as_ref(), label.as_deref()) {
        (Some(office), Some(label)) => generate(ctx, kind, office, label, out),
        _ => Err(CliError::usage(
            "--office and --label are required for an office key",
        )),
    };
    let log_key = |kind, label| match name.as_deref() {
        Some(name) => generate_log_key(ctx, kind, label, name, out),
        None => Err(CliError::usage(
            "--name is required for a log, witness or operator key",
        )),
    };
    match kind {
        GenerateKind::Signing => office_key(KeyKind::Signing),
        GenerateKind::Encryption => office_key(KeyKind::Encryption),
        GenerateKind::Log => log_key(LogKeyKind::Log, "log"),
        GenerateKind::Witness => log_key(LogKeyKind::Witness, "witness"),
        // An operator's seal is an Ed25519 note signature, as a log key makes.
        GenerateKind::Operator => log_key(LogKeyKind::Log, "operator"),
    }
}

/// A log, witness or operator key: the secret file and its `.vkey`.
fn generate_log_key(
    ctx: &Ctx,
    kind: LogKeyKind,
    kind_name: &str,
    name: &str,
    out: &Path,
) -> Result<Outcome, CliError> {
    let verifier = tlog_keys::generate(kind, name, out).map_err(|e| match e {
        tlog_keys::LogKeyError::Invalid { reason, .. } => {
            CliError::usage(format!("--name: {reason}"))
        }
        tlog_keys::LogKeyError::Io { path, source }
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            CliError::usage(format!(
                "{} exists already; refusing to overwrite it",
                path.display()
            ))
        }
        other => CliError::from_source(other),
    })?;
    let vkey_path = tlog_keys::verifier_path(out);
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "kind": kind_name,
            "name": name,
            "key_id": format!("{:08x}", verifier.id()),
            "verifier_key": verifier.to_vkey(),
            "secret_key_file": out.display().to_string(),
            "verifier_key_file": vkey_path.display().to_string(),
        }))?;
    } else {
        ctx.out.line(format!(
            "generated {kind_name} key {name} (key id {:08x})\n  secret key: {} (mode 0600; not an office key)\n  verifier key: {} ({})",
            verifier.id(),
            out.display(),
            vkey_path.display(),
            verifier.to_vkey()
        ))?;
    }
    Ok(Outcome::Ok)
}

/// Reads a public key from a `.pub` file or a secret key file of either kind: (kind,
/// key id, office, base64).
fn read_public_key(path: &Path) -> Result<(KeyKind, String, OfficeId, String), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::caused(format!("cannot read {}", path.display()), e))?;
    let bad = |e: String| CliError::usage(format!("--public-key-from {}: {e}", path.display()));
    if let Ok(public) = toml::from_str::<PublicKeyFile>(&text) {
        let office = OfficeId::new(&public.office_id).map_err(|e| bad(e.to_string()))?;
        let kind = KeyKind::from_file(public.kind.as_deref()).map_err(bad)?;
        return Ok((kind, public.key_id, office, public.public_key));
    }
    if let Ok(key) = OpeningKey::load(path) {
        return Ok((
            KeyKind::Encryption,
            key.key_id().to_owned(),
            key.office().clone(),
            key.public_base64(),
        ));
    }
    let signer = OfficeSigner::load(path)
        .map_err(|e| bad(format!("neither a public key file nor a key file ({e})")))?;
    Ok((
        KeyKind::Signing,
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
    kind: KeyKind,
    key: KeyEntry,
) -> Result<(), CliError> {
    if !registry.contains(office) {
        registry
            .insert_office(OfficeEntry {
                id: office.clone(),
                name: name.unwrap_or_default(),
                keys: Vec::new(),
                encryption_keys: Vec::new(),
            })
            .map_err(|e| CliError::refused(e.to_string()))?;
    }
    match kind {
        KeyKind::Signing => registry.add_key(office, key),
        KeyKind::Encryption => registry.add_encryption_key(office, key),
    }
    .map_err(|e| CliError::refused(e.to_string()))
}

/// An office's keys of `kind`.
fn keys_of(entry: &OfficeEntry, kind: KeyKind) -> &[KeyEntry] {
    match kind {
        KeyKind::Signing => &entry.keys,
        KeyKind::Encryption => &entry.encryption_keys,
    }
}

fn retire(
    registry: &mut OfficeRegistry,
    kind: KeyKind,
    key_id: &str,
    at: OffsetDateTime,
) -> Result<(), CliError> {
    match kind {
        KeyKind::Signing => registry.retire_key(key_id, at),
        KeyKind::Encryption => registry.retire_encryption_key(key_id, at),
    }
    .map_err(|e| CliError::refused(e.to_string()))
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
    let (kind, key_id, key_office, public_key) = read_public_key(public_key_from)?;
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
        kind,
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
            "kind": kind.name(),
            "key_id": key_id,
            "valid_from": rfc3339(valid_from),
        }))?;
    } else {
        ctx.out.line(format!(
            "registered {} key {key_id} of {office} in {}, valid from {}",
            kind.name(),
            path.display(),
            rfc3339(valid_from)
        ))?;
        ctx.out.note(match kind {
            KeyKind::Signing => {
                "roll the registry out to every service before the office signs with the key"
            }
            KeyKind::Encryption => {
                "roll the registry out to every service; content sealed from the key's start on is wrapped for it"
            }
        });
    }
    Ok(Outcome::Ok)
}

/// `casebus keys rotate`.
pub fn rotate(
    ctx: &Ctx,
    kind: KeyKind,
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
    let current = keys_of(&entry, kind);
    let new_key_id = format!("{office}#{label}");
    if current.iter().any(|k| k.key_id == new_key_id) {
        return Err(CliError::usage(format!(
            "--label: key {new_key_id} is registered already"
        )));
    }
    // Keys still open-ended or valid beyond the retirement time get retired.
    let retiring: Vec<String> = current
        .iter()
        .filter(|k| k.valid_until.is_none_or(|until| until > retire_at))
        .filter(|k| k.valid_from < retire_at)
        .map(|k| k.key_id.clone())
        .collect();
    // Check the whole change on a copy before writing any file.
    let mut next = registry.clone();
    let probe = Generated::new(kind, office, label)?;
    add_key(&mut next, office, None, kind, probe.entry(valid_from))?;
    for key_id in &retiring {
        retire(&mut next, kind, key_id, retire_at)?;
    }

    let key = generate_files(kind, office, label, out)?;
    add_key(&mut registry, office, None, kind, key.entry(valid_from))?;
    for key_id in &retiring {
        retire(&mut registry, kind, key_id, retire_at)?;
    }
    registry.save(path).map_err(CliError::from_source)?;
    if ctx.out.is_json() {
        ctx.out.json_document(&json!({
            "registry": path.display().to_string(),
            "office": office.as_str(),
            "kind": kind.name(),
            "new_key_id": key.key_id(),
            "valid_from": rfc3339(valid_from),
            "retired": retiring,
            "retire_at": rfc3339(retire_at),
            "secret_key_file": out.display().to_string(),
        }))?;
    } else {
        ctx.out.line(format!(
            "rotated the {} keys of {office}: new key {} valid from {} (secret key in {}); {} retired at {}",
            kind.name(),
            key.key_id(),
            rfc3339(valid_from),
            out.display(),
            if retiring.is_empty() {
                "no old key".to_owned()
            } else {
                retiring.join(", ")
            },
            rfc3339(retire_at)
        ))?;
        ctx.out.note(match kind {
            KeyKind::Signing => {
                "roll the registry out to every service now; switch the office's service to the new key file before the retirement time"
            }
            KeyKind::Encryption => {
                "roll the registry out to every service now; keep the old secret key file: what was sealed for it stays readable only with it"
            }
        });
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
                let json_keys = |kind: KeyKind| {
                    keys_of(o, kind)
                        .iter()
                        .map(|k| {
                            json!({
                                "key_id": k.key_id,
                                "public_key": k.public_key,
                                "valid_from": rfc3339(k.valid_from),
                                "valid_until": k.valid_until.map(rfc3339),
                                "state": state(k),
                            })
                        })
                        .collect::<Vec<_>>()
                };
                json!({
                    "office": o.id.as_str(),
                    "name": o.name,
                    "keys": json_keys(KeyKind::Signing),
                    "encryption_keys": json_keys(KeyKind::Encryption),
                })
            })
            .collect();
        ctx.out.json_document(&json!({ "offices": offices }))?;
        return Ok(Outcome::Ok);
    }
    let mut t = table(&[
        "office",
        "name",
        "kind",
        "key id",
        "state",
        "valid from",
        "valid until",
        "public key",
    ]);
    for office in registry.offices() {
        // Every key of the office, signing keys first.
        let all: Vec<(KeyKind, &KeyEntry)> = [KeyKind::Signing, KeyKind::Encryption]
            .into_iter()
            .flat_map(|kind| keys_of(office, kind).iter().map(move |k| (kind, k)))
            .collect();
        if all.is_empty() {
            t.add_row([
                office.id.to_string(),
                office.name.clone(),
                String::new(),
                "(no key)".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (kind, key) in all {
            t.add_row([
                office.id.to_string(),
                office.name.clone(),
                kind.name().to_owned(),
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
