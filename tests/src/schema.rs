//! The schema evolution guard. `snapshot` turns a `FileDescriptorSet` into a sorted,
//! line-per-element text (messages, fields with number, type, label and oneof, enum
//! values, reserved numbers and names); `breaking_changes` compares a committed baseline
//! with the current snapshot and lists every change a v1 reader could mis-read:
//!
//! - a field removed without reserving its number,
//! - a field number reused (after removal, or from a reserved range),
//! - a field's type, label (repeated or not) or oneof changed,
//! - an enum value removed without reservation, or renumbered,
//! - a message or enum removed,
//! - a field no longer marked `(casebus.event.v1.content)`: new events would carry it
//!   readable by every participant.
//!
//! Additions (new messages, fields, enum values, payload kinds, content marks) are always
//! allowed. The content marks are read from the descriptors' options (with
//! prost-reflect), independently of the code `casebus-proto` generates from them.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// One element of a schema snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    /// A message exists.
    Message {
        /// Fully qualified name.
        name: String,
    },
    /// A field of a message.
    Field {
        /// Fully qualified message name.
        message: String,
        /// Field number.
        number: i32,
        /// Field name.
        name: String,
        /// Type (scalar name, or `.pkg.Type` for messages and enums).
        ty: String,
        /// `optional` or `repeated`.
        label: String,
        /// Name of the containing oneof, or `-`.
        oneof: String,
    },
    /// A reserved field number range (inclusive start, exclusive end) of a message.
    Reserved {
        /// Fully qualified message or enum name.
        scope: String,
        /// First reserved number.
        start: i32,
        /// One past the last reserved number.
        end: i32,
    },
    /// A reserved field or value name.
    ReservedName {
        /// Fully qualified message or enum name.
        scope: String,
        /// The name.
        name: String,
    },
    /// An enum exists.
    Enum {
        /// Fully qualified name.
        name: String,
    },
    /// A field marked `(casebus.event.v1.content)`.
    Content {
        /// Fully qualified field name, `.pkg.Message.field`.
        field: String,
    },
    /// A value of an enum.
    Value {
        /// Fully qualified enum name.
        r#enum: String,
        /// Value name.
        name: String,
        /// Value number.
        number: i32,
    },
}

impl Element {
    fn to_line(&self) -> String {
        match self {
            Self::Message { name } => format!("message {name}"),
            Self::Field {
                message,
                number,
                name,
                ty,
                label,
                oneof,
            } => {
                format!("field {message} {number} {name} {ty} {label} {oneof}")
            }
            Self::Reserved { scope, start, end } => format!("reserved {scope} {start} {end}"),
            Self::ReservedName { scope, name } => format!("reserved_name {scope} {name}"),
            Self::Enum { name } => format!("enum {name}"),
            Self::Content { field } => format!("content {field}"),
            Self::Value {
                r#enum,
                name,
                number,
            } => format!("value {} {name} {number}", r#enum),
        }
    }

    fn from_line(line: &str) -> Option<Self> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let s = |i: usize| parts.get(i).map(|p| (*p).to_owned());
        let n = |i: usize| parts.get(i).and_then(|p| p.parse::<i32>().ok());
        Some(match *parts.first()? {
            "message" => Self::Message { name: s(1)? },
            "field" => Self::Field {
                message: s(1)?,
                number: n(2)?,
                name: s(3)?,
                ty: s(4)?,
                label: s(5)?,
                oneof: s(6)?,
            },
            "reserved" => Self::Reserved {
                scope: s(1)?,
                start: n(2)?,
                end: n(3)?,
            },
            "reserved_name" => Self::ReservedName {
                scope: s(1)?,
                name: s(2)?,
            },
            "enum" => Self::Enum { name: s(1)? },
            "content" => Self::Content { field: s(1)? },
            "value" => Self::Value {
                r#enum: s(1)?,
                name: s(2)?,
                number: n(3)?,
            },
            _ => return None,
        })
    }
}

/// A snapshot of a schema: its elements, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The elements.
    pub elements: BTreeSet<Element>,
}

impl Snapshot {
    /// Builds the snapshot of every `casebus.*` file in an encoded descriptor set.
    ///
    /// # Errors
    /// The decode error when the bytes are not a `FileDescriptorSet`.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let set = FileDescriptorSet::decode(bytes)?;
        let mut snapshot = Self::default();
        snapshot.add_content_marks(bytes);
        for file in set
            .file
            .iter()
            .filter(|f| f.package().starts_with("casebus."))
        {
            let prefix = format!(".{}", file.package());
            for message in &file.message_type {
                snapshot.add_message(&prefix, message);
            }
            for e in &file.enum_type {
                snapshot.add_enum(&prefix, e);
            }
        }
        Ok(snapshot)
    }

    /// The `(casebus.event.v1.content)` marks of every `casebus.*` field, read from the
    /// options as the descriptor set encodes them (none when the option is not declared).
    fn add_content_marks(&mut self, bytes: &[u8]) {
        let Ok(pool) = prost_reflect::DescriptorPool::decode(bytes) else {
            return;
        };
        let Some(option) = pool.get_extension_by_name("casebus.event.v1.content") else {
            return;
        };
        for message in pool
            .all_messages()
            .filter(|m| m.package_name().starts_with("casebus."))
        {
            for field in message.fields() {
                if field.options().get_extension(&option).as_bool() == Some(true) {
                    self.elements.insert(Element::Content {
                        field: format!(".{}", field.full_name()),
                    });
                }
            }
        }
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto) {
        let name = format!("{prefix}.{}", message.name());
        self.elements
            .insert(Element::Message { name: name.clone() });
        for field in &message.field {
            let ty = if field.type_name().is_empty() {
                format!("{:?}", field.r#type()).to_lowercase()
            } else {
                field.type_name().to_owned()
            };
            let oneof = field
                .oneof_index
                .and_then(|i| message.oneof_decl.get(usize::try_from(i).ok()?))
                .map_or_else(|| "-".to_owned(), |o| o.name().to_owned());
            let label = if field.label() == prost_types::field_descriptor_proto::Label::Repeated {
                "repeated"
            } else {
                "optional"
            };
            self.elements.insert(Element::Field {
                message: name.clone(),
                number: field.number(),
                name: field.name().to_owned(),
                ty,
                label: label.to_owned(),
                oneof,
            });
        }
        for range in &message.reserved_range {
            self.elements.insert(Element::Reserved {
                scope: name.clone(),
                start: range.start(),
                end: range.end(),
            });
        }
        for reserved in &message.reserved_name {
            self.elements.insert(Element::ReservedName {
                scope: name.clone(),
                name: reserved.clone(),
            });
        }
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for e in &message.enum_type {
            self.add_enum(&name, e);
        }
    }

    fn add_enum(&mut self, prefix: &str, e: &EnumDescriptorProto) {
        let name = format!("{prefix}.{}", e.name());
        self.elements.insert(Element::Enum { name: name.clone() });
        for value in &e.value {
            self.elements.insert(Element::Value {
                r#enum: name.clone(),
                name: value.name().to_owned(),
                number: value.number(),
            });
        }
        for range in &e.reserved_range {
            // Enum reserved ranges are inclusive at both ends; store as exclusive end.
            self.elements.insert(Element::Reserved {
                scope: name.clone(),
                start: range.start(),
                end: range.end().saturating_add(1),
            });
        }
        for reserved in &e.reserved_name {
            self.elements.insert(Element::ReservedName {
                scope: name.clone(),
                name: reserved.clone(),
            });
        }
    }

    /// The snapshot as text, one element a line.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# Schema baseline of proto/ (casebus.*), checked by tests/tests/schema_guard.rs.\n\
             # Regenerate after an additive change with CASEBUS_BLESS_SCHEMA=1 cargo test -p casebus-tests.\n",
        );
        for e in &self.elements {
            out.push_str(&e.to_line());
            out.push('\n');
        }
        out
    }

    /// Parses the text form; unknown and comment lines are skipped.
    pub fn from_text(text: &str) -> Self {
        Self {
            elements: text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(Element::from_line)
                .collect(),
        }
    }

    fn reserved_number(&self, scope: &str, number: i32) -> bool {
        self.elements.iter().any(|e| {
            matches!(e, Element::Reserved { scope: s, start, end } if s == scope && (*start..*end).contains(&number))
        })
    }

    fn exists(&self, wanted: impl Fn(&Element) -> bool) -> bool {
        self.elements.iter().any(wanted)
    }
}

/// Every breaking change from `baseline` to `current`, as sentences.
pub fn breaking_changes(baseline: &Snapshot, current: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    let current_fields: BTreeMap<(&str, i32), &Element> = current
        .elements
        .iter()
        .filter_map(|e| match e {
            Element::Field {
                message, number, ..
            } => Some(((message.as_str(), *number), e)),
            _ => None,
        })
        .collect();
    for element in &baseline.elements {
        match element {
            Element::Message { name } => {
                if !current.exists(|e| matches!(e, Element::Message { name: n } if n == name)) {
                    problems.push(format!("message {name} was removed"));
                }
            }
            Element::Enum { name } => {
                if !current.exists(|e| matches!(e, Element::Enum { name: n } if n == name)) {
                    problems.push(format!("enum {name} was removed"));
                }
            }
            Element::Field {
                message,
                number,
                name,
                ty,
                label,
                oneof,
            } => {
                match current_fields.get(&(message.as_str(), *number)) {
                    None => {
                        if !current.reserved_number(message, *number) {
                            problems.push(format!(
                                "field {message}.{name} ({number}) was removed without reserving its number"
                            ));
                        }
                    }
                    Some(Element::Field {
                        ty: t,
                        label: l,
                        oneof: o,
                        name: n,
                        ..
                    }) => {
                        if t != ty {
                            problems.push(format!(
                                "field {message}.{name} ({number}) changed type from {ty} to {t}"
                            ));
                        }
                        if l != label {
                            problems.push(format!("field {message}.{name} ({number}) changed label from {label} to {l}"));
                        }
                        if o != oneof {
                            problems.push(format!(
                                "field {message}.{name} ({number}) moved from oneof {oneof} to {o}"
                            ));
                        }
                        if n != name && current.exists(|e| matches!(e, Element::Field { message: m, name: nn, .. } if m == message && nn == name)) {
                            problems.push(format!("field name {message}.{name} now has another number"));
                        }
                    }
                    Some(_) => {}
                }
            }
            Element::Reserved { scope, start, end } => {
                for (&(m, number), field) in
                    current_fields.range((scope.as_str(), *start)..(scope.as_str(), *end))
                {
                    if m == scope
                        && let Element::Field { name, .. } = field
                    {
                        problems.push(format!(
                            "field {scope}.{name} reuses reserved number {number}"
                        ));
                    }
                }
                if !current.exists(|e| e == element) {
                    problems.push(format!(
                        "reserved range {start}..{end} of {scope} was dropped"
                    ));
                }
            }
            Element::ReservedName { .. } => {}
            Element::Content { field } => {
                let (message, name) = field.rsplit_once('.').unwrap_or(("", field));
                let still_there = current.exists(|e| matches!(e, Element::Field { message: m, name: n, .. } if m == message && n == name));
                if still_there && !current.exists(|e| e == element) {
                    problems.push(format!(
                        "field {field} is no longer marked content: new events would carry it readable by every participant"
                    ));
                }
            }
            Element::Value {
                r#enum,
                name,
                number,
            } => {
                let same_name = current.elements.iter().find_map(|e| match e {
                    Element::Value {
                        r#enum: en,
                        name: n,
                        number: num,
                    } if en == r#enum && n == name => Some(*num),
                    _ => None,
                });
                match same_name {
                    Some(now) if now != *number => {
                        problems.push(format!(
                            "enum value {}.{name} was renumbered from {number} to {now}",
                            r#enum
                        ));
                    }
                    Some(_) => {}
                    None => {
                        let taken = current.exists(|e| matches!(e, Element::Value { r#enum: en, number: num, .. } if en == r#enum && num == number));
                        if taken {
                            problems.push(format!(
                                "enum value number {}.{number} ({name}) now means another value",
                                r#enum
                            ));
                        } else if !current.reserved_number(r#enum, *number) {
                            problems.push(format!("enum value {}.{name} ({number}) was removed without reserving its number", r#enum));
                        }
                    }
                }
            }
        }
    }
    problems
}
