//! One sync (every object as a tree by namespace and kind, with its
//! health; the drift corrections since) and the difference between two
//! syncs of a manifest project. The sync page shows at most 500 objects.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;

use maud::{Markup, html};
use serde::Deserialize;
use tether_api::{ObjectView, SyncView};

use super::UiState;
use super::layout::state as state_word;
use super::session::Who;
use super::signed_in;
use super::view::{Page, agent_for, config_in_use, not_found, pager, render, short, syncs_of};
use tether_api::segment;
use tether_channel::changed::{self as diff, FileChange, ObjectChange};
use tether_channel::manifests::{self, ManifestSpec};

/// Objects per sync page.
const OBJECTS_PER_PAGE: usize = 500;
/// Changed objects listed on a diff page.
const OBJECT_ROWS: usize = 1_000;
/// Syncs of a project looked through for the ones asked for.
const LOOKED_THROUGH: usize = 50;
/// How long reading (and rendering) both commits' manifests may take.
const FILES_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
pub struct SyncQuery {
    project: String,
    commit: String,
    #[serde(default)]
    page: usize,
}

pub async fn sync(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<SyncQuery>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    agent_for(&state, &session, &name).await?;
    let records = state
        .store
        .sync_history(&name, &query.project, LOOKED_THROUGH)
        .await
        .unwrap_or_default();
    let Some(sync) = syncs_of(records)
        .into_iter()
        .find(|s| s.commit == query.commit)
    else {
        return Err(not_found(&session, "no such sync"));
    };
    let pages = sync.objects.len().div_ceil(OBJECTS_PER_PAGE).max(1);
    let page_no = query.page.min(pages - 1);
    let objects: Vec<&ObjectView> = sync
        .objects
        .iter()
        .skip(page_no * OBJECTS_PER_PAGE)
        .take(OBJECTS_PER_PAGE)
        .collect();
    // namespace → kind → objects
    let mut tree: BTreeMap<&str, BTreeMap<&str, Vec<&ObjectView>>> = BTreeMap::new();
    for o in objects {
        tree.entry(o.namespace.as_deref().unwrap_or("(cluster)"))
            .or_default()
            .entry(o.kind.as_str())
            .or_default()
            .push(o);
    }
    let link = |p: usize| {
        format!(
            "/ui/agents/{}/sync?project={}&commit={}&page={p}",
            segment(&name),
            segment(&query.project),
            query.commit
        )
    };
    let body = html! {
        h1 { "Sync of " (query.project) }
        p { "agent " a href={"/ui/agents/" (segment(&name))} { (name) } " · commit " code { (sync.commit) } " · " (state_word(&sync.state)) " · " (sync.duration_ms) " ms · reported " (sync.reported_at) }
        @if let Some(error) = &sync.error { p class="bad" { (error) } }
        @if !sync.phase.is_empty() && sync.phase != "done" {
            p { "now " (state_word(&sync.phase.replace('_', " "))) " since " (sync.phase_since.as_deref().unwrap_or("-")) }
            @if !sync.waiting.is_empty() {
                ul class="waiting" {
                    @for o in &sync.waiting {
                        li { (o.kind) " " (o.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default()) (o.name) ": " (state_word(&o.health)) " " span class="dim" { (o.message.as_deref().unwrap_or("")) } }
                    }
                }
            }
        }
        @if !sync.health.is_empty() { p { "health: " (sync.health) } }
        @if let Some(id) = &sync.trace_id {
            p class="trace" { "trace " @if let Some(url) = state.trace_link(id) { a href=(url) { code { (id) } } } @else { code { (id) } } }
        }
        p class="dim" { (sync.applied) " applied, " (sync.unchanged) " unchanged, " (sync.pruned) " pruned; " (sync.objects.len()) " objects" }
        @for (namespace, kinds) in &tree {
            details open {
                summary { strong { (namespace) } }
                @for (kind, objects) in kinds {
                    table class="objects" {
                        tr { th colspan="4" { (kind) " (" (objects.len()) ")" } }
                        @for o in objects {
                            tr data-object={(o.kind) "/" (o.name)} {
                                td { (o.name) } td { (o.action) } td { (state_word(&o.health)) } td class="dim" { (o.message.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 { (pager(page_no, pages, "objects", link)) }
        h2 { "Drift corrections" }
        @if sync.drift.is_empty() { p class="dim" { "None since this sync." } }
        @else {
            table id="drift" {
                tr { th { "Object" } th { "Who" } th { "What" } th { "Put back" } th { "At" } }
                @for d in &sync.drift {
                    tr {
                        td { (d.kind) " " (d.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default()) (d.name) }
                        td { (d.who) } td { (d.what) }
                        td { @match &d.error { None => (state_word("success")), Some(e) => span class="bad" { (e) } } }
                        td { (d.at) }
                    }
                }
            }
        }
    };
    Ok(render(
        &format!("Sync of {}", query.project),
        &session,
        body,
    ))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    project: String,
    from: String,
    to: String,
}

/// What changed from one sync of a project to another: its objects, and
/// for the admin the manifests the agent was sent at each commit.
pub async fn diff(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let agent = agent_for(&state, &session, &name).await?;
    let history = syncs_of(
        state
            .store
            .sync_history(&name, &query.project, LOOKED_THROUGH)
            .await
            .unwrap_or_default(),
    );
    // Newest first: the one further down the list is the earlier.
    let position = |commit: &str| history.iter().position(|s| s.commit == commit);
    let (Some(a), Some(b)) = (position(&query.from), position(&query.to)) else {
        return Err(not_found(&session, "no such sync"));
    };
    let (earlier, later) = (&history[a.max(b)], &history[a.min(b)]);
    let changes = diff::objects(earlier, later);
    let files = match session.who {
        Who::Admin => Some(manifest_diff(&state, &agent, &query.project, earlier, later).await),
        Who::User { .. } => None,
    };
    let agent_link = format!("/ui/agents/{}", segment(&name));
    let sync_link = |commit: &str| {
        format!(
            "{agent_link}/sync?project={}&commit={commit}",
            segment(&query.project)
        )
    };
    let body = html! {
        h1 { "Changes in " (query.project) }
        p {
            "agent " a href=(agent_link) { (name) } " · from "
            a href=(sync_link(&earlier.commit)) { code { (short(&earlier.commit)) } } " (" (earlier.reported_at) ") to "
            a href=(sync_link(&later.commit)) { code { (short(&later.commit)) } } " (" (later.reported_at) ")"
        }
        h2 { "Objects" }
        @if changes.is_empty() { p class="dim" id="no-object-changes" { "The same objects, in the same health." } }
        @else {
            p class="dim" { (changes.len()) " object(s) differ" }
            table id="object-changes" {
                tr { th { "Object" } th { "Change" } th { "Health" } th { "Message" } }
                @for change in changes.iter().take(OBJECT_ROWS) { (object_row(change)) }
            }
            @if changes.len() > OBJECT_ROWS {
                p class="wait" { (changes.len() - OBJECT_ROWS) " more changed objects not shown (at most " (OBJECT_ROWS) ")" }
            }
        }
        h2 { "Manifests" }
        @match &files {
            None => p class="dim" { "The manifests' text is shown to the admin." },
            Some(Err(why)) => p class="bad" id="files-error" { (why) },
            Some(Ok(files)) => (file_diffs(files)),
        }
    };
    Ok(render(
        &format!("Changes in {}", query.project),
        &session,
        body,
    ))
}

fn object_row(change: &ObjectChange<'_>) -> Markup {
    let (o, what, health) = match change {
        ObjectChange::Added(o) => (*o, "added", o.health.clone()),
        ObjectChange::Removed(o) => (*o, "removed", "—".to_owned()),
        ObjectChange::Health { before, after } => {
            (*after, "health", format!("{before} → {}", after.health))
        }
        ObjectChange::Applied(o) => (*o, "applied", o.health.clone()),
    };
    html! {
        tr data-object={(o.kind) "/" (o.name)} data-change=(what) {
            td { (o.kind) " " (o.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default()) (o.name) }
            td { (what) } td { (health) } td class="dim" { (o.message.as_deref().unwrap_or("")) }
        }
    }
}

fn file_diffs(files: &diff::Files) -> Markup {
    html! {
        p class="dim" { (files.files.len()) " file(s) changed, " (files.unchanged) " unchanged" }
        @for (file, text) in &files.files {
            details open class="file-diff" data-path=(file.path) {
                summary {
                    code { (file.path) } " "
                    span class="pill" { @match file.change { FileChange::Added => "added", FileChange::Removed => "removed", FileChange::Modified => "modified" } }
                }
                pre class="diff" {
                    @for line in text.lines() {
                        @let class = match line.as_bytes().first() { Some(b'+') if !line.starts_with("+++") => "add", Some(b'-') if !line.starts_with("---") => "del", Some(b'@') => "hunk", _ => "" };
                        span class=(class) { (line) } "\n"
                    }
                }
            }
        }
        @if files.lines_left_out > 0 {
            p class="wait" { (files.lines_left_out) " more lines of diff not shown (at most " (diff::MAX_LINES) ")" }
        }
    }
}

/// The line diff of the files the agent was sent at the two commits,
/// selected and rendered as a sync would (the render cache serves both),
/// or why it cannot be shown.
async fn manifest_diff(
    state: &UiState,
    agent: &tether_store::Agent,
    project: &str,
    earlier: &SyncView,
    later: &SyncView,
) -> Result<diff::Files, String> {
    let config = config_in_use(state, agent)
        .await
        .ok_or("kas has no config of this agent in use: only the objects are compared")?;
    let spec = ManifestSpec::from_config(&config, &agent.config_project)
        .into_iter()
        .find(|s| s.project == project)
        .ok_or("the agent's config no longer names this project: only the objects are compared")?;
    let head = state.repos.subscribe(project);
    let known = head.borrow().source.clone();
    let source = match known {
        Some(source) => source,
        None => {
            state
                .repos
                .refresh(project)
                .await
                .map_err(|e| format!("cannot read {project}: {e}"))?;
            head.borrow()
                .source
                .clone()
                .ok_or_else(|| format!("{project} has not been read yet"))?
        }
    };
    let (kube_version, api_versions) = state.live.cluster_of(&agent.name).unwrap_or_default();
    let rendering = manifests::Rendering {
        renderer: state.renderer.clone().map_err(manifests::NoRenderer::from),
        kube_version,
        api_versions,
    };
    let files_at = |commit: String| {
        let (source, spec, rendering) = (source.clone(), spec.clone(), rendering.clone());
        async move {
            let id = tether_git::CommitId::parse(&commit)
                .ok_or_else(|| format!("{commit} is not a commit id"))?;
            let spec = crate::api::plan::spec_at(agent, &spec, &source, &id)
                .await
                .map_err(|e| e.answer().1)?;
            let files = manifests::collect(
                &spec,
                &source,
                &id,
                &rendering,
                state.repos.remote_bases_allowed(&spec.project).await,
            )
            .await
            .map_err(|e| format!("at {}: {e}", short(&commit)))?;
            Ok::<_, String>(
                files
                    .into_iter()
                    .map(|f| (f.path, f.content))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let both = async {
        tokio::try_join!(
            files_at(earlier.commit.clone()),
            files_at(later.commit.clone())
        )
    };
    let (before, after) = tokio::time::timeout(FILES_TIMEOUT, both)
        .await
        .map_err(|_| "reading the two commits' manifests took too long".to_owned())??;
    Ok(diff::files(&before, &after))
}
