//! Start-up of an agency service (issue 18 items 1 and 5): the real
//! `casebus-public-security` binary over a `CASES` stream of a given size with 100 open
//! hand-offs addressed to it, timed from spawning the process until it wrote its ready
//! file (which it does once its inbox caught up with the stream), started without a
//! snapshot (the inbox folded from the first message) and with `--inbox-snapshot`
//! (resumed from a snapshot written at the stream's end). Both must list the same 100
//! hand-offs, each with its automatic receipt.
//!
//! The gateway's start-up on the same stream: a gateway follows the stream while it
//! is filled, and at each size it is stopped and started again on its projection,
//! timed until it wrote its ready file and until its projection position reached the
//! stream's last sequence; against that, a gateway started on a fresh projection file
//! (which catches up the whole stream) at the sizes up to [`FRESH_GATEWAY_UP_TO`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebus_bus::{Appender, AppenderConfig, Bus};
use casebus_domain::DeadlineRules;
use casebus_integrity::token::{Audience, Role};
use casebus_integrity::{OfficeEntry, OfficeRegistry, OfficeSigner};
use casebus_proto::OfficeId;
use casebus_proto::agency::v1::agency_service_client::AgencyServiceClient;
use casebus_proto::agency::v1::{HandoffStatus, InboxItem, ListInboxRequest};
use casebus_proto::event::v1::payload::Kind;
use casebus_proto::event::v1::{Agency, HandoffKind, HandoffRequested};

use crate::grpc::{self, Credentials};
use crate::report::{Measurement, Row};
use crate::{append, fixture};

/// The office whose service is started.
const POLICE: &str = "public_security:bench";
/// Cases of the stream; the first [`OPEN_HANDOFFS`] are referred to the police.
const CASES: usize = 1000;
/// Open hand-offs addressed to the started service.
const OPEN_HANDOFFS: usize = 100;
/// Concurrent writers filling the stream.
const WRITERS: usize = 64;
/// Timed starts per configuration; the median counts.
const STARTS: usize = 5;
/// The filling appender's cache budget: room for every case's head at 1M events.
const FILL_CACHE_BYTES: usize = 4 << 30;
/// Ceiling for an inbox to settle after a start.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Starts folding the whole stream at sizes above this one: one, not [`STARTS`]
/// (at 10M events one takes minutes).
const FEW_REBUILDS_ABOVE: u64 = 2_000_000;
/// The largest size at which a gateway on a fresh projection file is timed too.
const FRESH_GATEWAY_UP_TO: u64 = 2_000_000;
/// Ceiling for a gateway to catch up with the stream.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3600);

fn police_signer() -> anyhow::Result<OfficeSigner> {
    Ok(OfficeSigner::from_seed(
        OfficeId::new(POLICE)?,
        "k1",
        [12; 32],
    )?)
}

/// The benchmark registry with the police office.
fn registry() -> anyhow::Result<OfficeRegistry> {
    let mut registry = fixture::registry()?;
    registry.insert_office(OfficeEntry {
        id: OfficeId::new(POLICE)?,
        name: "Benchmark police office".into(),
        keys: vec![police_signer()?.key_entry(time::macros::datetime!(2020-01-01 0:00 UTC))],
        encryption_keys: Vec::new(),
    })?;
    Ok(registry)
}

fn referral() -> Kind {
    Kind::HandoffRequested(HandoffRequested {
        handoff_id: "h1".into(),
        kind: HandoffKind::SuspectedCrimeReferral as i32,
        to_agency: Agency::PublicSecurity as i32,
        to_office_id: POLICE.into(),
        reason: "suspected crime: counterfeit goods in commercial quantity".into(),
        due_at: None,
        evidence_ids: Vec::new(),
        recorded_dues: Vec::new(),
    })
}

/// Appends notes `from..to` (round numbers) to every case; round 0 opens the case and,
/// for the first [`OPEN_HANDOFFS`] cases, refers it to the police.
async fn fill(appender: &Arc<Appender>, from: usize, to: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let appender = appender.clone();
        tasks.push(tokio::spawn(async move {
            for round in from..to {
                for i in (w..CASES).step_by(WRITERS) {
                    let case = fixture::case(i)?;
                    if round == 0 {
                        let open =
                            fixture::request(&case, &format!("open-{i}"), fixture::opened(i))?;
                        appender.append(open).await?;
                        if i < OPEN_HANDOFFS {
                            let refer = fixture::request(&case, &format!("refer-{i}"), referral())?;
                            appender.append(refer).await?;
                        }
                        continue;
                    }
                    let note = fixture::request(
                        &case,
                        &format!("note-{i}-{round}"),
                        fixture::note(i, round),
                    )?;
                    appender.append(note).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The police service's files and its clerk's bearer.
struct Police {
    creds: Credentials,
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    nats_url: String,
    starts: usize,
}

impl Police {
    fn new(nats_url: &str) -> anyhow::Result<Self> {
        let creds = Credentials::write()?;
        police_signer()?.save(&creds.path("police.key"))?;
        registry()?.save(&creds.path("registry.toml"))?;
        let token = creds.issuer.issue(
            Audience::Agency,
            &OfficeId::new(POLICE)?,
            "bench",
            &[Role::Clerk],
            time::OffsetDateTime::now_utc(),
            time::Duration::hours(2),
        )?;
        Ok(Self {
            bearer: format!("Bearer {token}").parse()?,
            creds,
            nats_url: nats_url.into(),
            starts: 0,
        })
    }

    /// Starts the service (with `snapshot`, when given) and returns it once ready, with
    /// the time that took.
    async fn start(
        &mut self,
        snapshot: Option<&Path>,
    ) -> anyhow::Result<(grpc::Process, Duration)> {
        self.starts += 1;
        let path = |name: &str| self.creds.path(name).display().to_string();
        let mut args = vec![
            "--office".into(),
            POLICE.into(),
            "--signing-key".into(),
            path("police.key"),
            "--registry".into(),
            path("registry.toml"),
            "--trusted-issuers".into(),
            path("issuers.toml"),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--nats-url".into(),
            self.nats_url.clone(),
        ];
        if let Some(snapshot) = snapshot {
            args.push("--inbox-snapshot".into());
            args.push(snapshot.display().to_string());
        }
        // A ready file of its own: a killed service leaves its file behind.
        let ready = self.creds.path(&format!("police-{}.ready", self.starts));
        let started = Instant::now();
        let process = grpc::start("casebus-public-security", &args, &ready).await?;
        Ok((process, started.elapsed()))
    }

    /// The inbox once it lists [`OPEN_HANDOFFS`] acknowledged hand-offs at the stream's
    /// last sequence.
    async fn settled(&self, process: &grpc::Process, bus: &Bus) -> anyhow::Result<Vec<InboxItem>> {
        let channel = grpc::channel(process.grpc()?).await?;
        let js = Bus::context(bus.client().clone(), &Default::default());
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let last = js
                .get_stream("CASES")
                .await?
                .info()
                .await?
                .state
                .last_sequence;
            let mut request = tonic::Request::new(ListInboxRequest::default());
            request
                .metadata_mut()
                .insert("authorization", self.bearer.clone());
            let inbox = AgencyServiceClient::new(channel.clone())
                .list_inbox(request)
                .await?
                .into_inner();
            let acknowledged = inbox
                .items
                .iter()
                .filter(|i| i.status == HandoffStatus::Acknowledged as i32)
                .count();
            if inbox.position == last && acknowledged == OPEN_HANDOFFS {
                return Ok(inbox.items);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the police inbox did not settle: {acknowledged} of {} items acknowledged at position {} of {last}",
                inbox.items.len(),
                inbox.position
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The median of `times`.
fn median(times: &[Duration]) -> Duration {
    let mut times = times.to_vec();
    times.sort();
    times[times.len() / 2]
}

/// `times` in milliseconds, in the order measured.
fn listed(times: &[Duration]) -> String {
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
        .collect();
    ms.join(", ")
}

/// One size's start-up times ([`STARTS`] each): without and with a snapshot.
struct Measured {
    events: u64,
    rebuilt: Vec<Duration>,
    resumed: Vec<Duration>,
}

/// Measures start-up at `events` (the stream's size) on the stream of `bus`.
async fn measure(police: &mut Police, bus: &Bus, events: u64) -> anyhow::Result<Measured> {
    let snapshot: PathBuf = police.creds.path("police.inbox");
    // Warm-up: the receipts consumer handles the stream (the first time, issuing the
    // receipts), and a graceful stop writes the snapshot at the stream's end.
    let (warm, _) = police.start(Some(&snapshot)).await?;
    police.settled(&warm, bus).await?;
    warm.stop().await?;

    let mut rebuilt = Vec::new();
    let mut expected = None;
    let rebuilds = if events > FEW_REBUILDS_ABOVE {
        1
    } else {
        STARTS
    };
    for _ in 0..rebuilds {
        let (process, took) = police.start(None).await?;
        let items = police.settled(&process, bus).await?;
        rebuilt.push(took);
        expected.get_or_insert(items);
        drop(process);
    }
    let mut resumed = Vec::new();
    for n in 0..STARTS {
        let copy = police
            .creds
            .path(&format!("police-copy-{events}-{n}.inbox"));
        std::fs::copy(&snapshot, &copy)?;
        let (process, took) = police.start(Some(&copy)).await?;
        let items = police.settled(&process, bus).await?;
        anyhow::ensure!(
            Some(&items) == expected.as_ref(),
            "the inbox resumed from the snapshot differs from the rebuilt one"
        );
        resumed.push(took);
        drop(process);
    }
    Ok(Measured {
        events,
        rebuilt,
        resumed,
    })
}

/// A gateway process of the start-up rows, on the police service's credentials (the
/// same registry and token issuers).
struct Gateway {
    nats_url: String,
    starts: usize,
}

impl Gateway {
    /// Starts a gateway on the projection file `db` and returns it once it wrote its
    /// ready file, with the time that took.
    async fn start(
        &mut self,
        creds: &grpc::Credentials,
        db: &Path,
    ) -> anyhow::Result<(grpc::Process, Duration)> {
        self.starts += 1;
        let path = |name: &str| creds.path(name).display().to_string();
        let args = vec![
            "--db".into(),
            db.display().to_string(),
            "--consumer-name".into(),
            format!(
                "gw-startup-{}",
                db.file_stem().and_then(|s| s.to_str()).unwrap_or("db")
            ),
            "--registry".into(),
            path("registry.toml"),
            "--trusted-issuers".into(),
            path("issuers.toml"),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--nats-url".into(),
            self.nats_url.clone(),
        ];
        let ready = creds.path(&format!("gateway-{}.ready", self.starts));
        let started = Instant::now();
        let process = grpc::start("casebus-gateway", &args, &ready).await?;
        Ok((process, started.elapsed()))
    }

    /// Waits until `process`'s projection position reached `last`.
    async fn caught_up(process: &grpc::Process, last: u64) -> anyhow::Result<()> {
        let metrics: std::net::SocketAddr = process.ready["metrics"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the gateway's ready file has no metrics address"))?
            .parse()?;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let position =
                crate::tlog::metric(metrics, "casebus_gateway_projection_position").await;
            if position >= last {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway projected {position} of {last} messages"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One size's gateway start-up times: restarted on its projection (to ready, to
/// caught up), and started on a fresh file (to caught up) when measured.
struct GatewayMeasured {
    events: u64,
    ready: Vec<Duration>,
    caught_up: Vec<Duration>,
    fresh: Option<Duration>,
}

/// Stops the live gateway `live` (caught up first) and times [`STARTS`] starts on its
/// projection; returns the last one, to follow the next fill, with the times.
async fn measure_gateway(
    gateway: &mut Gateway,
    creds: &grpc::Credentials,
    live: grpc::Process,
    last: u64,
) -> anyhow::Result<(grpc::Process, GatewayMeasured)> {
    let db = creds.path("live.db");
    Gateway::caught_up(&live, last).await?;
    live.stop().await?;
    let (mut ready, mut caught_up) = (Vec::new(), Vec::new());
    let mut running = None;
    for _ in 0..STARTS {
        let started = Instant::now();
        let (process, to_ready) = gateway.start(creds, &db).await?;
        Gateway::caught_up(&process, last).await?;
        caught_up.push(started.elapsed());
        ready.push(to_ready);
        // Stopped gracefully, so the next start finds the projection as a restart after
        // a deployment does.
        if ready.len() < STARTS {
            process.stop().await?;
        } else {
            running = Some(process);
        }
    }
    let fresh = if last <= FRESH_GATEWAY_UP_TO {
        let fresh_db = creds.path(&format!("fresh-{last}.db"));
        let started = Instant::now();
        let (process, _) = gateway.start(creds, &fresh_db).await?;
        Gateway::caught_up(&process, last).await?;
        let took = started.elapsed();
        process.stop().await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", fresh_db.display()));
        }
        Some(took)
    } else {
        None
    };
    let running = running.ok_or_else(|| anyhow::anyhow!("no gateway left running"))?;
    Ok((
        running,
        GatewayMeasured {
            events: last,
            ready,
            caught_up,
            fresh,
        },
    ))
}

/// Runs the start-up rows at `sizes` events (ascending), on one stream grown between
/// them.
pub async fn run(sizes: &[u64]) -> anyhow::Result<Vec<Row>> {
    let (server, bus) = fixture::start_with(registry()?).await?;
    // Every case's head stays cached: at 1M events a case holds 1,000, far beyond the
    // default budget, and an evicted head is read again from the stream on every append.
    let appender = Arc::new(Appender::new(
        bus.clone(),
        fixture::signer()?,
        Arc::new(DeadlineRules::default()),
        AppenderConfig {
            cache_bytes: FILL_CACHE_BYTES,
            ..AppenderConfig::default()
        },
    )?);
    let js = Bus::context(bus.client().clone(), &Default::default());
    let mut police = Police::new(&server.url())?;
    let mut gateway = Gateway {
        nats_url: server.url(),
        starts: 0,
    };
    // The gateway whose restarts are timed follows the stream while it is filled.
    let (mut live, _) = gateway
        .start(&police.creds, &police.creds.path("live.db"))
        .await?;
    let mut rounds = 0;
    let mut measured = Vec::new();
    let mut gateways = Vec::new();
    for &events in sizes {
        // Round 0 writes a case's opening (and referral); every later round a note.
        let target = usize::try_from(events)?;
        let to = target.saturating_sub(CASES + OPEN_HANDOFFS).div_ceil(CASES) + 1;
        let filling = Instant::now();
        fill(&appender, rounds, to).await?;
        rounds = rounds.max(to);
        let stored = append::stream_count(&js, "CASES").await?;
        eprintln!(
            "start-up: stream at {stored} events (filled in {:.1} s)",
            filling.elapsed().as_secs_f64()
        );
        let last = js
            .get_stream("CASES")
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        // The live gateway catches up before the agency's starts are timed, so they
        // do not share the machine with it.
        Gateway::caught_up(&live, last).await?;
        let m = measure(&mut police, &bus, stored).await?;
        eprintln!(
            "start-up at {} events: rebuilt {} ms, resumed {} ms",
            m.events,
            listed(&m.rebuilt),
            listed(&m.resumed)
        );
        measured.push(m);
        let (running, g) = measure_gateway(&mut gateway, &police.creds, live, last).await?;
        live = running;
        eprintln!(
            "gateway start-up at {stored} events: ready {} ms, caught up {} ms, fresh {:?}",
            listed(&g.ready),
            listed(&g.caught_up),
            g.fresh
        );
        gateways.push(g);
    }
    drop(live);
    drop(server);
    let Some(smallest) = measured.first().map(|m| median(&m.resumed)) else {
        return Ok(Vec::new());
    };
    let mut rows: Vec<Row> = measured
        .iter()
        .map(|m| {
            let (resumed, rebuilt) = (median(&m.resumed), median(&m.rebuilt));
            let ratio = resumed.as_secs_f64() / rebuilt.as_secs_f64().max(1e-9);
            Row {
                figure: format!(
                    "agency start-up, {} events, {OPEN_HANDOFFS} open hand-offs: --inbox-snapshot vs rebuilt from the first message",
                    m.events
                ),
                casebus: Measurement::time("ms to ready", m.events, resumed),
                baseline: Some(Measurement::time("ms to ready", m.events, rebuilt)),
                ratio: Some(ratio),
                target: format!(
                    "with the snapshot within 2x of the {} events' start-up",
                    measured[0].events
                ),
                met: resumed.as_secs_f64() <= 2.0 * smallest.as_secs_f64(),
                verified: format!(
                    "median of {} starts resumed ({} ms) and {} rebuilt ({} ms); every start listed the same {OPEN_HANDOFFS} acknowledged hand-offs at the stream's last sequence, resumed or rebuilt",
                    m.resumed.len(),
                    listed(&m.resumed),
                    m.rebuilt.len(),
                    listed(&m.rebuilt)
                ),
            }
        })
        .collect();
    let smallest_gateway = gateways.first().map(|g| median(&g.caught_up));
    for g in &gateways {
        let caught_up = median(&g.caught_up);
        rows.push(Row {
            figure: format!(
                "gateway start-up, {} events: restarted on its projection vs a fresh projection file",
                g.events
            ),
            casebus: Measurement::time("ms to caught up", g.events, caught_up),
            baseline: g
                .fresh
                .map(|fresh| Measurement::time("ms to caught up", g.events, fresh)),
            ratio: g
                .fresh
                .map(|fresh| caught_up.as_secs_f64() / fresh.as_secs_f64().max(1e-9)),
            target: format!(
                "restarted: within 2x of the {} events' restart (reported, the issue sets no gateway target)",
                gateways[0].events
            ),
            met: smallest_gateway
                .is_some_and(|s| caught_up.as_secs_f64() <= 2.0 * s.as_secs_f64()),
            verified: format!(
                "median of {STARTS} restarts: ready after {} ms, projection at the stream's last sequence after {} ms; fresh: {}",
                listed(&g.ready),
                listed(&g.caught_up),
                g.fresh.map_or_else(
                    || format!("not timed above {FRESH_GATEWAY_UP_TO} events"),
                    |f| format!("caught up after {:.0} ms", f.as_secs_f64() * 1000.0)
                )
            ),
        });
    }
    Ok(rows)
}
