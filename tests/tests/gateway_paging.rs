//! `ListCases` paging through the real gateway binary, tried the way an outsider would:
//! every agency pages with limits 1 and 7 through a store that mixes cases it takes part
//! in with cases it does not, and with sealed openings, under every filter; the union of
//! its pages is exactly what it may see, without duplicates; no page token carries
//! anything readable (no case id, no time, as text, hex or base64); forged, altered,
//! old-format and borrowed tokens are INVALID_ARGUMENT naming `page_token`. The attack
//! that motivated this (a court reader following the tokens of an agency = CUSTOMS
//! listing to recover the ids of customs cases) is run and recovers nothing.

mod gateway_common;

use std::collections::BTreeSet;

use base64::Engine as _;
use tonic::Code;

use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, CaseOpened, CaseType, HandoffKind};
use casebus_proto::gateway::v1::{GetCaseRequest, ListCasesRequest};

use gateway_common::catalogue::handoff;
use gateway_common::*;

/// One case of the store, as the test knows it.
struct Known {
    id: String,
    opener: &'static str,
    sealed_opening: bool,
    participants: BTreeSet<Agency>,
    case_type: CaseType,
}

const CASES: usize = 24;
const OPENERS: [&str; 3] = [CUSTOMS, IPC, POLICE];

/// The secret every title carries: a text filter for it must match only titles the
/// reader may read.
const SECRET: &str = "secret-title";

async fn store(f: &Fixture) -> Vec<Known> {
    let mut known = Vec::new();
    for i in 0..CASES {
        // Scrambled ids, so id order says nothing about creation order.
        let id = format!("PG-{:02}", (i * 7) % CASES);
        let case_id = case(&id);
        let opener = OPENERS[i % OPENERS.len()];
        let sealed_opening = i % 4 == 3;
        let case_type = if i % 2 == 0 {
            CaseType::CounterfeitTrademark
        } else {
            CaseType::PatentInfringement
        };
        f.append(
            opener,
            &case_id,
            Kind::CaseOpened(CaseOpened {
                case_type: case_type as i32,
                title: format!("Goods {i} {SECRET}"),
                ..Default::default()
            }),
            if sealed_opening { sealed() } else { None },
        )
        .await;
        let mut participants = BTreeSet::from([office(opener).agency()]);
        let to = match i % 5 {
            0 => Some(Agency::Court),
            1 if opener != POLICE => Some(Agency::PublicSecurity),
            _ => None,
        };
        if let Some(to) = to {
            let kind = if to == Agency::Court {
                HandoffKind::AssistanceRequest
            } else {
                HandoffKind::SuspectedCrimeReferral
            };
            f.append(opener, &case_id, handoff("h1", kind, to), None)
                .await;
            participants.insert(to);
        }
        known.push(Known {
            id,
            opener,
            sealed_opening,
            participants,
            case_type,
        });
    }
    known
}

/// A filter as the test applies it to what it knows.
struct Filter {
    name: &'static str,
    request: ListCasesRequest,
    keep: Keep,
}

/// Whether a case matches, for a reader office.
type Keep = Box<dyn Fn(&Known, &str) -> bool>;

/// Whether `reader` may read the opening (title and type) of `k`.
fn reads_opening(k: &Known, reader: &str) -> bool {
    !k.sealed_opening || k.opener == reader
}

fn filters() -> Vec<Filter> {
    vec![
        Filter {
            name: "none",
            request: ListCasesRequest::default(),
            keep: Box::new(|_, _| true),
        },
        Filter {
            name: "agency = CUSTOMS",
            request: ListCasesRequest {
                agency: Agency::Customs as i32,
                ..Default::default()
            },
            keep: Box::new(|k, _| k.participants.contains(&Agency::Customs)),
        },
        Filter {
            name: "agency = COURT",
            request: ListCasesRequest {
                agency: Agency::Court as i32,
                ..Default::default()
            },
            keep: Box::new(|k, _| k.participants.contains(&Agency::Court)),
        },
        Filter {
            name: "text",
            request: ListCasesRequest {
                text: SECRET.into(),
                ..Default::default()
            },
            keep: Box::new(reads_opening),
        },
        Filter {
            name: "case_type",
            request: ListCasesRequest {
                case_type: CaseType::PatentInfringement as i32,
                ..Default::default()
            },
            keep: Box::new(|k, reader| {
                reads_opening(k, reader) && k.case_type == CaseType::PatentInfringement
            }),
        },
        Filter {
            name: "has_overdue_handoffs",
            request: ListCasesRequest {
                has_overdue_handoffs: true,
                ..Default::default()
            },
            // No hand-off of the store is overdue yet.
            keep: Box::new(|_, _| false),
        },
    ]
}

/// Every page of a listing, with the tokens handed out on the way.
async fn page_through(
    client: &mut Client,
    request: &ListCasesRequest,
    limit: i32,
) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut tokens) = (Vec::new(), Vec::new());
    let mut token = String::new();
    for _ in 0..=CASES + 1 {
        let page = client
            .list_cases(ListCasesRequest {
                limit,
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("list cases")
            .into_inner();
        assert!(page.cases.len() <= usize::try_from(limit).expect("limit"));
        ids.extend(page.cases.into_iter().map(|c| c.case_id));
        if page.next_page_token.is_empty() {
            return (ids, tokens);
        }
        token = page.next_page_token;
        tokens.push(token.clone());
    }
    panic!("the listing did not end");
}

/// Every readable form of `secret` the test can think of.
fn forms(secret: &str) -> Vec<String> {
    let hex = hex::encode(secret);
    vec![
        secret.to_owned(),
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ]
}

/// Asserts that `token` carries none of `secrets`, as it is or decoded as base64 at any
/// offset, in any of their forms.
fn assert_opaque(token: &str, secrets: &[String]) {
    let mut texts = vec![token.as_bytes().to_vec()];
    for start in 0..token.len().min(8) {
        for engine in [
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
        ] {
            if let Ok(bytes) = engine.decode(token[start..].trim_end_matches('=')) {
                texts.push(bytes);
            }
        }
    }
    for secret in secrets {
        for form in forms(secret) {
            for text in &texts {
                assert!(
                    !text.windows(form.len()).any(|w| w == form.as_bytes()),
                    "page token {token:?} carries {secret:?} as {form:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_agency_pages_through_exactly_what_it_may_see_with_opaque_tokens() {
    let f = Fixture::start().await;
    let known = store(&f).await;
    let mut gateway = f.gateway("gw-paging").await;
    gateway.wait_projected(f.cases_last().await).await;

    // The secrets a token must not carry: every case id and every opening time.
    let admin = f.token(CUSTOMS, &[casebus_integrity::token::Role::Admin]);
    let all = gateway
        .client(Some(&admin))
        .await
        .list_cases(ListCasesRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("admin lists")
        .into_inner();
    assert_eq!(all.cases.len(), CASES, "an admin lists every case");
    let mut secrets: Vec<String> = known.iter().map(|k| k.id.clone()).collect();
    for item in &all.cases {
        let at = item.opened_at.expect("opened_at");
        let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
        secrets.push(nanos.to_string());
        secrets.push(at.seconds.to_string());
    }

    let mut token_lengths = BTreeSet::new();
    let mut hidden_matches = 0;
    for reader in [CUSTOMS, IPC, POLICE, PROC, COURT] {
        let agency = office(reader).agency();
        let mut client = gateway.client(Some(&f.reader(reader))).await;
        for filter in filters() {
            let mut want: Vec<&str> = known
                .iter()
                .filter(|k| k.participants.contains(&agency) && (filter.keep)(k, reader))
                .map(|k| k.id.as_str())
                .collect();
            want.sort_unstable();
            hidden_matches += known
                .iter()
                .filter(|k| !k.participants.contains(&agency) || !reads_opening(k, reader))
                .filter(|k| (filter.keep)(k, k.opener))
                .count();
            for limit in [1, 7] {
                let (ids, tokens) = page_through(&mut client, &filter.request, limit).await;
                let unique: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
                assert_eq!(
                    unique.len(),
                    ids.len(),
                    "{reader} {} limit {limit}: duplicates",
                    filter.name
                );
                assert_eq!(
                    unique.into_iter().collect::<Vec<_>>(),
                    want,
                    "{reader} {} limit {limit}: the union of pages is the visible set",
                    filter.name
                );
                // A page is filled from visible rows: only the last page may be short.
                if limit == 1 {
                    assert_eq!(tokens.len(), want.len().saturating_sub(1));
                }
                for token in &tokens {
                    assert_opaque(token, &secrets);
                    token_lengths.insert(token.len());
                }
            }
        }
    }
    assert!(
        hidden_matches > 0,
        "the store hides cases the filters match"
    );
    assert_eq!(token_lengths.len(), 1, "every token has the same length");
}

#[tokio::test]
async fn the_court_following_customs_filtered_tokens_learns_nothing_of_customs_cases() {
    let f = Fixture::start().await;
    let known = store(&f).await;
    let mut gateway = f.gateway("gw-attack").await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut court = gateway.client(Some(&f.reader(COURT))).await;

    // The attack of the security review: list agency = CUSTOMS with limit 1 and follow
    // the tokens, reading case ids out of them.
    let request = ListCasesRequest {
        agency: Agency::Customs as i32,
        ..Default::default()
    };
    let (ids, tokens) = page_through(&mut court, &request, 1).await;
    let court_and_customs: BTreeSet<&str> = known
        .iter()
        .filter(|k| {
            k.participants.contains(&Agency::Court) && k.participants.contains(&Agency::Customs)
        })
        .map(|k| k.id.as_str())
        .collect();
    assert_eq!(
        ids.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        court_and_customs
    );
    let customs_only: Vec<String> = known
        .iter()
        .filter(|k| !k.participants.contains(&Agency::Court))
        .map(|k| k.id.clone())
        .collect();
    assert!(
        customs_only.len() > CASES / 2,
        "most cases are hidden from the court"
    );
    for token in &tokens {
        assert_opaque(token, &customs_only);
    }
    // A case the court takes no part in stays NOT_FOUND, however it was listed for.
    for id in &customs_only {
        let status = court
            .get_case(casebus_proto::gateway::v1::GetCaseRequest {
                case_id: id.clone(),
            })
            .await
            .expect_err("hidden case");
        assert_eq!(status.code(), Code::NotFound, "{id}");
    }
}

#[tokio::test]
async fn forged_altered_and_borrowed_page_tokens_are_invalid_argument() {
    let f = Fixture::start().await;
    store(&f).await;
    let mut gateway = f.gateway("gw-tokens").await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut customs = gateway.client(Some(&f.reader(CUSTOMS))).await;
    let mut court = gateway.client(Some(&f.reader(COURT))).await;
    let first = |page_token: String| ListCasesRequest {
        limit: 1,
        page_token,
        ..Default::default()
    };
    let token = customs
        .list_cases(first(String::new()))
        .await
        .expect("first page")
        .into_inner()
        .next_page_token;
    assert!(token.starts_with("pt1_"), "{token}");
    assert!(customs.list_cases(first(token.clone())).await.is_ok());

    let mut altered = token.clone().into_bytes();
    let at = altered.len() / 2;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ascii");
    // The old format: "c1" and the hex of "<opened_at>|<case id>".
    let old_format = format!("c1{}", hex::encode("1767225600000000000|PG-00"));
    let forged = format!(
        "pt1_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 232])
    );
    for (label, bad) in [
        ("altered", altered),
        ("old format", old_format),
        ("forged", forged),
        ("truncated", token[..token.len() - 4].to_owned()),
        ("garbage", "not a token".to_owned()),
    ] {
        let status = customs.list_cases(first(bad)).await.expect_err(label);
        assert_eq!(status.code(), Code::InvalidArgument, "{label}");
        assert!(
            status.message().starts_with("invalid page_token: "),
            "{label}: {}",
            status.message()
        );
    }
    // Another caller's token, or the same caller's token under another filter, is no
    // key to anything either.
    let borrowed = court
        .list_cases(first(token.clone()))
        .await
        .expect_err("borrowed");
    assert_eq!(borrowed.code(), Code::InvalidArgument);
    let refiltered = customs
        .list_cases(ListCasesRequest {
            text: SECRET.into(),
            ..first(token)
        })
        .await
        .expect_err("other filter");
    assert_eq!(refiltered.code(), Code::InvalidArgument);
    assert_eq!(
        refiltered.message(),
        borrowed.message(),
        "one reason for every refusal"
    );
}

#[tokio::test]
async fn a_listing_beyond_the_gateways_work_budget_is_resource_exhausted_naming_only_the_budget() {
    let f = Fixture::start().await;
    store(&f).await;
    let budget = ["--list-work-budget".to_owned(), "100".to_owned()];
    let mut gateway = f
        .gateway_with("gw-budget", &f.db("gw-budget"), &budget)
        .await;
    gateway.wait_projected(f.cases_last().await).await;
    let mut customs = gateway.client(Some(&f.reader(CUSTOMS))).await;
    let status = customs
        .list_cases(ListCasesRequest {
            limit: 100,
            text: SECRET.into(),
            ..Default::default()
        })
        .await
        .expect_err("over budget");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "the listing would examine more than this gateway's budget of 100 steps; narrow it with opened_from and opened_to"
    );
    // Only listings are budgeted: the gateway goes on answering.
    let case = customs
        .get_case(GetCaseRequest {
            case_id: "PG-00".into(),
        })
        .await
        .expect("GetCase is answered")
        .into_inner();
    assert!(case.case.is_some());
}
