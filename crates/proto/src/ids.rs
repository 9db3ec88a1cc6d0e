//! Identifier newtypes (`CaseId`, `EventId`, `OfficeId`, `RequestId`) whose constructors
//! reject invalid values with a message naming what is wrong, plus agency names.
//!
//! A raw `String` id never reaches the domain: every wire string passes through one of
//! these constructors first.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::event::v1::Agency;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of id (e.g. "case id").
        kind: &'static str,
    },
    /// The value was longer than allowed.
    #[error("{kind} is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// Its length in characters.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The value contained a character outside the allowed set.
    #[error(
        "{kind} {value:?} contains {found:?} at position {position}; only {allowed} are allowed"
    )]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
        /// The rejected value (truncated to 80 chars).
        value: String,
        /// The offending character.
        found: char,
        /// Its character position (0-based).
        position: usize,
        /// Description of the allowed set.
        allowed: &'static str,
    },
    /// The value did not have the required structure.
    #[error("{kind} {value:?} is malformed: {reason}")]
    Malformed {
        /// Which kind of id.
        kind: &'static str,
        /// The rejected value (truncated to 80 chars).
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn shorten(value: &str) -> String {
    value.chars().take(80).collect()
}

fn check_chars(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = value.chars().count();
    if len > max {
        return Err(IdError::TooLong { kind, len, max });
    }
    if let Some((position, found)) = value.chars().enumerate().find(|(_, c)| !ok(*c)) {
        return Err(IdError::BadChar {
            kind,
            value: shorten(value),
            found,
            position,
            allowed,
        });
    }
    Ok(())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Checks an identifier local to a case (party, evidence, hand-off, detention, hearing
/// ids): 1-64 chars of `[A-Za-z0-9_-]`.
///
/// # Errors
/// [`IdError`] naming `kind` when the value is empty, too long or has another character.
pub fn validate_local_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    check_chars(kind, value, 64, "[A-Za-z0-9_-]", is_token_char)
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(&s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// Coordination id of a case: 1-64 chars of `[A-Za-z0-9_-]`, so it is always exactly
    /// one safe NATS subject token (no `.`, `*`, `>` or white space).
    CaseId
);

impl CaseId {
    /// Maximum length of a case id in characters.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps a case id.
    ///
    /// # Errors
    /// [`IdError`] when the value is empty, longer than 64 chars, or contains anything
    /// outside `[A-Za-z0-9_-]`.
    pub fn new(value: &str) -> Result<Self, IdError> {
        check_chars(
            "case id",
            value,
            Self::MAX_LEN,
            "[A-Za-z0-9_-]",
            is_token_char,
        )?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// Idempotency key chosen by the client for one command: 1-128 chars of
    /// `[A-Za-z0-9_.:-]`.
    RequestId
);

impl RequestId {
    /// Validates and wraps a request id.
    ///
    /// # Errors
    /// [`IdError`] when the value is empty, longer than 128 chars, or contains anything
    /// outside `[A-Za-z0-9_.:-]`.
    pub fn new(value: &str) -> Result<Self, IdError> {
        check_chars("request id", value, 128, "[A-Za-z0-9_.:-]", |c| {
            is_token_char(c) || c == '.' || c == ':'
        })?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// Identifier of an event: 32 lower-case hex digits, derived deterministically from
    /// the recording office, the case and the command's request id.
    EventId
);

impl EventId {
    /// Validates and wraps an event id.
    ///
    /// # Errors
    /// [`IdError`] when the value is not exactly 32 lower-case hex digits.
    pub fn new(value: &str) -> Result<Self, IdError> {
        check_chars("event id", value, 32, "lower-case hex digits", |c| {
            c.is_ascii_digit() || ('a'..='f').contains(&c)
        })?;
        if value.len() != 32 {
            return Err(IdError::Malformed {
                kind: "event id",
                value: shorten(value),
                reason: "must be exactly 32 hex digits",
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The event id of the command `request_id` issued by `office` on `case`: the first
    /// 16 bytes of SHA-256 over a domain-separated encoding of the three, in hex. The same
    /// command always yields the same id, which is what makes retries idempotent; request
    /// ids are scoped to (office, case), so ids never collide across cases.
    pub fn derive(office: &OfficeId, case: &CaseId, request_id: &RequestId) -> Self {
        let mut h = Sha256::new();
        h.update(b"casebus.event-id.v1\0");
        h.update(office.as_str().as_bytes());
        h.update([0]);
        h.update(case.as_str().as_bytes());
        h.update([0]);
        h.update(request_id.as_str().as_bytes());
        let digest = h.finalize();
        Self(hex::encode(&digest[..16]))
    }
}

string_newtype!(
    /// An office, one unit of an agency: `<agency>:<code>` in lower case, where agency is
    /// one of `court`, `procuratorate`, `public_security`, `customs`, `ip_center` and the
    /// code is 1-48 chars of `[a-z0-9-]`, e.g. `customs:ningbo`.
    OfficeId
);

impl OfficeId {
    /// Validates and wraps an office id.
    ///
    /// # Errors
    /// [`IdError`] when the value does not have the form `<agency>:<code>` with a known
    /// agency and a code of 1-48 chars of `[a-z0-9-]`.
    pub fn new(value: &str) -> Result<Self, IdError> {
        check_chars("office id", value, 64, "[a-z0-9_:-]", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' || c == ':'
        })?;
        let Some((agency, code)) = value.split_once(':') else {
            return Err(IdError::Malformed {
                kind: "office id",
                value: shorten(value),
                reason: "expected <agency>:<code>, e.g. customs:ningbo",
            });
        };
        if agency_from_name(agency).is_none() {
            return Err(IdError::Malformed {
                kind: "office id",
                value: shorten(value),
                reason: "agency must be one of court, procuratorate, public_security, customs, ip_center",
            });
        }
        check_chars("office code", code, 48, "[a-z0-9-]", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        })?;
        Ok(Self(value.to_owned()))
    }

    /// The agency this office belongs to.
    pub fn agency(&self) -> Agency {
        let name = self.0.split_once(':').map_or("", |(a, _)| a);
        // The constructor accepted only known agency names.
        agency_from_name(name).unwrap_or(Agency::Unspecified)
    }

    /// The office's code within its agency (the part after `:`).
    pub fn code(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, c)| c)
    }
}

/// Lower-case names of the five agencies, in the order of the `Agency` enum.
pub const AGENCY_NAMES: [&str; 5] = [
    "court",
    "procuratorate",
    "public_security",
    "customs",
    "ip_center",
];

/// The agency with the given lower-case name (`court`, ..., `ip_center`).
pub fn agency_from_name(name: &str) -> Option<Agency> {
    Some(match name {
        "court" => Agency::Court,
        "procuratorate" => Agency::Procuratorate,
        "public_security" => Agency::PublicSecurity,
        "customs" => Agency::Customs,
        "ip_center" => Agency::IpCenter,
        _ => return None,
    })
}

/// The lower-case name of an agency, `"unspecified"` for the zero value.
pub fn agency_name(agency: Agency) -> &'static str {
    match agency {
        Agency::Court => "court",
        Agency::Procuratorate => "procuratorate",
        Agency::PublicSecurity => "public_security",
        Agency::Customs => "customs",
        Agency::IpCenter => "ip_center",
        Agency::Unspecified => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_id_accepts_the_documented_alphabet() {
        for ok in ["a", "CASE-2026_0001", &"x".repeat(64), "0"] {
            assert!(CaseId::new(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn case_id_rejects_subject_metacharacters_space_empty_long_and_non_ascii() {
        let cases: Vec<(String, &str)> = vec![
            ("*".into(), "contains '*'"),
            (">".into(), "contains '>'"),
            ("a.b".into(), "contains '.'"),
            ("a b".into(), "contains ' '"),
            ("".into(), "must not be empty"),
            ("x".repeat(65), "65 characters long"),
            ("案件1".into(), "contains '案'"),
            ("tab\there".into(), "contains '\\t'"),
        ];
        for (value, expected) in cases {
            let err = CaseId::new(&value).expect_err("must be rejected");
            let text = err.to_string();
            assert!(text.contains(expected), "{value:?}: {text}");
            assert!(
                text.starts_with("case id"),
                "error names the id kind: {text}"
            );
        }
    }

    #[test]
    fn office_id_requires_known_agency_and_lower_case_code() {
        assert_eq!(
            OfficeId::new("customs:ningbo").map(|o| o.agency()),
            Ok(Agency::Customs)
        );
        assert_eq!(
            OfficeId::new("ip_center:zhejiang").map(|o| o.code().to_owned()),
            Ok("zhejiang".to_owned())
        );
        for bad in [
            "customs",
            "navy:x",
            "Customs:ningbo",
            "customs:",
            "customs:a:b",
            "customs:a.b",
        ] {
            assert!(OfficeId::new(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn event_id_is_deterministic_per_office_and_request() {
        let office = OfficeId::new("customs:ningbo").expect("valid");
        let other = OfficeId::new("customs:shanghai").expect("valid");
        let r1 = RequestId::new("req-1").expect("valid");
        let r2 = RequestId::new("req-2").expect("valid");
        let c1 = CaseId::new("C1").expect("valid");
        let c2 = CaseId::new("C2").expect("valid");
        assert_eq!(
            EventId::derive(&office, &c1, &r1),
            EventId::derive(&office, &c1, &r1)
        );
        assert_ne!(
            EventId::derive(&office, &c1, &r1),
            EventId::derive(&office, &c1, &r2)
        );
        assert_ne!(
            EventId::derive(&office, &c1, &r1),
            EventId::derive(&other, &c1, &r1)
        );
        assert_ne!(
            EventId::derive(&office, &c1, &r1),
            EventId::derive(&office, &c2, &r1)
        );
        let id = EventId::derive(&office, &c1, &r1);
        assert_eq!(EventId::new(id.as_str()), Ok(id));
    }

    #[test]
    fn event_id_rejects_wrong_length_and_upper_case() {
        assert!(EventId::new("abc").is_err());
        assert!(EventId::new(&"A".repeat(32)).is_err());
        assert!(EventId::new(&"a".repeat(33)).is_err());
    }

    #[test]
    fn request_id_rejects_spaces_and_wildcards() {
        assert!(RequestId::new("order:2026-11-25.7").is_ok());
        assert!(RequestId::new("a b").is_err());
        assert!(RequestId::new("a*").is_err());
        assert!(RequestId::new(&"r".repeat(129)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_valid_case_id_is_one_subject_token(s in "[A-Za-z0-9_-]{1,64}") {
            let id = CaseId::new(&s).expect("alphabet is valid");
            proptest::prop_assert!(!id.as_str().contains(['.', '*', '>', ' ']));
        }

        #[test]
        fn case_id_never_accepts_a_subject_metacharacter(
            prefix in "[a-z]{0,10}", meta in "[.*> \t]", suffix in "[a-z]{0,10}"
        ) {
            let value = format!("{prefix}{meta}{suffix}");
            proptest::prop_assert!(CaseId::new(&value).is_err());
        }
    }
}
