//! What a render gives: files of objects, or why not.

/// Why a project's renders failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {}{message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct RenderError {
    /// The chart or kustomization, as the config names it.
    pub what: String,
    /// The file of the repository the message is about, when known.
    pub file: Option<String>,
    pub message: String,
}

/// One file of rendered objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// A name of its own (`helm/<release>.json`, `kustomize/<path>.yaml`),
    /// so that the agent's messages say where an object came from.
    pub path: String,
    pub content: Vec<u8>,
}

/// Everything a project's renders produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub files: Vec<RenderedFile>,
}
