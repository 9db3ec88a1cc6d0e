//! Sealed content: HPKE as RFC 9180 specifies it (Appendix A.2.1 reproduced byte for
//! byte with the suite casebus uses), every reader opening what was sealed for it and
//! nobody else, each kind of tampering detected with its own error, widening to a new
//! reader, key files, and encryption keys in the registry with rotation.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use proptest::prelude::*;
use time::macros::datetime;

use casebus_integrity::seal::{
    Binding, EpochPolicy, Opener, OpeningKey, ReaderKey, SealError, Sealed, Sealer,
};
use casebus_integrity::{OfficeEntry, OfficeRegistry, RegistryError};
use casebus_proto::OfficeId;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Hands out fixed bytes: the ephemeral key material of a test vector.
struct FixedRng(Vec<u8>);

impl hpke::rand_core::TryRng for FixedRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        assert!(
            dst.len() <= self.0.len(),
            "the vector has no more randomness"
        );
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for FixedRng {}

fn office(id: &str) -> OfficeId {
    OfficeId::new(id).expect("office id")
}

fn key(id: &str, label: &str, seed: u8) -> OpeningKey {
    OpeningKey::derive(office(id), label, &[seed; 32]).expect("key")
}

fn seal(content: &[u8], binding: &Binding<'_>, readers: &[ReaderKey]) -> Result<Sealed, SealError> {
    Sealer::default()
        .seal(content, binding, readers)
        .map(|(sealed, _)| sealed)
}

fn open(
    sealed: &Sealed,
    binding: &Binding<'_>,
    key: &OpeningKey,
) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
    Opener::new(vec![key.clone()]).open(sealed, binding)
}

fn rewrap(
    sealed: &Sealed,
    binding: &Binding<'_>,
    key: &OpeningKey,
    readers: &[ReaderKey],
) -> Result<Vec<casebus_integrity::seal::WrappedKey>, SealError> {
    Sealer::default().rewrap(sealed, binding, &Opener::new(vec![key.clone()]), readers)
}

const BINDING: Binding<'static> = Binding {
    case_id: "NB-2026-0042",
    version: 7,
    event_id: "ev-7",
};

#[test]
fn the_suite_reproduces_rfc_9180_appendix_a_2_1() {
    // RFC 9180 A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base
    // mode, the first encryption (sequence number 0).
    let info = hex("4f6465206f6e2061204772656369616e2055726e");
    let ikm_e = hex("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b");
    let ikm_r = hex("1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df");
    let sk_rm = hex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb");
    let pk_rm = hex("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a");
    let enc = hex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a");
    let pt = hex("4265617574792069732074727574682c20747275746820626561757479");
    let aad = hex("436f756e742d30");
    let ct = hex(
        "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
    );

    // casebus derives an office key as the RFC's DeriveKeyPair does.
    let derived = OpeningKey::derive(office("court:hangzhou-ip"), "enc", &ikm_r).expect("key");
    assert_eq!(derived.reader_key().to_bytes().as_slice(), pk_rm.as_slice());
    let (sk, pk) = X25519HkdfSha256::derive_keypair(&ikm_r);
    // The crate keeps the scalar clamped as RFC 7748 uses it (skRm's top bit cleared,
    // the next one set, the low three cleared): the same private key.
    let mut clamped = sk_rm.clone();
    clamped[0] &= 0xf8;
    clamped[31] = (clamped[31] & 0x7f) | 0x40;
    assert_eq!(sk.to_bytes().as_slice(), clamped.as_slice());

    let (encapped, ciphertext) = hpke::single_shot_seal_with_rng::<
        ChaCha20Poly1305,
        HkdfSha256,
        X25519HkdfSha256,
    >(&OpModeS::Base, &pk, &info, &pt, &aad, &mut FixedRng(ikm_e))
    .expect("seal");
    assert_eq!(encapped.to_bytes().as_slice(), enc.as_slice());
    assert_eq!(ciphertext, ct);
    let opened = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &<X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&enc).expect("enc"),
        &info,
        &ct,
        &aad,
    )
    .expect("open");
    assert_eq!(opened, pt);

    // The wrapping key is an exported secret of such a context (RFC 9180 section 5.3):
    // the appendix's first exported value (empty exporter context, 32 bytes).
    let exported = hex("4bbd6243b8bb54cec311fac9df81841b6fd61f56538a775e7c80a9f40160606e");
    let (_, sender) =
        hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeS::Base,
            &pk,
            &info,
            &mut FixedRng(hex(
                "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b",
            )),
        )
        .expect("sender");
    let mut out = [0u8; 32];
    sender.export(b"", &mut out).expect("export");
    assert_eq!(out.as_slice(), exported.as_slice());
    let receiver = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &<X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&enc).expect("enc"),
        &info,
    )
    .expect("receiver");
    let mut back = [0u8; 32];
    receiver.export(b"", &mut back).expect("export");
    assert_eq!(back, out);
}

#[test]
fn a_sealer_keeps_one_context_per_reader_for_its_epoch_and_then_starts_a_new_one() {
    let court = key("court:hangzhou-ip", "enc", 3);
    let customs = key("customs:ningbo", "enc", 1);
    let readers = [court.reader_key(), customs.reader_key()];
    let enc_of = |sealed: &Sealed, id: &str| {
        sealed
            .wrapped_keys
            .iter()
            .find(|w| w.key_id == id)
            .expect("wrapped")
            .enc
            .clone()
    };
    let sealer = Sealer::new(EpochPolicy {
        max_age: std::time::Duration::from_secs(3600),
        max_wraps: 3,
    });
    let sealed: Vec<Sealed> = (0..4)
        .map(|_| sealer.seal(b"note", &BINDING, &readers).expect("seal").0)
        .collect();
    // Within an epoch one enc per reader key, a different one for each reader; the
    // fourth wrap starts a new context.
    let court_encs: Vec<_> = sealed
        .iter()
        .map(|s| enc_of(s, "court:hangzhou-ip#enc"))
        .collect();
    assert_eq!(court_encs[0], court_encs[1]);
    assert_eq!(court_encs[0], court_encs[2]);
    assert_ne!(court_encs[0], court_encs[3]);
    assert_ne!(court_encs[0], enc_of(&sealed[0], "customs:ningbo#enc"));
    // Fresh content keys and nonces every time, and every seal opens for both readers,
    // with one opener remembering the wrapping keys it derived.
    assert_ne!(sealed[0].ciphertext, sealed[1].ciphertext);
    assert_ne!(
        sealed[0].wrapped_keys[0].ciphertext,
        sealed[1].wrapped_keys[0].ciphertext
    );
    for reader in [&court, &customs] {
        let opener = Opener::new(vec![reader.clone()]);
        for s in &sealed {
            assert_eq!(opener.open(s, &BINDING).expect("open").as_slice(), b"note");
        }
    }
    // A context is per key: the same key id with another public key gets its own.
    let impostor = key("court:hangzhou-ip", "enc", 9);
    let other = sealer
        .seal(b"note", &BINDING, &[impostor.reader_key()])
        .expect("seal")
        .0;
    assert_ne!(enc_of(&other, "court:hangzhou-ip#enc"), court_encs[3]);
    assert_eq!(
        open(&other, &BINDING, &court),
        Err(SealError::Unwrap {
            key_id: "court:hangzhou-ip#enc".into()
        })
    );
}

#[test]
fn every_reader_opens_what_was_sealed_for_it_and_no_one_else_does() {
    let readers = [
        key("customs:ningbo", "enc", 1),
        key("customs:shanghai", "enc", 2),
        key("court:hangzhou-ip", "enc", 3),
    ];
    let outsider = key("public_security:ningbo", "enc", 4);
    let content = b"informant: Zhang San, ID 330203198001011234";
    let sealed = seal(
        content,
        &BINDING,
        &readers
            .iter()
            .map(OpeningKey::reader_key)
            .collect::<Vec<_>>(),
    )
    .expect("seal");
    assert_eq!(sealed.wrapped_keys.len(), 3);
    for reader in &readers {
        assert_eq!(
            open(&sealed, &BINDING, reader).expect("open").as_slice(),
            content
        );
    }
    assert_eq!(
        open(&sealed, &BINDING, &outsider),
        Err(SealError::NotAReader {
            key_id: "public_security:ningbo#enc".into()
        })
    );
    // Nothing of the content is in the sealed bytes.
    let all: Vec<u8> = [sealed.nonce.clone(), sealed.ciphertext.clone()]
        .into_iter()
        .chain(
            sealed
                .wrapped_keys
                .iter()
                .flat_map(|w| [w.enc.clone(), w.nonce.clone(), w.ciphertext.clone()]),
        )
        .flatten()
        .collect();
    assert!(!all.windows(8).any(|w| w == b"Zhang Sa"));
    // Two seals of one content differ: a fresh key and nonce each time.
    let again = seal(content, &BINDING, &[readers[0].reader_key()]).expect("seal");
    assert_ne!(again.ciphertext, sealed.ciphertext);
}

fn flip(bytes: &mut [u8], at: usize) {
    let i = at % bytes.len();
    bytes[i] ^= 0x01;
}

#[test]
fn each_kind_of_tampering_is_detected_with_its_own_error() {
    let court = key("court:hangzhou-ip", "enc", 3);
    let customs = key("customs:ningbo", "enc", 1);
    let sealed = seal(
        b"a sealed note",
        &BINDING,
        &[court.reader_key(), customs.reader_key()],
    )
    .expect("seal");
    let court_unwrap = Err(SealError::Unwrap {
        key_id: "court:hangzhou-ip#enc".into(),
    });

    let mut t = sealed.clone();
    flip(&mut t.ciphertext, 3);
    assert_eq!(
        open(&t, &BINDING, &court),
        Err(SealError::Content),
        "ciphertext"
    );
    let mut t = sealed.clone();
    flip(&mut t.nonce, 0);
    assert_eq!(open(&t, &BINDING, &court), Err(SealError::Content), "nonce");
    let mut t = sealed.clone();
    t.nonce.pop();
    assert_eq!(
        open(&t, &BINDING, &court),
        Err(SealError::Content),
        "short nonce"
    );
    let mut t = sealed.clone();
    flip(&mut t.wrapped_keys[0].ciphertext, 5);
    assert_eq!(open(&t, &BINDING, &court), court_unwrap, "wrapped key");
    let mut t = sealed.clone();
    flip(&mut t.wrapped_keys[0].enc, 9);
    assert_eq!(open(&t, &BINDING, &court), court_unwrap, "encapsulated key");
    // The key wrapped for customs relabelled as the court's: bound to its key id.
    let mut t = sealed.clone();
    let customs_wrap = t
        .wrapped_keys
        .iter()
        .find(|w| w.key_id == "customs:ningbo#enc")
        .expect("customs")
        .clone();
    t.wrapped_keys = vec![casebus_integrity::seal::WrappedKey {
        key_id: "court:hangzhou-ip#enc".into(),
        ..customs_wrap
    }];
    assert_eq!(
        open(&t, &BINDING, &court),
        court_unwrap,
        "another key's wrap"
    );
    // Copied into another event: every field of the binding counts.
    for other in [
        Binding {
            case_id: "NB-2026-0043",
            ..BINDING
        },
        Binding {
            version: 8,
            ..BINDING
        },
        Binding {
            event_id: "ev-8",
            ..BINDING
        },
    ] {
        assert_eq!(open(&sealed, &other, &court), court_unwrap, "{other:?}");
    }
    // The content of one event under the keys of another, both sealed for the court.
    let other_binding = Binding {
        version: 8,
        event_id: "ev-8",
        ..BINDING
    };
    let other = seal(b"another note", &other_binding, &[court.reader_key()]).expect("seal");
    let hybrid = Sealed {
        wrapped_keys: other.wrapped_keys.clone(),
        ..sealed.clone()
    };
    assert_eq!(
        open(&hybrid, &other_binding, &court),
        Err(SealError::Content),
        "content from another event"
    );
}

#[test]
fn a_reader_widens_a_sealed_content_to_a_new_reader_without_sealing_it_again() {
    let police = key("public_security:ningbo", "enc", 4);
    let procuratorate = key("procuratorate:ningbo", "enc", 5);
    let sealed = seal(b"suspect's address", &BINDING, &[police.reader_key()]).expect("seal");
    assert!(matches!(
        open(&sealed, &BINDING, &procuratorate),
        Err(SealError::NotAReader { .. })
    ));
    let more = rewrap(&sealed, &BINDING, &police, &[procuratorate.reader_key()]).expect("rewrap");
    let mut widened = sealed.clone();
    widened.wrapped_keys.extend(more);
    assert_eq!(
        open(&widened, &BINDING, &procuratorate)
            .expect("open")
            .as_slice(),
        b"suspect's address"
    );
    // Only a reader can widen.
    assert!(matches!(
        rewrap(&sealed, &BINDING, &procuratorate, &[police.reader_key()]),
        Err(SealError::NotAReader { .. })
    ));
}

#[test]
fn secret_key_files_are_private_refuse_overwrite_and_name_what_is_wrong() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("court.enc.key");
    let generated = OpeningKey::generate(office("court:hangzhou-ip"), "enc-2026").expect("key");
    generated.save(&path).expect("save");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(generated.save(&path).is_err(), "never overwritten");
    let loaded = OpeningKey::load(&path).expect("load");
    assert_eq!(loaded.key_id(), "court:hangzhou-ip#enc-2026");
    assert_eq!(loaded.reader_key(), generated.reader_key());
    assert!(!format!("{loaded:?}").contains(&std::fs::read_to_string(&path).expect("read")[60..]));

    // A signing key file is not an encryption key file.
    let signing = dir.path().join("court.key");
    casebus_integrity::OfficeSigner::generate(office("court:hangzhou-ip"), "1")
        .expect("signer")
        .save(&signing)
        .expect("save");
    let err = OpeningKey::load(&signing)
        .expect_err("a signing key")
        .to_string();
    assert!(err.contains("court.key") && err.contains("kind"), "{err}");
    let short = dir.path().join("short.key");
    std::fs::write(
        &short,
        "key_id = \"court:hangzhou-ip#e\"\noffice_id = \"court:hangzhou-ip\"\nkind = \"x25519\"\nsecret_key = \"AAAA\"\n",
    )
    .expect("write");
    let err = OpeningKey::load(&short).expect_err("short").to_string();
    assert!(err.contains("32 bytes"), "{err}");
}

#[test]
fn the_registry_lists_encryption_keys_and_rotation_moves_new_seals_to_the_new_key() {
    let old = key("court:hangzhou-ip", "enc-2026", 3);
    let new = key("court:hangzhou-ip", "enc-2027", 6);
    let customs = key("customs:ningbo", "enc", 1);
    let signer =
        casebus_integrity::OfficeSigner::from_seed(office("court:hangzhou-ip"), "1", [9; 32])
            .expect("signer");
    let mut registry = OfficeRegistry::default();
    registry
        .insert_office(OfficeEntry {
            id: office("court:hangzhou-ip"),
            name: "Hangzhou IP Court".into(),
            keys: vec![signer.key_entry(datetime!(2026-01-01 0:00 UTC))],
            encryption_keys: vec![old.key_entry(datetime!(2026-01-01 0:00 UTC))],
        })
        .expect("court");
    registry
        .insert_office(OfficeEntry {
            id: office("customs:ningbo"),
            name: String::new(),
            keys: vec![],
            encryption_keys: vec![customs.key_entry(datetime!(2026-01-01 0:00 UTC))],
        })
        .expect("customs");
    // The file round-trips, and a registry without encryption keys writes none.
    let parsed = OfficeRegistry::parse(&registry.to_toml()).expect("parse");
    assert_eq!(
        parsed.encryption_key_entry("court:hangzhou-ip#enc-2026"),
        registry.encryption_key_entry("court:hangzhou-ip#enc-2026")
    );
    let mut plain = OfficeRegistry::default();
    plain
        .insert_office(OfficeEntry {
            id: office("court:hangzhou-ip"),
            name: String::new(),
            keys: vec![signer.key_entry(datetime!(2026-01-01 0:00 UTC))],
            encryption_keys: vec![],
        })
        .expect("plain");
    assert!(!plain.to_toml().contains("encryption_keys"));

    let court_only = |o: &OfficeId| o.as_str().starts_with("court:");
    let ids = |keys: Vec<casebus_integrity::seal::ReaderKey>| {
        keys.iter()
            .map(|k| k.key_id().to_owned())
            .collect::<Vec<_>>()
    };
    let at_2026 = datetime!(2026-06-01 0:00 UTC);
    assert_eq!(
        ids(registry.reader_keys(at_2026, court_only)),
        ["court:hangzhou-ip#enc-2026"]
    );
    let sealed_2026 = seal(
        b"sealed in 2026",
        &BINDING,
        &registry.reader_keys(at_2026, court_only),
    )
    .expect("seal");

    // Rotation: the new key is added, the old one ends at 2027.
    registry
        .add_encryption_key(
            &office("court:hangzhou-ip"),
            new.key_entry(datetime!(2027-01-01 0:00 UTC)),
        )
        .expect("new key");
    registry
        .retire_encryption_key("court:hangzhou-ip#enc-2026", datetime!(2027-01-01 0:00 UTC))
        .expect("retire");
    let at_2027 = datetime!(2027-02-01 0:00 UTC);
    assert_eq!(
        ids(registry.reader_keys(at_2027, court_only)),
        ["court:hangzhou-ip#enc-2027"]
    );
    assert_eq!(
        ids(registry.reader_keys(at_2026, court_only)),
        ["court:hangzhou-ip#enc-2026"]
    );
    let sealed_2027 = seal(
        b"sealed in 2027",
        &BINDING,
        &registry.reader_keys(at_2027, court_only),
    )
    .expect("seal");
    assert_eq!(
        open(&sealed_2026, &BINDING, &old).expect("old").as_slice(),
        b"sealed in 2026"
    );
    assert_eq!(
        open(&sealed_2027, &BINDING, &new).expect("new").as_slice(),
        b"sealed in 2027"
    );
    assert!(matches!(
        open(&sealed_2027, &BINDING, &old),
        Err(SealError::NotAReader { .. })
    ));

    // Bad entries name the office and what is wrong; nothing changes.
    let before = registry.to_toml();
    let mut bad = customs.key_entry(datetime!(2026-01-01 0:00 UTC));
    bad.public_key = "AAAA".into();
    bad.key_id = "customs:ningbo#enc-2".into();
    let err = registry
        .add_encryption_key(&office("customs:ningbo"), bad)
        .expect_err("short key");
    assert!(matches!(err, RegistryError::Invalid { .. }));
    assert!(
        err.to_string().contains("customs:ningbo") && err.to_string().contains("32 bytes"),
        "{err}"
    );
    let mut taken = customs.key_entry(datetime!(2026-01-01 0:00 UTC));
    taken.key_id = "court:hangzhou-ip#1".into();
    let err = registry
        .add_encryption_key(&office("court:hangzhou-ip"), taken)
        .expect_err("a signing key's id");
    assert!(err.to_string().contains("registered already"), "{err}");
    assert_eq!(registry.to_toml(), before);
}

proptest! {
    #[test]
    fn any_content_round_trips_and_any_flipped_bit_is_refused(
        content in proptest::collection::vec(any::<u8>(), 0..512),
        version in 1u64..u64::MAX,
        bit in 0usize..4096,
    ) {
        let reader = key("procuratorate:ningbo", "enc", 5);
        let binding = Binding { version, ..BINDING };
        let sealed = seal(&content, &binding, &[reader.reader_key()]).expect("seal");
        let opened = open(&sealed, &binding, &reader).expect("open");
        prop_assert_eq!(opened.as_slice(), content.as_slice());
        let mut t = sealed.clone();
        let i = (bit / 8) % t.ciphertext.len();
        t.ciphertext[i] ^= 1 << (bit % 8);
        prop_assert_eq!(open(&t, &binding, &reader), Err(SealError::Content));
        let mut t = sealed.clone();
        let i = (bit / 8) % t.wrapped_keys[0].ciphertext.len();
        t.wrapped_keys[0].ciphertext[i] ^= 1 << (bit % 8);
        let refused = matches!(open(&t, &binding, &reader), Err(SealError::Unwrap { .. }));
        prop_assert!(refused, "a flipped wrapped key opened");
    }
}

fn sealed_note_event(sealer: &Sealer, readers: &[ReaderKey]) -> casebus_proto::event::v1::Event {
    use casebus_proto::event::v1::{Event, NoteAdded, Payload, payload::Kind};
    let mut event = Event {
        event_id: "ev-7".into(),
        case_id: "NB-2026-0042".into(),
        case_version: 7,
        payload: Some(Payload {
            kind: Some(Kind::NoteAdded(NoteAdded {
                text: "informant: Zhang San".into(),
            })),
        }),
        ..Default::default()
    };
    casebus_integrity::seal::seal_event(sealer, &mut event, readers).expect("seal");
    event
}

#[test]
fn a_sealed_event_shows_its_readable_part_and_opening_checks_that_the_two_agree() {
    use casebus_integrity::seal::open_event;
    use casebus_proto::event::v1::{NoteAdded, Payload, TrackClosed, payload::Kind};
    let court = key("court:hangzhou-ip", "enc", 3);
    let police = key("public_security:ningbo", "enc", 4);
    let sealer = Sealer::default();
    let event = sealed_note_event(&sealer, &[court.reader_key()]);
    // The readable part: the kind, its content cleared.
    assert_eq!(
        event.payload,
        Some(Payload {
            kind: Some(Kind::NoteAdded(NoteAdded::default()))
        })
    );
    let opener = Opener::new(vec![court.clone()]);
    let full = open_event(&opener, &event).expect("open");
    assert_eq!(
        full.kind,
        Some(Kind::NoteAdded(NoteAdded {
            text: "informant: Zhang San".into()
        }))
    );
    // A key of another office.
    assert!(matches!(
        open_event(&Opener::new(vec![police]), &event),
        Err(SealError::NotAReader { .. })
    ));
    // A tampered ciphertext.
    let mut tampered = event.clone();
    flip(
        &mut tampered.sealed.as_mut().expect("sealed").ciphertext,
        11,
    );
    assert_eq!(open_event(&opener, &tampered), Err(SealError::Content));
    // A readable part that disagrees with what was sealed: another kind shown.
    let mut other_kind = event.clone();
    other_kind.payload = Some(Payload {
        kind: Some(Kind::TrackClosed(TrackClosed::default())),
    });
    let err = open_event(&opener, &other_kind).expect_err("disagrees");
    assert!(matches!(err, SealError::Disagrees(_)), "{err}");
    assert!(
        err.to_string().contains("NoteAdded") && err.to_string().contains("TrackClosed"),
        "{err}"
    );
    // Content shown in clear beside the sealed one also disagrees.
    let mut leaked = event.clone();
    leaked.payload = Some(Payload {
        kind: Some(Kind::NoteAdded(NoteAdded {
            text: "a different note".into(),
        })),
    });
    assert!(matches!(
        open_event(&opener, &leaked),
        Err(SealError::Disagrees(_))
    ));
    // The sealed payload of another event does not open here (bound to its event).
    let mut moved = sealed_note_event(&sealer, &[court.reader_key()]);
    moved.case_version = 8;
    assert!(matches!(
        open_event(&opener, &moved),
        Err(SealError::Unwrap { .. })
    ));
}
