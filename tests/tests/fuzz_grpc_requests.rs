//! Bad input on every RPC of every agency service and of the gateway, through the real
//! binaries. The RPCs are enumerated from the descriptor set (so a new RPC is covered
//! without touching this file) and each request is built dynamically: invalid case and
//! request ids, out-of-range enum values, huge strings, huge repeated fields, missing
//! messages, a request body that is not protobuf at all, and one past the transport's
//! message limit. A stream of commands (`Import`) gets its own bad requests plus every
//! command's, each sent as an item; an item refused in its answer counts as refused
//! with the code the answer carries.
//!
//! It proves: every such request is refused (INVALID_ARGUMENT with a message naming what
//! is wrong; the transport's own refusal for a body it cannot decode or that exceeds its
//! limit), nothing is written to `CASES` by any of them, and every process is still
//! running at the end. The table of outcomes goes to `target/reliability/`.

mod fault_common;

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage as _,
    Value,
};
use tonic::{Code, Status};

use casebus_bus::subjects::CASES_STREAM;
use casebus_integrity::token::Role;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{CommandMeta, OpenCaseRequest};
use casebus_proto::event::v1::{CaseOpened, CaseType};

use fault_common::audit::last_sequence;
use fault_common::raw_grpc::fetch;
use fault_common::report::Figures;
use fault_common::services::{Authed, Service, Stage};
use fault_common::{COURT, CUSTOMS, IPC, OFFICES, POLICE, PROC, generations, open_bus};

/// A string far beyond any field's limit but below the transport's 4 MiB.
const HUGE: usize = 1024 * 1024;
/// Elements of a huge repeated field.
const MANY: usize = 50_000;

/// Calls `method` with `body` and returns the status (OK for an answer, or for a stream
/// that sent items).
async fn call(channel: Authed, method: &MethodDescriptor, body: Vec<u8>) -> Status {
    let service = method.parent_service().full_name().to_owned();
    match fetch(
        channel,
        &service,
        method.name(),
        body,
        method.is_server_streaming(),
        Duration::from_secs(2),
    )
    .await
    {
        Ok(items) => first_item_error(method, &items).unwrap_or_else(|| Status::ok("")),
        Err(status) => status,
    }
}

/// For a stream answered item by item (`Import`: an answer with an `error` message of
/// `code` and `message`), the first item refused, as the status a unary call would have
/// answered.
fn first_item_error(method: &MethodDescriptor, items: &[Vec<u8>]) -> Option<Status> {
    let output = method.output();
    let field = output.get_field_by_name("error")?;
    items.iter().find_map(|item| {
        let answer = DynamicMessage::decode(output.clone(), item.as_slice()).ok()?;
        if !answer.has_field(&field) {
            return None;
        }
        let Value::Message(error) = answer.get_field(&field).into_owned() else {
            return None;
        };
        let code = error.get_field_by_name("code")?.as_i32()?;
        let message = error.get_field_by_name("message")?.as_str()?.to_owned();
        Some(Status::new(Code::from_i32(code), message))
    })
}

/// A plausible value for every field of `desc`, `depth` levels deep: ids that pass the
/// syntax checks, enum value 1, one element per list.
fn filled(desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    if depth == 0 {
        return msg;
    }
    for field in desc.fields() {
        if field.containing_oneof().is_some_and(|o| {
            o.fields()
                .next()
                .is_some_and(|f| f.number() != field.number())
        }) {
            continue; // one member of a oneof is enough
        }
        let single = match field.kind() {
            Kind::String => Value::String(if field.name().ends_with("office_id") {
                CUSTOMS.into()
            } else {
                "x1".into()
            }),
            Kind::Bytes => Value::Bytes(vec![7u8; 32].into()),
            Kind::Bool => Value::Bool(false),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64(if field.name() == "seconds" {
                    1_800_000_000
                } else {
                    1
                })
            }
            Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
            Kind::Float => Value::F32(1.0),
            Kind::Double => Value::F64(1.0),
            Kind::Enum(_) => Value::EnumNumber(1),
            Kind::Message(m) => Value::Message(filled(&m, depth - 1)),
        };
        if field.is_map() {
            continue;
        }
        let value = if field.is_list() {
            Value::List(vec![single])
        } else {
            single
        };
        msg.set_field(&field, value);
    }
    msg
}

/// Applies `f` to every field of `msg` and its nested messages.
fn each_field(
    msg: &mut DynamicMessage,
    f: &mut impl FnMut(&prost_reflect::FieldDescriptor, &mut Value),
) {
    let fields: Vec<_> = msg.descriptor().fields().collect();
    for field in fields {
        if !msg.has_field(&field) {
            continue;
        }
        let mut value = msg.get_field(&field).into_owned();
        match &mut value {
            Value::Message(inner) => each_field(inner, f),
            Value::List(items) => {
                for item in items.iter_mut() {
                    if let Value::Message(inner) = item {
                        each_field(inner, f);
                    }
                }
            }
            _ => {}
        }
        f(&field, &mut value);
        msg.set_field(&field, value);
    }
}

/// The bad requests for `method`, named: its own, and for a stream of commands (a
/// request whose oneof members are command requests with a `meta`, i.e. `Import`), every
/// command's bad requests sent as an item, expecting the codes of the unary RPC.
fn all_bad_requests(
    method: &MethodDescriptor,
    case_id: &str,
    n: &mut u64,
) -> Vec<(String, Vec<u8>, &'static [Code])> {
    let input = method.input();
    let mut out: Vec<(String, Vec<u8>, &'static [Code])> = bad_requests(&input, case_id, n)
        .into_iter()
        .map(|(what, body, codes)| (what.to_owned(), body, codes))
        .collect();
    for field in input.fields() {
        let Kind::Message(command) = field.kind() else {
            continue;
        };
        if field.containing_oneof().is_none() || command.get_field_by_name("meta").is_none() {
            continue;
        }
        for (what, body, codes) in bad_requests(&command, case_id, n) {
            let mut item = Vec::new();
            prost::encoding::bytes::encode(field.number(), &body, &mut item);
            out.push((format!("{} item: {what}", field.name()), item, codes));
        }
    }
    out
}

/// The bad requests for a request message `input`, named.
fn bad_requests(
    input: &MessageDescriptor,
    case_id: &str,
    n: &mut u64,
) -> Vec<(&'static str, Vec<u8>, &'static [Code])> {
    const INVALID: &[Code] = &[Code::InvalidArgument];
    // A body the transport cannot decode, or larger than it accepts, is refused before
    // casebus sees it; tonic answers those with its own codes.
    const TRANSPORT: &[Code] = &[
        Code::InvalidArgument,
        Code::Internal,
        Code::OutOfRange,
        Code::ResourceExhausted,
    ];
    let input = input.clone();
    let has_meta = input.get_field_by_name("meta").is_some();
    let mut fresh = || {
        *n += 1;
        format!("bad-{n}")
    };
    let base = |case: &str, request: String| {
        let mut msg = filled(&input, 4);
        if let Some(meta_field) = input.get_field_by_name("meta") {
            let Kind::Message(meta_desc) = meta_field.kind() else {
                unreachable!("meta is a message")
            };
            let mut meta = DynamicMessage::new(meta_desc);
            meta.set_field_by_name("case_id", Value::String(case.into()));
            meta.set_field_by_name("request_id", Value::String(request));
            msg.set_field(&meta_field, Value::Message(meta));
        } else if input.get_field_by_name("case_id").is_some() {
            msg.set_field_by_name("case_id", Value::String(case.into()));
        }
        msg
    };
    let mut out: Vec<(&'static str, Vec<u8>, &'static [Code])> = Vec::new();
    for (name, bad_case) in [
        ("case id with a space and a star", "bad id*"),
        ("case id of 65 characters", &"a".repeat(65)[..]),
        ("case id with a subject separator", "case.x"),
        ("case id with a wildcard", ">"),
        ("case id in Chinese", "案件一"),
    ] {
        let applies = has_meta || input.get_field_by_name("case_id").is_some();
        if applies {
            out.push((name, base(bad_case, fresh()).encode_to_vec(), INVALID));
        }
    }
    if has_meta {
        out.push((
            "request id missing",
            base(case_id, String::new()).encode_to_vec(),
            INVALID,
        ));
        out.push((
            "request id of 129 characters",
            base(case_id, "r".repeat(129)).encode_to_vec(),
            INVALID,
        ));
        out.push((
            "request id with a newline",
            base(case_id, "r\n1".into()).encode_to_vec(),
            INVALID,
        ));
        // Only the meta: the command's payload is missing.
        let mut only_meta = DynamicMessage::new(input.clone());
        let meta = base(case_id, fresh())
            .get_field_by_name("meta")
            .expect("meta")
            .into_owned();
        only_meta.set_field_by_name("meta", meta);
        out.push((
            "payload message missing",
            only_meta.encode_to_vec(),
            INVALID,
        ));
        out.push((
            "meta missing",
            {
                let mut m = base(case_id, fresh());
                m.clear_field_by_name("meta");
                m.encode_to_vec()
            },
            INVALID,
        ));
    }
    // Every enum field out of range.
    let mut enums = base(case_id, fresh());
    let mut any_enum = false;
    each_field(&mut enums, &mut |field, value| {
        if matches!(field.kind(), Kind::Enum(_)) {
            any_enum = true;
            *value = if field.is_list() {
                Value::List(vec![Value::EnumNumber(9999)])
            } else {
                Value::EnumNumber(9999)
            };
        }
    });
    if any_enum {
        out.push(("every enum field 9999", enums.encode_to_vec(), INVALID));
    }
    // One free-text field past the largest event (248 KiB) but under the transport's
    // limit, so casebus itself must refuse it; then every free-text field at 1 MiB,
    // which the transport may refuse first. Ids stay valid so the size is what is wrong.
    let is_text = |field: &prost_reflect::FieldDescriptor| {
        matches!(field.kind(), Kind::String)
            && !field.name().ends_with("_id")
            && !field.name().ends_with("_number")
            && !field.is_list()
    };
    let mut one = base(case_id, fresh());
    let mut done = false;
    each_field(&mut one, &mut |field, value| {
        if !done && is_text(field) {
            done = true;
            *value = Value::String("长".repeat(300 * 1024 / 3));
        }
    });
    if done {
        out.push(("one text field 300 KiB", one.encode_to_vec(), INVALID));
    }
    let mut huge = base(case_id, fresh());
    let mut any_text = false;
    each_field(&mut huge, &mut |field, value| {
        if is_text(field) {
            any_text = true;
            *value = Value::String("长".repeat(HUGE / 3));
        }
    });
    if any_text {
        out.push((
            "every text field 1 MiB",
            huge.encode_to_vec(),
            TRANSPORT_OR_INVALID,
        ));
    }
    // Every repeated field with 50,000 elements.
    let mut many = base(case_id, fresh());
    let mut any_list = false;
    each_field(&mut many, &mut |field, value| {
        if let Value::List(items) = value
            && let Some(first) = items.first().cloned()
        {
            any_list = true;
            *items = vec![first; MANY];
        }
        let _ = field;
    });
    if any_list {
        out.push((
            "every repeated field 50,000 long",
            many.encode_to_vec(),
            TRANSPORT_OR_INVALID,
        ));
    }
    out.push(("a body that is not protobuf", vec![0xff; 64], TRANSPORT));
    out.push((
        "a body of 5 MiB",
        {
            let mut m = base(case_id, fresh());
            if let Some(f) = input
                .fields()
                .find(|f| matches!(f.kind(), Kind::String) && !f.is_list())
            {
                m.set_field(&f, Value::String("x".repeat(5 * 1024 * 1024)));
            }
            let mut bytes = m.encode_to_vec();
            if bytes.len() < 5 * 1024 * 1024 {
                // No top-level string: pad with an unknown length-delimited field 999.
                let pad = vec![b'x'; 5 * 1024 * 1024];
                prost::encoding::bytes::encode(999, &pad, &mut bytes);
            }
            bytes
        },
        TRANSPORT,
    ));
    out
}

/// A huge repeated field may be refused by casebus or, past 4 MiB, by the transport.
const TRANSPORT_OR_INVALID: &[Code] = &[
    Code::InvalidArgument,
    Code::OutOfRange,
    Code::ResourceExhausted,
];

/// The binary serving the services of `package`.
fn office_of(package: &str) -> Option<&'static str> {
    match package {
        "casebus.customs.v1" => Some(CUSTOMS),
        "casebus.ip_center.v1" => Some(IPC),
        "casebus.public_security.v1" => Some(POLICE),
        "casebus.procuratorate.v1" => Some(PROC),
        "casebus.court.v1" => Some(COURT),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_bad_input_with_invalid_argument_and_writes_nothing() {
    let generation = generations().remove(0);
    let server = generation.start_server().await;
    let urls = vec![server.url()];
    let bus = open_bus(&urls, "grpc-fuzz", 1).await;
    let stage = Stage::new(urls.clone());
    let mut agencies: BTreeMap<&'static str, Service> = BTreeMap::new();
    for office in OFFICES {
        agencies.insert(office, stage.agency(office).await);
    }
    let mut gateway = stage.gateway("fuzz").await;
    let reader = stage.token(CUSTOMS, &[Role::Reader]);

    // Each office opens a case of its own, the target of the well-formed parts.
    for (office, service) in &agencies {
        let case_id = format!("grpc-{}", office.split(':').next().unwrap_or("x"));
        AgencyServiceClient::new(service.authed(Some(&service.token)))
            .open_case(OpenCaseRequest {
                meta: Some(CommandMeta {
                    case_id: case_id.clone(),
                    request_id: "open".into(),
                    ..Default::default()
                }),
                case_opened: Some(CaseOpened {
                    case_type: CaseType::CounterfeitTrademark as i32,
                    title: "target of bad requests".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|s| panic!("{office} opens {case_id}: {s:?}"));
    }

    let pool = DescriptorPool::decode(casebus_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut n = 0;
    let mut rpcs = 0;
    let mut requests = 0;
    let mut violations = Vec::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for service in pool.services() {
        let package = service.package_name().to_owned();
        // Which processes serve it, and with which credential.
        let targets: Vec<(String, Authed, String)> = match package.as_str() {
            "casebus.agency.v1" => agencies
                .iter()
                .map(|(o, s)| {
                    (
                        o.to_string(),
                        s.authed(Some(&s.token)),
                        format!("grpc-{}", o.split(':').next().unwrap_or("x")),
                    )
                })
                .collect(),
            "casebus.gateway.v1" => vec![(
                "gateway".into(),
                gateway.authed(Some(&reader)),
                "grpc-customs".into(),
            )],
            p => match office_of(p) {
                Some(o) => {
                    let s = &agencies[o];
                    vec![(
                        o.to_string(),
                        s.authed(Some(&s.token)),
                        format!("grpc-{}", o.split(':').next().unwrap_or("x")),
                    )]
                }
                None => continue,
            },
        };
        for method in service.methods() {
            rpcs += 1;
            for (who, channel, case_id) in &targets {
                let before = last_sequence(&bus, CASES_STREAM).await;
                for (what, body, expected) in all_bad_requests(&method, case_id, &mut n) {
                    requests += 1;
                    let status = call(channel.clone(), &method, body).await;
                    *codes.entry(format!("{:?}", status.code())).or_default() += 1;
                    let clear = status.code() == Code::Ok || status.message().len() >= 8;
                    if !expected.contains(&status.code()) || !clear {
                        violations.push(format!(
                            "{who} {}/{}: {what}: {:?} {:?}",
                            service.name(),
                            method.name(),
                            status.code(),
                            status.message().chars().take(160).collect::<String>()
                        ));
                    }
                }
                let after = last_sequence(&bus, CASES_STREAM).await;
                if after != before {
                    violations.push(format!(
                        "{who} {}/{}: bad requests wrote {} messages",
                        service.name(),
                        method.name(),
                        after - before
                    ));
                }
            }
        }
    }
    let mut alive = gateway.is_running();
    for service in agencies.values_mut() {
        alive &= service.is_running();
    }

    let mut figures = Figures::new("bad gRPC input on every RPC", &generation.label);
    figures
        .row("RPCs covered (from the descriptor set)", rpcs)
        .row("bad requests sent", requests)
        .row(
            "answers by code",
            codes
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .row("requests not refused as expected", violations.len())
        .row("every process still running", alive);
    if !violations.is_empty() {
        figures.notes = format!(
            "Not refused as expected:\n\n{}",
            violations
                .iter()
                .map(|v| format!("- {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    figures.write();
    assert!(alive, "a process died under bad input");
    assert!(
        violations.is_empty(),
        "{} bad requests not refused as expected:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
