//! The manifest commits kas gave one session, per project: what the
//! session's sync reports may speak of.
//!
//! A report's project and commit come from the agent, and an agent token
//! sits in a cluster Secret. Without this record a report could name any
//! commit (an unreviewed pull request's head) and kas would post `success`
//! on it with its own git host token, or pass `?` and `../` into the
//! host's URL. A session accepts a report only for a commit its followers
//! resolved for that project: one they sent, or the one the agent said it
//! had synced when it equals the ref's head (kas then sends nothing, and
//! the agent's reports of it are still true).
//!
//! Followers record a commit before they send it, so a report that
//! answers the send always finds it. Bounded: the last
//! [`COMMITS_PER_PROJECT`] commits of each project the session follows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Commits remembered per project: a report speaks of the commit just
/// sent, or of one a little older that was still syncing when the next
/// arrived.
pub const COMMITS_PER_PROJECT: usize = 8;

/// Shared by a session and its followers. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SentCommits {
    by_project: Arc<Mutex<HashMap<String, VecDeque<String>>>>,
}

impl SentCommits {
    /// Remembers that `commit` of `project` goes (or went) to the agent.
    /// An empty commit stands for a ref that did not resolve: kas sent the
    /// error, and the agent reports it.
    pub fn record(&self, project: &str, commit: &str) {
        let mut by_project = self.lock();
        let commits = by_project.entry(project.to_owned()).or_default();
        if commits.iter().any(|c| c == commit) {
            return;
        }
        if commits.len() >= COMMITS_PER_PROJECT {
            commits.pop_front();
        }
        commits.push_back(commit.to_owned());
    }

    /// Whether `commit` of `project` is one kas gave this session.
    pub fn contains(&self, project: &str, commit: &str) -> bool {
        self.lock()
            .get(project)
            .is_some_and(|commits| commits.iter().any(|c| c == commit))
    }

    /// Forgets the projects the session no longer follows.
    pub fn retain_projects(&self, followed: impl Fn(&str) -> bool) {
        self.lock().retain(|project, _| followed(project));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<String>>> {
        // A map of strings stays consistent even if a holder panicked.
        self.by_project.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recorded_commits_of_that_project_are_known() {
        let sent = SentCommits::default();
        let a = "a".repeat(40);
        sent.record("team/apps", &a);
        assert!(sent.contains("team/apps", &a));
        assert!(!sent.contains("team/other", &a), "another project");
        assert!(!sent.contains("team/apps", &"b".repeat(40)), "never sent");
    }

    #[test]
    fn each_project_keeps_its_last_few_commits() {
        let sent = SentCommits::default();
        let commit = |i: usize| format!("{i:040x}");
        for i in 0..COMMITS_PER_PROJECT + 3 {
            sent.record("team/apps", &commit(i));
            // Recorded again (a resend): no second entry.
            sent.record("team/apps", &commit(i));
        }
        assert!(!sent.contains("team/apps", &commit(2)), "the oldest go");
        for i in 3..COMMITS_PER_PROJECT + 3 {
            assert!(sent.contains("team/apps", &commit(i)), "{i}");
        }
        sent.retain_projects(|p| p != "team/apps");
        assert!(
            !sent.contains("team/apps", &commit(5)),
            "no longer followed"
        );
    }
}
