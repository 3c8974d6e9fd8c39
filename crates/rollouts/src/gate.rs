//! Which commit of a manifest project each agent is given: asked by every
//! manifest follower of every replica before it sends. The answer comes
//! from memory (the rollouts and pins, reloaded from the store when one
//! changes and every few seconds), so a thousand followers woken by one
//! wave cost no query.
//!
//! The rule, in order: a pinned agent gets its pin; an agent that follows
//! another ref than the project's gets what that ref points to; when the
//! head has a rollout, the agent gets what the rollout gives it, or keeps
//! the commit it was last given; a head with no rollout file goes to every
//! agent at once; a head with one waits for the driver to start its
//! rollout, every agent keeping its commit meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_agent_config::rollout::{MAX_ROLLOUT_BYTES, ROLLOUT_PATH};
use tether_git::{CommitId, Source};
use tether_store::{FleetRecord, Store};
use tokio::sync::watch;

use crate::state::{Given, Phase, Pin, Rollout, keys, now_ms};

/// How often every replica reads the rollouts again, in case a change
/// was not told (the feed reconnected).
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// Commits whose rollout file presence is remembered at most.
const MAX_REMEMBERED_FILES: usize = 4096;

/// What a follower sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This commit, and why it rather than the head.
    Give { commit: String, why: String },
    /// Nothing yet: the agent has nothing to keep and the rollout has
    /// not reached it.
    Hold { why: String },
}

/// The rollouts and pins as this replica knows them.
pub struct Fleet {
    /// `None`: rollouts are off, every agent gets its ref's head.
    store: Option<Arc<dyn Store>>,
    known: Mutex<Known>,
    changed: watch::Sender<u64>,
    /// Whether a commit of a project has a rollout file.
    files: Mutex<HashMap<(String, String), bool>>,
    /// Held while one follower reads a file the others then find
    /// remembered: a head that moves under a thousand followers is read
    /// once, not a thousand times at once.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Known {
    rollouts: HashMap<String, Arc<Rollout>>,
    pins: HashMap<(String, String), Pin>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("enabled", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Rollouts off: every agent gets its ref's head (tests of other
    /// things).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Fleet {
            store: None,
            known: Mutex::default(),
            changed: watch::Sender::new(0),
            files: Mutex::default(),
            reading: tokio::sync::Mutex::const_new(()),
        })
    }

    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Fleet {
            store: Some(store),
            known: Mutex::default(),
            changed: watch::Sender::new(0),
            files: Mutex::default(),
            reading: tokio::sync::Mutex::const_new(()),
        })
    }

    /// Bumped whenever a rollout or pin changed: followers decide again.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The rollout of `project` as this replica knows it.
    pub fn rollout(&self, project: &str) -> Option<Arc<Rollout>> {
        self.lock().rollouts.get(project).cloned()
    }

    /// Every rollout this replica knows, by project.
    pub fn rollouts(&self) -> Vec<Arc<Rollout>> {
        let mut all: Vec<_> = self.lock().rollouts.values().cloned().collect();
        all.sort_by(|a, b| a.project.cmp(&b.project));
        all
    }

    /// The pin of `agent` on `project`.
    pub fn pin(&self, project: &str, agent: &str) -> Option<Pin> {
        self.lock()
            .pins
            .get(&(project.to_owned(), agent.to_owned()))
            .cloned()
    }

    /// Every pin, as `(project, agent, pin)`.
    pub fn pins(&self) -> Vec<(String, String, Pin)> {
        let mut all: Vec<_> = self
            .lock()
            .pins
            .iter()
            .map(|((p, a), pin)| (p.clone(), a.clone(), pin.clone()))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Takes `rollout` as the project's current one (the driver here
    /// wrote it), and wakes the followers.
    pub fn put(&self, rollout: Rollout) {
        let project = rollout.project.clone();
        self.lock().rollouts.insert(project, Arc::new(rollout));
        self.bump();
    }

    /// Reads every rollout and pin from the store again; the followers
    /// are woken only when something differs.
    pub async fn reload(&self) -> Result<(), tether_store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let rollouts = store.fleet_records(keys::ROLLOUT).await?;
        let pins = store.fleet_records(keys::PIN).await?;
        let mut fresh = Known::default();
        for record in rollouts {
            match serde_json::from_str::<Rollout>(&record.value) {
                Ok(rollout) => {
                    fresh
                        .rollouts
                        .insert(rollout.project.clone(), Arc::new(rollout));
                }
                Err(e) => {
                    tracing::warn!(key = %record.key, error = %e, "unreadable rollout record")
                }
            }
        }
        for record in pins {
            let Some((project, agent)) = keys::split(keys::PIN, &record.key) else {
                continue;
            };
            if let Ok(pin) = serde_json::from_str::<Pin>(&record.value) {
                fresh
                    .pins
                    .insert((project.to_owned(), agent.to_owned()), pin);
            }
        }
        let differs = {
            let mut known = self.lock();
            // A rollout this replica's driver wrote while the store was
            // read is newer than what was read: keep it (one gone from
            // the store goes).
            for (project, mine) in &known.rollouts {
                if fresh
                    .rollouts
                    .get(project)
                    .is_some_and(|read| read.rev < mine.rev)
                {
                    fresh.rollouts.insert(project.clone(), mine.clone());
                }
            }
            let differs = known.pins != fresh.pins
                || known.rollouts.len() != fresh.rollouts.len()
                || fresh.rollouts.iter().any(|(p, r)| {
                    known.rollouts.get(p).is_none_or(|k| {
                        k.updated_at != r.updated_at || k.phase != r.phase || k.paused != r.paused
                    })
                });
            *known = fresh;
            differs
        };
        if differs {
            self.bump();
        }
        Ok(())
    }

    /// Reloads every [`RELOAD_EVERY`] and whenever `told` says a rollout
    /// or pin changed somewhere, until `stop`.
    pub async fn follow(
        self: Arc<Self>,
        mut told: tokio::sync::mpsc::Receiver<()>,
        mut stop: tether_runtime::Shutdown,
    ) {
        let mut every = tokio::time::interval(RELOAD_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                Some(()) = told.recv() => {}
                _ = stop.signalled() => return,
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot read the rollouts");
            }
        }
    }

    /// The commit `agent` was last given of `project`, as the store
    /// remembers it across reconnects and replicas.
    pub async fn last_given(
        &self,
        project: &str,
        agent: &str,
    ) -> Result<Option<String>, tether_store::StoreError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(None);
        };
        Ok(store
            .fleet_record(&keys::given(project, agent))
            .await?
            .and_then(|r| serde_json::from_str::<Given>(&r.value).ok())
            .map(|g| g.commit)
            .filter(|c| !c.is_empty()))
    }

    /// Remembers that `agent` was given `commit` of `project` (empty: it
    /// follows the project and was given nothing yet), and the paths it
    /// receives.
    pub async fn record_given(&self, project: &str, agent: &str, commit: &str, paths: &[String]) {
        let Some(store) = &self.store else {
            return;
        };
        // A config's project id is checked where it is read, but only
        // warned about: a key must never take another project's prefix.
        if tether_agent_config::ProjectId::new(project).is_err() {
            return;
        }
        let given = Given {
            commit: commit.to_owned(),
            paths: paths.to_vec(),
        };
        let Ok(value) = serde_json::to_string(&given) else {
            return;
        };
        let record = FleetRecord {
            key: keys::given(project, agent),
            value,
            updated_at: now_ms() / 1000,
        };
        if let Err(e) = store.put_fleet_record(record).await {
            tracing::warn!(error = %e, "cannot record the commit the agent was given");
        }
    }

    /// What `agent` is given of `project`, whose ref it follows points to
    /// `head` (`at_head`: that ref is the project's own, so the project's
    /// rollout applies); `has` is the commit it was last given or synced.
    pub async fn decide(
        &self,
        agent: &str,
        project: &str,
        head: &CommitId,
        at_head: bool,
        source: &Source,
        has: Option<&str>,
    ) -> Decision {
        let head_text = head.to_string();
        if self.store.is_none() {
            return give(head_text, "");
        }
        if let Some(pin) = self.pin(project, agent) {
            return give(pin.commit, "pinned by an operator");
        }
        if !at_head {
            return give(head_text, "follows its own ref");
        }
        let rollout = self.rollout(project);
        let base = rollout.as_ref().and_then(|r| r.base.clone());
        let keep = |why: &str| match (has, &base) {
            (Some(commit), _) if !commit.is_empty() => give(commit.to_owned(), why),
            (_, Some(base)) => give(
                base.clone(),
                &format!("{why}; it had no commit: the last rollout's"),
            ),
            _ => Decision::Hold {
                why: format!("{why}, and it was given no commit before"),
            },
        };
        if let Some(rollout) = rollout.as_ref().filter(|r| r.commit == head_text) {
            return match rollout.agents.get(agent) {
                // Pinned when the rollout looked, not now: what a
                // rollout gave it last.
                Some(state) if state.phase == crate::state::AgentPhase::Pinned => {
                    match rollout.phase {
                        Phase::Completed | Phase::Unneeded => give(head_text, "rollout done"),
                        _ => keep(&format!("rollout of {}: unpinned", short(&head_text))),
                    }
                }
                Some(state) => match &state.gets {
                    Some(commit) => give(
                        commit.clone(),
                        &format!("rollout of {}: {}", short(&head_text), state.phase.as_str()),
                    ),
                    None => keep(&format!(
                        "rollout of {}: not reached yet",
                        short(&head_text)
                    )),
                },
                None => match rollout.phase {
                    Phase::Completed | Phase::Unneeded => give(head_text, "rollout done"),
                    Phase::Running => keep(&format!(
                        "rollout of {}: joins it at the driver's next look",
                        short(&head_text)
                    )),
                    _ => keep(&format!(
                        "rollout of {} {}",
                        short(&head_text),
                        rollout.phase.as_str()
                    )),
                },
            };
        }
        match self.has_rollout_file(project, head, source).await {
            Some(false) => give(head_text, "the commit has no rollout file"),
            Some(true) => keep(&format!(
                "the rollout of {} has not started yet",
                short(&head_text)
            )),
            None => keep("its rollout file could not be read"),
        }
    }

    /// Whether `commit` of `project` has a rollout file (`None`: it could
    /// not be read, and kas keeps agents where they are).
    pub async fn has_rollout_file(
        &self,
        project: &str,
        commit: &CommitId,
        source: &Source,
    ) -> Option<bool> {
        let key = (project.to_owned(), commit.to_string());
        if let Some(known) = lock(&self.files).get(&key) {
            return Some(*known);
        }
        let _reading = self.reading.lock().await;
        if let Some(known) = lock(&self.files).get(&key) {
            return Some(*known);
        }
        let (source, at) = (source.clone(), commit.clone());
        let found = tokio::task::spawn_blocking(move || {
            source.read_file(&at, ROLLOUT_PATH, MAX_ROLLOUT_BYTES as u64 + 1)
        })
        .await
        .ok()?;
        // A file over the limit is a file: its rollout says it is invalid.
        let present = match found {
            Ok(file) => file.is_some(),
            Err(tether_git::GitError::TooLarge { .. }) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rollout file");
                return None;
            }
        };
        let mut files = lock(&self.files);
        if files.len() >= MAX_REMEMBERED_FILES {
            files.clear();
        }
        files.insert(key, present);
        Some(present)
    }

    /// Forgets that `agent` follows `project` (its config no longer
    /// names it), so that rollouts stop waiting for it.
    pub async fn forget_given(&self, project: &str, agent: &str) {
        let Some(store) = &self.store else {
            return;
        };
        if let Err(e) = store
            .delete_fleet_record(&keys::given(project, agent))
            .await
        {
            tracing::warn!(error = %e, "cannot forget the commit the agent was given");
        }
    }

    /// Forgets everything of `agent` (it was deleted): its given commits
    /// and pins, so that an agent made again under its name starts afresh.
    pub async fn forget_agent(&self, agent: &str) -> Result<(), tether_store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for prefix in [keys::GIVEN, keys::PIN] {
            for record in store.fleet_records(prefix).await? {
                if keys::split(prefix, &record.key).is_some_and(|(_, a)| a == agent) {
                    store.delete_fleet_record(&record.key).await?;
                }
            }
        }
        Ok(())
    }

    /// Forgets everything of `project` (it was deleted).
    pub async fn forget_project(&self, project: &str) -> Result<(), tether_store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.delete_fleet_record(&keys::rollout(project)).await?;
        for prefix in [keys::given_of(project), format!("{}{project} ", keys::PIN)] {
            for record in store.fleet_records(&prefix).await? {
                store.delete_fleet_record(&record.key).await?;
            }
        }
        self.lock().rollouts.remove(project);
        Ok(())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        lock(&self.known)
    }
}

fn give(commit: String, why: &str) -> Decision {
    Decision::Give {
        commit,
        why: why.to_owned(),
    }
}

fn short(commit: &str) -> &str {
    crate::advance::short(commit)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advance::{self, Candidate};
    use tether_agent_config::rollout::RolloutSpec;

    /// A repository with a commit without a rollout file and one with.
    fn repository(tmp: &tempfile::TempDir) -> (Source, CommitId, CommitId) {
        let repo = tmp.path().join("apps");
        tether_testenv::git::new_repo(&repo);
        let plain = tether_testenv::git::commit(&repo, &[("manifests/a.yaml", Some("a: 1\n"))]);
        let with = tether_testenv::git::commit(
            &repo,
            &[(ROLLOUT_PATH, Some("waves:\n- name: all\n  agents: {}\n"))],
        );
        let source = Source::new(repo.to_str().expect("utf-8"), &tmp.path().join("mirrors"));
        let id = |c: &str| CommitId::parse(c).expect("a commit id");
        (source, id(&plain), id(&with))
    }

    fn commit_of(decision: &Decision) -> Option<&str> {
        match decision {
            Decision::Give { commit, .. } => Some(commit),
            Decision::Hold { .. } => None,
        }
    }

    #[tokio::test]
    async fn the_rule_pin_then_own_ref_then_rollout_then_head() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (source, plain, with) = repository(&tmp);
        let store: Arc<dyn Store> =
            Arc::new(tether_store::SqliteStore::open_in_memory().expect("store"));
        let fleet = Fleet::new(store);
        let old = "a".repeat(40);
        let decide = |head: &CommitId, at_head: bool, has: Option<&'static str>| {
            let (fleet, source, head) = (fleet.clone(), source.clone(), head.clone());
            async move {
                fleet
                    .decide("prod", "team/apps", &head, at_head, &source, has)
                    .await
            }
        };
        // No rollout file: the head, to everyone at once.
        assert_eq!(
            commit_of(&decide(&plain, true, None).await),
            Some(plain.to_string().as_str())
        );
        // A rollout file, no rollout yet: keep what it has, or hold.
        let has: &'static str = Box::leak(old.clone().into_boxed_str());
        assert_eq!(commit_of(&decide(&with, true, Some(has)).await), Some(has));
        assert_eq!(commit_of(&decide(&with, true, None).await), None);
        // Another ref than the project's: that ref's commit.
        assert_eq!(
            commit_of(&decide(&with, false, Some(has)).await),
            Some(with.to_string().as_str())
        );

        let spec: RolloutSpec =
            tether_agent_config::rollout::parse("waves:\n- name: all\n  agents: {}\n")
                .expect("valid")
                .0;
        let candidate = |name: &str| Candidate {
            name: name.into(),
            labels: Default::default(),
            given: Some(old.clone()),
            pinned: None,
        };
        let (mut rollout, _) = advance::start(
            "team/apps",
            &with.to_string(),
            spec,
            vec![candidate("prod"), candidate("other")],
            0,
        );
        rollout.waves[0].parallel = 1;
        rollout.agents.get_mut("other").expect("other").gets = None;
        rollout.agents.get_mut("other").expect("other").phase = crate::state::AgentPhase::Waiting;
        rollout.base = Some("b".repeat(40));
        fleet.put(rollout.clone());
        assert_eq!(
            commit_of(&decide(&with, true, Some(has)).await),
            Some(with.to_string().as_str()),
            "admitted"
        );
        let other = fleet
            .decide("other", "team/apps", &with, true, &source, None)
            .await;
        assert_eq!(
            commit_of(&other),
            Some("b".repeat(40).as_str()),
            "nothing of its own: the base"
        );
        let newcomer = fleet
            .decide("new", "team/apps", &with, true, &source, Some(has))
            .await;
        assert_eq!(
            commit_of(&newcomer),
            Some(has),
            "not in the running rollout: keeps its commit"
        );

        // A pin wins over all.
        fleet.lock().pins.insert(
            ("team/apps".into(), "prod".into()),
            Pin {
                commit: "c".repeat(40),
                at: 0,
            },
        );
        assert_eq!(
            commit_of(&decide(&with, true, Some(has)).await),
            Some("c".repeat(40).as_str())
        );
        fleet.lock().pins.clear();

        // Done: everyone not listed, and anyone pinned when it started,
        // gets the head.
        rollout.phase = Phase::Completed;
        rollout.agents.get_mut("prod").expect("prod").phase = crate::state::AgentPhase::Pinned;
        fleet.put(rollout);
        assert_eq!(
            commit_of(&decide(&with, true, Some(has)).await),
            Some(with.to_string().as_str())
        );
        let newcomer = fleet
            .decide("new", "team/apps", &with, true, &source, Some(has))
            .await;
        assert_eq!(commit_of(&newcomer), Some(with.to_string().as_str()));
    }
}
