//! The load generator: workers calling one scenario over a few HTTP/2
//! connections, closed-loop (each worker's next call as soon as the last
//! ends) or paced at a fixed total rate ([`pace`]), with latencies
//! measured from each call's scheduled start so a slow server cannot hide
//! queueing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use roster_proto::v1::{
    CreateEmailAddressRequest, CreateUserRequest, GetUserRequest, ListUsersRequest,
    UpdateUserMetadataRequest, UserFilter,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::answers::{Calls, OneUser};
use crate::procfs;

/// What the workers call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Scenario {
    /// GetUser of a random seeded user.
    GetUser,
    /// CreateUser with a username and an email address, no password.
    CreateUser,
    /// CreateUser with a password (argon2id).
    CreateUserWithPassword,
    /// ListUsers, newest first, pages of 20.
    ListUsers,
    /// ListUsers, pages of 20, with a substring `query` naming one user,
    /// whom the page must hold.
    ListUsersQuery,
    /// UpdateUserMetadata of a random user's public metadata.
    UpdateUserMetadata,
    /// CreateEmailAddress on a random user.
    CreateEmailAddress,
    /// 90 % GetUser, 10 % UpdateUserMetadata.
    Mixed,
}

impl Scenario {
    pub const ALL: [Self; 8] = [
        Self::GetUser,
        Self::CreateUser,
        Self::CreateUserWithPassword,
        Self::ListUsers,
        Self::ListUsersQuery,
        Self::UpdateUserMetadata,
        Self::CreateEmailAddress,
        Self::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::GetUser => "get_user",
            Self::CreateUser => "create_user",
            Self::CreateUserWithPassword => "create_user_with_password",
            Self::ListUsers => "list_users",
            Self::ListUsersQuery => "list_users_query",
            Self::UpdateUserMetadata => "update_user_metadata",
            Self::CreateEmailAddress => "create_email_address",
            Self::Mixed => "mixed",
        }
    }

    /// Whether the scenario writes (its baseline is the INSERT server).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Self::CreateUser
                | Self::CreateUserWithPassword
                | Self::UpdateUserMetadata
                | Self::CreateEmailAddress
        )
    }
}

/// Where calls go, and the data they pick from.
#[derive(Clone, Debug)]
pub struct Target {
    pub channels: Vec<Channel>,
    /// Ids of existing users.
    pub ids: Arc<Vec<String>>,
    /// Search terms that match a user each.
    pub queries: Arc<Vec<String>>,
    /// Distinguishes this run's new usernames and addresses from earlier
    /// runs' against the same database.
    pub run: u64,
    /// And from the other turns of this run (`suite --turns`), whose
    /// workers count their calls from zero again.
    pub turn: u32,
}

/// How hard and how long.
#[derive(Clone, Debug)]
pub struct Load {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Calls to measure, when the run ends after a count rather than
    /// `duration` (which then bounds it).
    pub requests: Option<u64>,
    /// Total calls per second across workers; `None` for as fast as the
    /// server answers.
    pub rate: Option<f64>,
    /// The server process, for its CPU time and memory.
    pub server_pid: Option<u32>,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub concurrency: usize,
    pub target_rate: Option<f64>,
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Each turn's, when the server took the load in turns with others.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests_per_second_by_turn: Vec<f64>,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Failed calls by gRPC code (not counted in `requests` or latencies).
    pub errors: BTreeMap<String, u64>,
    /// Server CPU time over the measured window.
    pub server_cpu_seconds: Option<f64>,
    /// The load generator's own CPU time over the measured window: on a
    /// machine the two share, what it takes per call is not the server's.
    pub load_generator_cpu_seconds: Option<f64>,
    pub server_rss_start_mb: Option<f64>,
    pub server_rss_peak_mb: Option<f64>,
    pub server_rss_end_mb: Option<f64>,
}

/// A small, fast generator for picking ids; quality is not a concern.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

struct Worker {
    calls: Calls,
    target: Target,
    random: XorShift,
    id: usize,
    sequence: u64,
}

fn metadata(n: u64) -> prost_types::Struct {
    prost_types::Struct {
        fields: [(
            "bench".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(f64::from(
                    u32::try_from(n % 1_000_000).unwrap_or(0),
                ))),
            },
        )]
        .into(),
    }
}

impl Worker {
    fn random_id(&mut self) -> String {
        let i = self.random.below(self.target.ids.len());
        self.target.ids[i].clone()
    }

    /// One call; why it failed on failure.
    async fn call(&mut self, scenario: Scenario) -> Result<(), Failure> {
        self.sequence += 1;
        match scenario {
            Scenario::GetUser => self.get_user().await,
            Scenario::CreateUser | Scenario::CreateUserWithPassword => {
                let unique = self.unique(scenario);
                let password = if scenario == Scenario::CreateUserWithPassword {
                    "correct horse battery staple".to_owned()
                } else {
                    String::new()
                };
                let answer = self
                    .calls
                    .create_user(CreateUserRequest {
                        email_addresses: vec![format!("{unique}@bench.example")],
                        username: unique,
                        first_name: "Bench".into(),
                        password,
                        ..Default::default()
                    })
                    .await?;
                check(answer.user.is_some_and(|u| !u.id.is_empty()))
            }
            Scenario::ListUsers => {
                let page = self
                    .calls
                    .list_users(ListUsersRequest {
                        page_size: 20,
                        ..Default::default()
                    })
                    .await?;
                check(!page.users.is_empty())
            }
            Scenario::ListUsersQuery => {
                let i = self.random.below(self.target.queries.len());
                let query = self.target.queries[i].clone();
                let page = self
                    .calls
                    .list_users(ListUsersRequest {
                        page_size: 20,
                        filter: Some(UserFilter {
                            query: query.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await?;
                // A search that misses the user it names is counted as a
                // failure (NOT_FOUND), not as a fast answer.
                if page.users.iter().any(|u| u.username == query) {
                    Ok(())
                } else {
                    Err(Failure::Status(tonic::Code::NotFound))
                }
            }
            Scenario::UpdateUserMetadata => self.update_metadata().await,
            Scenario::CreateEmailAddress => {
                let unique = self.unique(scenario);
                let user_id = self.random_id();
                let answer = self
                    .calls
                    .create_email_address(CreateEmailAddressRequest {
                        user_id: user_id.clone(),
                        email_address: format!("{unique}@more.bench.example"),
                        verified: true,
                        primary: false,
                    })
                    .await?;
                check(answer.email_address.is_some_and(|e| e.user_id == user_id))
            }
            Scenario::Mixed => {
                if self.random.below(10) == 0 {
                    self.update_metadata().await
                } else {
                    self.get_user().await
                }
            }
        }
    }

    /// A username no other call of any run uses.
    fn unique(&self, scenario: Scenario) -> String {
        format!(
            "r{}t{}{}w{}n{}",
            self.target.run,
            self.target.turn,
            scenario.name().replace('_', ""),
            self.id,
            self.sequence
        )
    }

    async fn get_user(&mut self) -> Result<(), Failure> {
        let id = self.random_id();
        let answer = self
            .calls
            .get_user(GetUserRequest { id: id.clone() })
            .await?;
        check(is_user(&answer, &id))
    }

    async fn update_metadata(&mut self) -> Result<(), Failure> {
        let user_id = self.random_id();
        let n = self.sequence;
        let answer = self
            .calls
            .update_user_metadata(UpdateUserMetadataRequest {
                user_id: user_id.clone(),
                public_metadata: Some(metadata(n)),
                ..Default::default()
            })
            .await?;
        check(is_user(&answer, &user_id))
    }
}

/// Why a call failed.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The server answered with this code.
    Status(tonic::Code),
    /// The server answered OK about something else than was asked (another
    /// user, or none).
    WrongAnswer,
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status.code())
    }
}

impl Failure {
    /// How the report counts it: gRPC codes by name (`NotFound`, …).
    fn name(&self) -> String {
        match self {
            Self::Status(code) => format!("{code:?}"),
            Self::WrongAnswer => "WrongAnswer".to_owned(),
        }
    }
}

fn check(right: bool) -> Result<(), Failure> {
    if right {
        Ok(())
    } else {
        Err(Failure::WrongAnswer)
    }
}

fn is_user(answer: &OneUser, id: &str) -> bool {
    answer.user.as_ref().is_some_and(|u| u.id == id)
}

/// Latencies in microseconds and errors by code, of one worker.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a sorted sample"
    )]
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn mb(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "megabytes for a report")]
    let mb = bytes as f64 / (1024.0 * 1024.0);
    mb
}

/// Runs `scenario` against `target` under `load`.
pub async fn run(target: &Target, scenario: Scenario, load: &Load) -> Report {
    run_turn(target, scenario, load).await.report()
}

/// Deals the calls due at `rate` a second to `workers` in turn, each as
/// its time comes, from a thread of its own, until `stop`: each receiver
/// gets the instants its worker's calls are due at.
///
/// Tokio's timers fire on the ticks of a millisecond clock, rounded up,
/// so a worker sleeping until its call is due wakes one to two
/// milliseconds late, and a latency measured from the due time counts
/// that too: one user's GetUser, which took 0.19 ms at the median one
/// call at a time, measured 1.91 ms at 200 calls a second (0.58 paced
/// by this thread). A thread sleeping with `std::thread::sleep` wakes
/// within the kernel's timer slack, tens of microseconds. Calls spread
/// over each millisecond rather than sent in a burst at its tick cost
/// more CPU per call, in the server and the load generator alike (both
/// wake for fewer calls at a time): so do calls that arrive at a real
/// service.
fn pace(
    rate: f64,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::sync::mpsc::UnboundedReceiver<Instant>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers.max(1))
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let every = Duration::from_secs_f64(1.0 / rate.max(0.001));
    std::thread::spawn(move || {
        let mut next = Instant::now();
        for worker in (0..senders.len()).cycle() {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            if stop.load(Ordering::Relaxed) || senders[worker].send(next).is_err() {
                break;
            }
            next += every;
        }
    });
    receivers
}

/// What one run measured, before it is summed up: [`Turn::merge`] joins
/// the turns a server took with others into one run.
#[derive(Clone, Debug)]
pub struct Turn {
    scenario: Scenario,
    concurrency: usize,
    rate: Option<f64>,
    /// Latencies of the successful calls, in microseconds, unsorted.
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    server_cpu_seconds: Option<f64>,
    load_generator_cpu_seconds: Option<f64>,
    rss_start: Option<u64>,
    rss_peak: Option<u64>,
    rss_end: Option<u64>,
    /// Calls per second of each turn merged into this one; empty for one turn.
    rates: Vec<f64>,
}

impl Turn {
    /// Calls answered per second.
    pub fn requests_per_second(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a rate")]
        let calls = self.latencies_us.len() as f64;
        if self.seconds > 0.0 {
            calls / self.seconds
        } else {
            0.0
        }
    }

    /// The turns of one server as one run: their calls, errors, seconds
    /// and CPU time added up, memory from the first turn's start to the
    /// last one's end, its peak the highest. `None` for no turns.
    pub fn merge(turns: Vec<Self>) -> Option<Self> {
        let rates: Vec<f64> = if turns.len() > 1 {
            turns.iter().map(Self::requests_per_second).collect()
        } else {
            Vec::new()
        };
        let mut turns = turns.into_iter();
        let mut merged = turns.next()?;
        merged.rates = rates;
        for turn in turns {
            merged.latencies_us.extend(turn.latencies_us);
            for (code, n) in turn.errors {
                *merged.errors.entry(code).or_default() += n;
            }
            merged.seconds += turn.seconds;
            merged.server_cpu_seconds = merged
                .server_cpu_seconds
                .zip(turn.server_cpu_seconds)
                .map(|(a, b)| a + b);
            merged.load_generator_cpu_seconds = merged
                .load_generator_cpu_seconds
                .zip(turn.load_generator_cpu_seconds)
                .map(|(a, b)| a + b);
            merged.rss_peak = merged.rss_peak.max(turn.rss_peak);
            merged.rss_end = turn.rss_end;
        }
        Some(merged)
    }

    pub fn report(mut self) -> Report {
        let requests_per_second = self.requests_per_second();
        let latencies = &mut self.latencies_us;
        latencies.sort_unstable();
        Report {
            scenario: self.scenario,
            concurrency: self.concurrency,
            target_rate: self.rate,
            requests: u64::try_from(latencies.len()).unwrap_or(u64::MAX),
            seconds: self.seconds,
            requests_per_second,
            requests_per_second_by_turn: self.rates,
            p50_ms: percentile(latencies, 50.0),
            p95_ms: percentile(latencies, 95.0),
            p99_ms: percentile(latencies, 99.0),
            max_ms: latencies.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
            errors: self.errors,
            server_cpu_seconds: self.server_cpu_seconds,
            load_generator_cpu_seconds: self.load_generator_cpu_seconds,
            server_rss_start_mb: self.rss_start.map(mb),
            server_rss_peak_mb: self.rss_peak.map(mb),
            server_rss_end_mb: self.rss_end.map(mb),
        }
    }
}

/// Runs `scenario` against `target` under `load`: one turn.
pub async fn run_turn(target: &Target, scenario: Scenario, load: &Load) -> Turn {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // Measured calls so far, and the signal that the count was reached.
    let counted = Arc::new(AtomicU64::new(0));
    let counted_all = Arc::new(tokio::sync::Notify::new());
    let limit = load.requests;
    let mut pacing = load
        .rate
        .map(|rate| pace(rate, load.concurrency, stop.clone()).into_iter());
    let mut workers = Vec::new();
    for id in 0..load.concurrency {
        let mut due = pacing.as_mut().and_then(Iterator::next);
        let channel = target.channels[id % target.channels.len()].clone();
        let mut worker = Worker {
            calls: Calls::new(channel),
            target: target.clone(),
            random: XorShift(
                0x9E37_79B9_7F4A_7C15 ^ ((u64::try_from(id).unwrap_or(0) + 1) * 0x2545_F491),
            ),
            id,
            sequence: 0,
        };
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let (counted, counted_all) = (counted.clone(), counted_all.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let scheduled = match &mut due {
                    Some(due) => match due.recv().await {
                        Some(at) => at,
                        None => break,
                    },
                    None => Instant::now(),
                };
                let outcome = worker.call(scenario).await;
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    if let Some(limit) = limit {
                        let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
                        if n > limit {
                            continue;
                        }
                        if n == limit {
                            stop.store(true, Ordering::Relaxed);
                            counted_all.notify_one();
                        }
                    }
                    // Throughput and latency count successful calls only.
                    match outcome {
                        Ok(()) => {
                            let us =
                                u32::try_from(scheduled.elapsed().as_micros()).unwrap_or(u32::MAX);
                            tally.latencies_us.push(us);
                        }
                        Err(failure) => {
                            *tally.errors.entry(failure.name()).or_default() += 1;
                        }
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep(load.warmup).await;

    let cpu_before = load.server_pid.and_then(procfs::cpu_time);
    let own_cpu_before = procfs::cpu_time(std::process::id());
    let rss_start = load.server_pid.and_then(procfs::rss_bytes);
    let peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let sampler = load.server_pid.map(|pid| {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last_report = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = procfs::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    eprintln!(
                        "  … {:.0}s, server RSS {:.1} MB",
                        window.elapsed().as_secs_f64(),
                        procfs::rss_bytes(pid).map_or(0.0, mb)
                    );
                    last_report = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    tokio::select! {
        () = tokio::time::sleep(load.duration) => {}
        () = counted_all.notified(), if limit.is_some() => {}
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = window.elapsed().as_secs_f64();
    let cpu_after = load.server_pid.and_then(procfs::cpu_time);
    let own_cpu_after = procfs::cpu_time(std::process::id());
    let rss_end = load.server_pid.and_then(procfs::rss_bytes);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }

    let mut latencies = Vec::new();
    let mut errors = BTreeMap::new();
    for worker in workers {
        if let Ok(tally) = worker.await {
            latencies.extend(tally.latencies_us);
            for (code, n) in tally.errors {
                *errors.entry(code).or_default() += n;
            }
        }
    }
    Turn {
        scenario,
        concurrency: load.concurrency,
        rate: load.rate,
        latencies_us: latencies,
        errors,
        seconds,
        server_cpu_seconds: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b.saturating_sub(a)).as_secs_f64()),
        load_generator_cpu_seconds: own_cpu_before
            .zip(own_cpu_after)
            .map(|(a, b)| (b.saturating_sub(a)).as_secs_f64()),
        rss_start,
        rss_peak: load.server_pid.map(|_| peak.load(Ordering::Relaxed)),
        rss_end,
        rates: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_can_end_after_a_count_of_calls() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        tokio::spawn(crate::baseline::serve(
            crate::baseline::Kind::Noop,
            addr,
            None,
            0,
        ));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let mut channel = None;
        for _ in 0..100 {
            if let Ok(c) = endpoint.connect().await {
                channel = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let target = Target {
            channels: vec![channel.expect("the baseline answers")],
            ids: Arc::new(vec![crate::baseline::row_id(0)]),
            queries: Arc::new(vec!["x".to_owned()]),
            run: 1,
            turn: 0,
        };
        let load = Load {
            concurrency: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_mins(2),
            requests: Some(500),
            rate: None,
            server_pid: None,
        };
        let started = Instant::now();
        let report = run(&target, Scenario::GetUser, &load).await;
        assert!(started.elapsed() < Duration::from_mins(1), "ended by count");
        let failed: u64 = report.errors.values().sum();
        assert_eq!(report.requests + failed, 500, "{report:?}");
    }

    #[test]
    fn paced_calls_are_dealt_in_turn_each_when_due() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut due = pace(1000.0, 3, stop.clone());
        let mut dealt = Vec::new();
        for _ in 0..4 {
            for worker in &mut due {
                let at = worker.blocking_recv().unwrap();
                assert!(Instant::now() >= at, "dealt before it was due");
                dealt.push(at);
            }
        }
        for (i, at) in dealt.iter().enumerate() {
            assert_eq!(
                *at - dealt[0],
                Duration::from_millis(u64::try_from(i).unwrap())
            );
        }
        stop.store(true, Ordering::Relaxed);
        for worker in &mut due {
            while worker.blocking_recv().is_some() {}
        }
    }

    #[test]
    fn turns_merge_into_one_run() {
        let turn = |latencies_us: Vec<u32>, seconds, cpu, (start, peak, end)| Turn {
            scenario: Scenario::GetUser,
            concurrency: 32,
            rate: None,
            latencies_us,
            errors: [("Unavailable".to_owned(), 1)].into(),
            seconds,
            server_cpu_seconds: Some(cpu),
            load_generator_cpu_seconds: Some(cpu * 2.0),
            rss_start: Some(start),
            rss_peak: Some(peak),
            rss_end: Some(end),
            rates: Vec::new(),
        };
        let mib = 1024 * 1024;
        let report = Turn::merge(vec![
            turn(
                vec![3000, 1000, 4000],
                1.0,
                0.5,
                (10 * mib, 30 * mib, 20 * mib),
            ),
            turn(vec![2000], 0.5, 0.25, (20 * mib, 25 * mib, 22 * mib)),
        ])
        .unwrap()
        .report();
        assert_eq!(report.requests, 4);
        assert!((report.seconds - 1.5).abs() < 1e-9);
        assert!((report.requests_per_second - 4.0 / 1.5).abs() < 1e-9);
        assert_eq!(report.requests_per_second_by_turn, [3.0, 2.0]);
        assert!((report.p50_ms - 3.0).abs() < 1e-9, "{report:?}");
        assert!((report.max_ms - 4.0).abs() < 1e-9);
        assert_eq!(report.errors["Unavailable"], 2);
        assert_eq!(report.server_cpu_seconds, Some(0.75));
        assert_eq!(report.load_generator_cpu_seconds, Some(1.5));
        assert_eq!(report.server_rss_start_mb, Some(10.0));
        assert_eq!(report.server_rss_peak_mb, Some(30.0));
        assert_eq!(report.server_rss_end_mb, Some(22.0));
        let one = Turn::merge(vec![turn(vec![1000], 1.0, 0.1, (1, 1, 1))]).unwrap();
        assert!(one.report().requests_per_second_by_turn.is_empty());
        assert!(Turn::merge(Vec::new()).is_none());
    }

    #[test]
    fn only_an_answer_about_the_user_asked_for_counts() {
        let answer = |id: Option<&str>| OneUser {
            user: id.map(|id| crate::answers::User {
                id: id.to_owned(),
                username: String::new(),
            }),
        };
        assert!(is_user(&answer(Some("user_1")), "user_1"));
        assert!(!is_user(&answer(Some("user_2")), "user_1"));
        assert!(!is_user(&answer(None), "user_1"));
        assert_eq!(check(false), Err(Failure::WrongAnswer));
        assert_eq!(Failure::WrongAnswer.name(), "WrongAnswer");
        assert_eq!(
            Failure::from(tonic::Status::not_found("gone")).name(),
            "NotFound"
        );
    }

    #[test]
    fn percentiles_pick_ranks() {
        let sample: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert!((percentile(&sample, 50.0) - 50.0).abs() <= 1.0);
        assert!((percentile(&sample, 99.0) - 99.0).abs() <= 1.0);
        assert!((percentile(&sample, 100.0) - 100.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 99.0).abs() < f64::EPSILON);
    }
}
