//! Fleet rollouts, measured on a release kas on PostgreSQL (one replica,
//! started as [`support::fleet::Fleet`] starts replicas) and N simulated
//! agents (default 1,000) that act on manifests: each answers the commit
//! kas sends with a report that it synced, at once and with no object (see
//! [`support::bench::sim::Syncs`]), so that what is timed is kas's own
//! work: sending, recording reports, moving the waves. Agent `i` carries
//! the label `wave=<i mod 10>`; every agent follows the manifest project
//! `bench/apps`, in its config project's top-level group (no grant).
//!
//! The same change (one ConfigMap's data) is timed twice, from the moment
//! its commit exists, followed by `POST /api/v1/projects/…/refresh` so that
//! the poll interval does not count:
//!
//! - **every agent at once**: the commit has no rollout file; it ends when
//!   the last agent reported it synced;
//! - **in 10 waves**: the commit adds `.tether/rollout.yaml`, ten waves of
//!   equal size (`match_labels: {wave: "i"}`, soak 0s, `agent_timeout:
//!   5m`); it ends when the rollout, read every 50 ms through the REST API,
//!   is `completed`.
//!
//! Reported for each: the time (for the waves, minus the soaks, which are
//! 0 here: all of it is orchestration overhead; per wave, a tenth; its
//! ratio to every agent at once says what the waves cost), kas's CPU (CPU
//! time over wall time) and RSS, and PostgreSQL transactions per second
//! in kas's database (`xact_commit + xact_rollback` of `pg_stat_database`).
//! Then, wave by wave: when its agents got the commit and reported it
//! (from the agents' side, exact), the gap from one wave's last report to
//! the next wave's first send (the driver's tick, its read of the reports,
//! the gate waking every follower), and when polling saw the wave pass
//! (±50 ms).
//!
//! What the figures carry: idle PostgreSQL backends publish their counts
//! up to 10 s late, so each run's transactions are read 11 s after its end,
//! less what kas does at rest over those seconds (measured before the
//! runs); the 50 ms reads of the rollout view (every agent of the rollout
//! in each answer) are kas's work too, so their cost alone is printed; the
//! simulated agents run in this process, on the machine kas runs on.
//!
//! Run: `cargo build --release --bins && cargo bench -p tether-e2e --bench
//! rollouts -- 1000` (the number of agents; default 1000). Needs what the
//! replicas bench needs: PostgreSQL and HAProxy
//! (`scripts/install-services.sh`). Prints figures; asserts nothing about
//! them.
//!
//! With `--tracing=off,default,all` it measures instead what tracing costs
//! (each mode on a fresh kas, in the order given, in one run): kas exports
//! to a Jaeger v2 (`scripts/observability-tools.sh`) over OTLP/HTTP, with
//! no endpoint (`off`), with Tether's default sampler (`default`: one
//! trace in ten) or with every trace sampled (`all`); each mode times the
//! agents' connection and first sync, and three commits sent to every
//! agent at once (the median), with kas's CPU and RSS.

use tether_e2e as support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use support::bench::sim::{self, Endpoints, Event, Options, Synced, Syncs};
use support::bench::{Labels, cpu_time, memory_kib, ms, register_labelled_agents};
use support::fleet::Fleet;
use tether_cli::client::{ApiClient, segment};
use tether_credentials::Token;
use tether_testenv::git::{commit, new_repo};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Waves of the rollout, of equal size: agent `i` is in wave `i mod WAVES`.
const WAVES: usize = 10;
const CONFIG_PROJECT: &str = "bench/config";
/// In the config project's top-level group, so that its agents may read it
/// without a grant.
const MANIFEST_PROJECT: &str = "bench/apps";
const MANIFEST_PATH: &str = "manifests/web.yaml";
/// How often the rollout is read, for its end and its waves' progress.
const POLL: Duration = Duration::from_millis(50);
/// Handshakes in flight at once while the fleet connects, as a fleet
/// reconnecting after a kas restart is spread by its backoff jitter.
const CONCURRENT_HANDSHAKES: usize = 64;
/// Longest wait for the fleet's first sync, or for one run to end.
const STEP_DEADLINE: Duration = Duration::from_secs(300);
/// Idle PostgreSQL backends publish their statistics up to 10 s late
/// (`PGSTAT_IDLE_INTERVAL`): a run's transactions are read this long
/// after its end.
const STATS_FLUSH: Duration = Duration::from_secs(11);
/// Quiet after the connect storm and the first sync, so that their
/// transactions are published before anything is counted.
const SETTLE: Duration = Duration::from_secs(15);
/// kas and PostgreSQL at rest are measured over this long.
const REST: Duration = Duration::from_secs(10);
/// kas's CPU with only the bench reading the rollout view, over this long.
const POLL_COST: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(1000);
    anyhow::ensure!(n >= WAVES, "give at least {WAVES} agents, one per wave");
    tether_runtime::limits::raise_open_files()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(modes) =
        std::env::args().find_map(|a| a.strip_prefix("--tracing=").map(str::to_owned))
    {
        return tracing_cost(&runtime, n, &modes);
    }
    let mut bench = Bench::start(&runtime, n, &[])?;
    let rest = bench.at_rest();
    let at_once = bench.every_agent_at_once(&runtime, &rest)?;
    let waves = bench.in_waves(&runtime, &rest)?;
    print(n, &rest, &at_once, &waves);
    bench.stop();
    Ok(())
}

/// kas on PostgreSQL, its projects, and the simulated fleet following
/// them, every agent on the manifest project's first commit.
struct Bench {
    /// From the first agent's dial to every agent's report of the first
    /// commit.
    connected: Duration,
    fleet: Fleet,
    api: ApiClient,
    /// The manifest project's repository.
    apps: PathBuf,
    /// kas's database, as `pg_stat_database` names it.
    database: String,
    pid: u32,
    sims: Sims,
}

impl Bench {
    fn start(runtime: &tokio::runtime::Runtime, n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        // One replica, so that kas's figures are one process's; polling
        // only when refreshed, so that what is timed starts at the refresh.
        let mut args = vec!["--poll-interval", "10m"];
        args.extend_from_slice(extra);
        let fleet = Fleet::start(1, &args);
        let database = fleet
            .database
            .rsplit('/')
            .next()
            .context("the database URL names no database")?
            .to_owned();
        let pid = fleet.replicas[0]
            .kas
            .as_ref()
            .map(|kas| kas.child.id())
            .context("kas is not running")?;
        let names: Vec<String> = (0..n).map(|i| format!("sim-{i:05}")).collect();

        // Every agent's config in one commit: the manifest project, all
        // its files under manifests/.
        let config = fleet.dir.path().join("config-repo");
        new_repo(&config);
        let text = format!(
            "gitops:\n  manifest_projects:\n  - id: {MANIFEST_PROJECT}\n    paths: [{{glob: 'manifests/*.yaml'}}]\n"
        );
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!(".gitlab/agents/{name}/config.yaml"))
            .collect();
        let files: Vec<(&str, Option<&str>)> = paths
            .iter()
            .map(|path| (path.as_str(), Some(text.as_str())))
            .collect();
        commit(&config, &files);
        let apps = fleet.dir.path().join("apps-repo");
        new_repo(&apps);
        let first = commit(&apps, &[(MANIFEST_PATH, Some(config_map("1").as_str()))]);

        let admin = Token::parse(
            std::fs::read_to_string(fleet.admin_token_file())
                .context("kas's admin token")?
                .trim(),
        )?;
        let api = ApiClient::new(&format!("http://{}", fleet.replicas[0].api), &admin)?;
        let agents: Vec<(String, Labels)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let labels = Labels::from([("wave".to_owned(), (i % WAVES).to_string())]);
                (name.clone(), labels)
            })
            .collect();
        let registering = Instant::now();
        let tokens = runtime.block_on(async {
            for (id, repo) in [(CONFIG_PROJECT, &config), (MANIFEST_PROJECT, &apps)] {
                let url = repo
                    .to_str()
                    .context("a repository path that is not UTF-8")?;
                api.post("/api/v1/projects", json!({ "id": id, "url": url }))
                    .await?;
            }
            register_labelled_agents(&api, &agents, CONFIG_PROJECT).await
        })?;
        eprintln!(
            "{n} agents registered in {:.1} s",
            registering.elapsed().as_secs_f64()
        );

        // The agents dial the replica itself: HAProxy would only add a hop.
        let ca = std::fs::read(fleet.ca()).context("kas's CA")?;
        let endpoints = Arc::new(Endpoints::new(
            vec![fleet.replicas[0].agent],
            &ca,
            "127.0.0.1",
        )?);
        let options = Options {
            tunnel: None,
            handshakes: Some(Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES))),
        };
        let (reported, reports) = mpsc::unbounded_channel();
        let (events, sessions) = mpsc::unbounded_channel();
        let connecting = Instant::now();
        let tasks = tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                runtime.spawn(sim::syncing_agent(
                    i,
                    token,
                    endpoints.clone(),
                    options.clone(),
                    Syncs {
                        reported: reported.clone(),
                    },
                    events.clone(),
                ))
            })
            .collect();
        let mut sims = Sims {
            n,
            reports,
            sessions,
            first: HashMap::new(),
            failed: 0,
            ended: 0,
            tasks,
        };
        runtime.block_on(sims.wait_all(&first, STEP_DEADLINE))?;
        let connected = connecting.elapsed();
        eprintln!(
            "{n} agents connected and synced the first commit in {:.1} s",
            connected.as_secs_f64()
        );
        Ok(Bench {
            connected,
            fleet,
            api,
            apps,
            database,
            pid,
            sims,
        })
    }

    /// kas and PostgreSQL with every agent connected and nothing to do.
    fn at_rest(&mut self) -> Rest {
        std::thread::sleep(SETTLE);
        let meter = Meter::start(self.pid, &self.database);
        std::thread::sleep(REST);
        let cpu_percent = meter.cpu_percent();
        let transactions = transactions(&self.database).saturating_sub(meter.transactions);
        self.sims.take();
        Rest {
            cpu_percent,
            transactions_per_second: transactions as f64 / meter.at.elapsed().as_secs_f64(),
        }
    }

    /// A commit without a rollout file: every agent is sent it at once.
    fn every_agent_at_once(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        rest: &Rest,
    ) -> anyhow::Result<AtOnce> {
        self.at_once_with(runtime, rest, "2")
    }

    /// A commit setting the ConfigMap to `version`, to every agent at once.
    fn at_once_with(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        rest: &Rest,
        version: &str,
    ) -> anyhow::Result<AtOnce> {
        let head = commit(
            &self.apps,
            &[(MANIFEST_PATH, Some(config_map(version).as_str()))],
        );
        let ended_before = self.sims.ended;
        let meter = Meter::start(self.pid, &self.database);
        runtime.block_on(self.refresh())?;
        runtime.block_on(self.sims.wait_all(&head, STEP_DEADLINE))?;
        let end = Instant::now();
        let spent = meter.spent();
        let last_reported = latest(&self.sims.times(&head)).saturating_duration_since(meter.at);
        let transactions = meter.transactions(end, rest);
        Ok(AtOnce {
            last_reported,
            spent,
            transactions,
            sessions_ended: self.sims.ended - ended_before,
        })
    }

    /// A commit with a rollout file of ten waves.
    fn in_waves(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        rest: &Rest,
    ) -> anyhow::Result<InWaves> {
        let head = commit(
            &self.apps,
            &[
                (".tether/rollout.yaml", Some(rollout_file().as_str())),
                (MANIFEST_PATH, Some(config_map("3").as_str())),
            ],
        );
        let ended_before = self.sims.ended;
        let meter = Meter::start(self.pid, &self.database);
        runtime.block_on(self.refresh())?;
        let seen = runtime.block_on(self.watch_rollout(&head, meter.at))?;
        let spent = meter.spent();
        // The driver read every report before it completed the rollout:
        // they are all here, or on their way.
        runtime.block_on(self.sims.wait_all(&head, Duration::from_secs(30)))?;
        let times = self.sims.times(&head);
        let poll_cost_percent = runtime.block_on(self.poll_cost());
        let transactions = meter.transactions(seen.completed, rest);
        let since = |at: Instant| at.saturating_duration_since(meter.at);
        let waves = (0..WAVES)
            .map(|w| {
                let of_wave: Vec<Instant> = times
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % WAVES == w)
                    .filter_map(|(_, at)| *at)
                    .collect();
                WaveFigures {
                    name: seen
                        .waves
                        .get(w)
                        .map(|(name, _)| name.clone())
                        .unwrap_or_default(),
                    agents: seen.waves.get(w).map_or(0, |(_, agents)| *agents),
                    first_got: of_wave.iter().min().map_or(Duration::ZERO, |at| since(*at)),
                    last_reported: of_wave.iter().max().map_or(Duration::ZERO, |at| since(*at)),
                    seen_passed: seen.passed[w].map(since),
                }
            })
            .collect();
        Ok(InWaves {
            seen_started: seen.started.map(since),
            completed: since(seen.completed),
            last_reported: since(latest(&times)),
            spent,
            transactions,
            poll_cost_percent,
            shape: seen.waves,
            waves,
            sessions_ended: self.sims.ended - ended_before,
        })
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let path = format!("/api/v1/projects/{}/refresh", segment(MANIFEST_PROJECT));
        self.api.post(&path, json!({})).await?;
        Ok(())
    }

    fn rollout_path() -> String {
        format!("/api/v1/projects/{}/rollout", segment(MANIFEST_PROJECT))
    }

    /// Reads the rollout every [`POLL`] until the rollout of `head` ends;
    /// what it saw, and when.
    async fn watch_rollout(&mut self, head: &str, since: Instant) -> anyhow::Result<Seen> {
        let path = Self::rollout_path();
        let mut started = None;
        let mut passed = vec![None; WAVES];
        let mut waves = Vec::new();
        let mut last = Value::Null;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sims.take();
            anyhow::ensure!(
                since.elapsed() < STEP_DEADLINE,
                "the rollout of {head} did not end within {STEP_DEADLINE:?}; last seen: {last}"
            );
            // Before the driver's survey sees the new head, the project has
            // no rollout (404) or the one of an older commit.
            let Ok(view) = self.api.get(&path).await else {
                continue;
            };
            if view["commit"] != head {
                continue;
            }
            let now = Instant::now();
            started.get_or_insert(now);
            let shown = view["waves"].as_array().cloned().unwrap_or_default();
            if waves.is_empty() {
                waves = shown
                    .iter()
                    .map(|w| {
                        let name = w["name"].as_str().unwrap_or_default().to_owned();
                        (name, w["agents"].as_array().map_or(0, Vec::len))
                    })
                    .collect();
            }
            for (i, wave) in shown.iter().enumerate().take(WAVES) {
                if wave["phase"] == "passed" {
                    passed[i].get_or_insert(now);
                }
            }
            match view["phase"].as_str().unwrap_or_default() {
                "running" => last = json!({ "summary": view["summary"] }),
                "completed" => {
                    return Ok(Seen {
                        started,
                        passed,
                        completed: now,
                        waves,
                    });
                }
                other => anyhow::bail!(
                    "the rollout of {head} is {other}: {} {}",
                    view["summary"],
                    view["message"]
                ),
            }
        }
    }

    /// kas's CPU while only the bench reads the (completed) rollout, as
    /// often as it did during it, in percent of one core.
    async fn poll_cost(&self) -> f64 {
        let path = Self::rollout_path();
        let (at, cpu) = (Instant::now(), cpu_time(self.pid));
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while at.elapsed() < POLL_COST {
            tick.tick().await;
            let _ = self.api.get(&path).await;
        }
        (cpu_time(self.pid).saturating_sub(cpu)).as_secs_f64() / at.elapsed().as_secs_f64() * 100.0
    }

    /// Stops the agents before kas, so that none is left reconnecting.
    fn stop(self) {
        for task in &self.sims.tasks {
            task.abort();
        }
        drop(self.fleet);
    }
}

/// The simulated fleet as the bench sees it: what its agents reported,
/// and how often a session ended.
struct Sims {
    n: usize,
    reports: mpsc::UnboundedReceiver<Synced>,
    sessions: mpsc::UnboundedReceiver<Event>,
    /// When each agent first reported each commit synced, by commit.
    first: HashMap<String, Vec<Option<Instant>>>,
    /// Reports that said failed (kas could not read the manifests).
    failed: usize,
    /// Sessions that ended: the agent reconnects and is sent its commit
    /// again, which a run's figures then include.
    ended: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Sims {
    fn note(&mut self, report: Synced) {
        if !report.synced {
            self.failed += 1;
            return;
        }
        let n = self.n;
        let times = self
            .first
            .entry(report.commit)
            .or_insert_with(|| vec![None; n]);
        if let Some(first) = times.get_mut(report.agent) {
            first.get_or_insert(report.at);
        }
    }

    /// Takes what arrived so far.
    fn take(&mut self) {
        while let Ok(report) = self.reports.try_recv() {
            self.note(report);
        }
        while let Ok(event) = self.sessions.try_recv() {
            if let Event::Down { .. } = event {
                self.ended += 1;
            }
        }
    }

    fn count(&self, commit: &str) -> usize {
        self.first
            .get(commit)
            .map_or(0, |times| times.iter().flatten().count())
    }

    fn times(&self, commit: &str) -> Vec<Option<Instant>> {
        self.first
            .get(commit)
            .cloned()
            .unwrap_or_else(|| vec![None; self.n])
    }

    /// Waits until every agent reported `commit` synced.
    async fn wait_all(&mut self, commit: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.take();
            if self.count(commit) == self.n {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(report)) => self.note(report),
                Ok(None) => anyhow::bail!("the simulated agents stopped"),
                Err(_) => anyhow::bail!(
                    "{} of {} agents reported {commit} synced within {within:?} ({} failed reports, {} sessions ended)",
                    self.count(commit),
                    self.n,
                    self.failed,
                    self.ended
                ),
            }
        }
    }
}

/// kas's process and kas's database from one moment on.
struct Meter {
    pid: u32,
    database: String,
    at: Instant,
    cpu: Duration,
    rss_kib: f64,
    transactions: u64,
}

impl Meter {
    fn start(pid: u32, database: &str) -> Self {
        Meter {
            pid,
            database: database.to_owned(),
            transactions: transactions(database),
            cpu: cpu_time(pid),
            rss_kib: memory_kib(pid, "VmRSS"),
            at: Instant::now(),
        }
    }

    /// kas's CPU since the start, in percent of one core.
    fn cpu_percent(&self) -> f64 {
        cpu_time(self.pid).saturating_sub(self.cpu).as_secs_f64() / self.at.elapsed().as_secs_f64()
            * 100.0
    }

    /// What kas spent from the start until now.
    fn spent(&self) -> Spent {
        Spent {
            cpu_percent: self.cpu_percent(),
            rss_before_kib: self.rss_kib,
            rss_after_kib: memory_kib(self.pid, "VmRSS"),
        }
    }

    /// Transactions from the start until `end` (past): read once idle
    /// backends have published theirs, less what kas does at rest in the
    /// time since `end`.
    fn transactions(&self, end: Instant, rest: &Rest) -> Transactions {
        std::thread::sleep(STATS_FLUSH.saturating_sub(end.elapsed()));
        let counted = transactions(&self.database).saturating_sub(self.transactions) as f64;
        let after = end.elapsed().as_secs_f64();
        let count = (counted - rest.transactions_per_second * after).max(0.0);
        let during = end.saturating_duration_since(self.at).as_secs_f64();
        Transactions {
            count,
            per_second: if during > 0.0 { count / during } else { 0.0 },
        }
    }
}

/// PostgreSQL transactions committed or rolled back so far in `database`
/// (0 if it cannot be read: the figure shows it).
fn transactions(database: &str) -> u64 {
    tether_testenv::shared_postgres()
        .psql(
            "postgres",
            &format!(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{database}'"
            ),
        )
        .ok()
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(0)
}

/// The latest of the times (the start of the clock when none).
fn latest(times: &[Option<Instant>]) -> Instant {
    times
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_else(Instant::now)
}

fn config_map(version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web}}\ndata: {{version: \"{version}\"}}\n"
    )
}

/// Ten waves of equal size by label, no soak: the time of the rollout is
/// all orchestration.
fn rollout_file() -> String {
    let mut text = String::from("waves:\n");
    for w in 0..WAVES {
        text.push_str(&format!(
            "  - name: wave-{w}\n    agents: {{match_labels: {{wave: \"{w}\"}}}}\n    soak: 0s\n"
        ));
    }
    text.push_str("agent_timeout: 5m\n");
    text
}

struct Rest {
    cpu_percent: f64,
    transactions_per_second: f64,
}

struct Spent {
    cpu_percent: f64,
    rss_before_kib: f64,
    rss_after_kib: f64,
}

struct Transactions {
    count: f64,
    per_second: f64,
}

/// What the rollout's reads saw, and when.
struct Seen {
    /// When the rollout of the commit was first seen.
    started: Option<Instant>,
    /// When each wave was first seen passed.
    passed: Vec<Option<Instant>>,
    completed: Instant,
    /// Each wave's name and agents, as kas showed them.
    waves: Vec<(String, usize)>,
}

struct AtOnce {
    /// From the commit to the last agent's report.
    last_reported: Duration,
    spent: Spent,
    transactions: Transactions,
    sessions_ended: usize,
}

struct InWaves {
    seen_started: Option<Duration>,
    completed: Duration,
    last_reported: Duration,
    spent: Spent,
    transactions: Transactions,
    poll_cost_percent: f64,
    shape: Vec<(String, usize)>,
    waves: Vec<WaveFigures>,
    sessions_ended: usize,
}

/// One wave, its times from the commit.
struct WaveFigures {
    name: String,
    agents: usize,
    first_got: Duration,
    last_reported: Duration,
    seen_passed: Option<Duration>,
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rss(spent: &Spent) -> String {
    format!(
        "{:.1} → {:.1} MiB",
        spent.rss_before_kib / 1024.0,
        spent.rss_after_kib / 1024.0
    )
}

fn print(n: usize, rest: &Rest, at_once: &AtOnce, waves: &InWaves) {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "## One commit to {n} simulated agents: every agent at once, and in {WAVES} waves (kas on PostgreSQL)\n"
    );
    println!(
        "| run | commit → last agent reported | commit → rollout completed | per wave | kas CPU | kas RSS | PostgreSQL transactions | tx/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| every agent at once (no rollout file) | {} | – | – | {:.0} % | {} | {:.0} | {:.0} |",
        seconds(at_once.last_reported),
        at_once.spent.cpu_percent,
        rss(&at_once.spent),
        at_once.transactions.count,
        at_once.transactions.per_second,
    );
    println!(
        "| {WAVES} waves of {} (soak 0s) | {} | {} | {} | {:.0} % | {} | {:.0} | {:.0} |",
        n / WAVES,
        seconds(waves.last_reported),
        seconds(waves.completed),
        seconds(waves.completed / WAVES as u32),
        waves.spent.cpu_percent,
        rss(&waves.spent),
        waves.transactions.count,
        waves.transactions.per_second,
    );
    println!(
        "| waves ÷ at once | {:.1}× | {:.1}× | | | | {:.1}× | |",
        ratio(waves.last_reported, at_once.last_reported),
        ratio(waves.completed, at_once.last_reported),
        waves.transactions.count / at_once.transactions.count.max(1.0),
    );
    let beyond = waves.completed.saturating_sub(at_once.last_reported);
    println!(
        "\nOrchestration overhead of the waves (commit → completed, less the soaks: 0 s): {}, {} per wave; {} per wave beyond sending every agent the commit at once.",
        seconds(waves.completed),
        seconds(waves.completed / WAVES as u32),
        seconds(beyond / WAVES as u32),
    );
    if let Some(started) = waves.seen_started {
        println!(
            "The rollout was first seen {:.0} ms after the commit (the driver looks for new heads at every 250 ms tick).",
            ms(started)
        );
    }
    println!(
        "At rest before the runs: kas CPU {:.1} %, PostgreSQL {:.1} tx/s. The bench's reads of the rollout view every {} ms alone, after it completed: kas CPU {:.1} %.",
        rest.cpu_percent,
        rest.transactions_per_second,
        POLL.as_millis(),
        waves.poll_cost_percent,
    );
    let expected = (0..WAVES)
        .map(|w| (n + WAVES - 1 - w) / WAVES)
        .collect::<Vec<_>>();
    let shown: Vec<usize> = waves.shape.iter().map(|(_, agents)| *agents).collect();
    if shown != expected {
        println!(
            "\n**The rollout's waves are not the bench's:** kas showed {:?}, the labels make {expected:?}.",
            waves.shape
        );
    }
    if at_once.sessions_ended + waves.sessions_ended > 0 {
        println!(
            "\n**Sessions ended during the runs** (every agent at once: {}, in waves: {}): those agents reconnected and were sent their commit again.",
            at_once.sessions_ended, waves.sessions_ended
        );
    }

    println!("\n### Wave by wave (ms after the commit)\n");
    println!(
        "| wave | agents | first agent got it | last agent reported | within the wave | gap after the previous wave | seen passed | wave (seen) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut previous_reported = None;
    let mut previous_passed = waves.seen_started;
    for wave in &waves.waves {
        let gap = match previous_reported {
            Some(reported) => format!("{:.0}", ms(wave.first_got.saturating_sub(reported))),
            None => format!("{:.0} (from the commit)", ms(wave.first_got)),
        };
        let seen = match (wave.seen_passed, previous_passed) {
            (Some(passed), Some(before)) => format!("{:.0}", ms(passed.saturating_sub(before))),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {gap} | {} | {seen} |",
            wave.name,
            wave.agents,
            ms(wave.first_got),
            ms(wave.last_reported),
            ms(wave.last_reported.saturating_sub(wave.first_got)),
            wave.seen_passed
                .map_or_else(|| "–".to_owned(), |d| format!("{:.0}", ms(d))),
        );
        previous_reported = Some(wave.last_reported);
        previous_passed = wave.seen_passed;
    }
    println!(
        "\n\"Gap\": from the previous wave's last report to this wave's first agent given the commit (kas records the report, the driver's next tick of 250 ms reads every report, passes the wave and admits the next, every follower decides again). \"Seen\" figures are ±{} ms.",
        POLL.as_millis()
    );
}

/// What tracing costs kas: each of `modes` (`off`, `default`, `all`) on a
/// fresh kas with `n` simulated agents, in one run.
fn tracing_cost(runtime: &tokio::runtime::Runtime, n: usize, modes: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let jaeger = runtime.block_on(tether_testenv::jaeger::Jaeger::start(dir.path()))?;
    let endpoint = format!("http://{}", jaeger.otlp_http);
    let mut rows = Vec::new();
    for mode in modes.split(',') {
        // SAFETY: set while no thread of this process reads the
        // environment: the kas started next inherits it.
        unsafe {
            match mode {
                "all" => std::env::set_var("OTEL_TRACES_SAMPLER", "always_on"),
                _ => std::env::remove_var("OTEL_TRACES_SAMPLER"),
            }
        }
        let extra: Vec<&str> = match mode {
            "off" => vec![],
            "default" | "all" => vec!["--otlp-endpoint", endpoint.as_str()],
            other => anyhow::bail!("tracing mode {other:?}: off, default or all"),
        };
        let before = commit_traces(&jaeger);
        let mut bench = Bench::start(runtime, n, &extra)?;
        let rest = bench.at_rest();
        let mut runs = Vec::new();
        for version in ["2", "3", "4"] {
            runs.push(bench.at_once_with(runtime, &rest, version)?);
        }
        runs.sort_by_key(|r| r.last_reported);
        let median = runs.swap_remove(1);
        let connected = bench.connected;
        // The batch processor sends every 5 s: read until the count holds
        // (kas still running).
        let traces = commit_traces(&jaeger);
        bench.stop();
        rows.push(Row {
            mode: mode.to_owned(),
            connected,
            rest_cpu: rest.cpu_percent,
            run: median,
            traces: traces.saturating_sub(before),
        });
    }
    println!(
        "## What tracing costs kas: {n} simulated agents, one commit to every agent at once (median of 3)\n"
    );
    println!(
        "| tracing | agents connected and first commit synced | commit → last agent reported | kas CPU during the push | kas RSS | kas CPU at rest | commit traces in Jaeger |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} % | {} | {:.1} % | {} |",
            r.mode,
            seconds(r.connected),
            seconds(r.run.last_reported),
            r.run.spent.cpu_percent,
            rss(&r.run.spent),
            r.rest_cpu,
            r.traces
        );
    }
    if let Some(base) = rows.iter().find(|r| r.mode == "off") {
        for r in rows.iter().filter(|r| r.mode != "off") {
            println!(
                "\n{} against off: commit → last report ×{:.2}, kas CPU ×{:.2}",
                r.mode,
                r.run.last_reported.as_secs_f64() / base.run.last_reported.as_secs_f64().max(1e-9),
                r.run.spent.cpu_percent / base.run.spent.cpu_percent.max(1e-9)
            );
        }
    }
    Ok(())
}

/// One tracing mode's figures.
struct Row {
    mode: String,
    connected: Duration,
    rest_cpu: f64,
    run: AtOnce,
    traces: usize,
}

/// How many commit traces (their roots, `commit to agent`) Jaeger holds
/// once the count holds.
fn commit_traces(jaeger: &tether_testenv::jaeger::Jaeger) -> usize {
    support::traces::settled_count(
        jaeger,
        "service=kas&operation=commit%20to%20agent&limit=50000",
    )
}
