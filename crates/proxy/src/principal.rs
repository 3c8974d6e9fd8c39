//! Who is calling the proxy, once their credential is checked.

/// A CI job, identified by a project access token or its CI system's OIDC
/// ID token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiJob {
    /// The kas project id the job belongs to.
    pub project: String,
    /// Branch or tag the job runs for.
    pub git_ref: Option<String>,
    /// Whether that ref is protected: from the ID token's claim, or from
    /// the project token's `protected` flag.
    pub ref_protected: bool,
    pub job_id: String,
    pub environment: Option<String>,
    /// The user who started the job, when the ID token names one.
    pub user: Option<String>,
    /// How the job proved itself, for logs: `project_token:<id>` or the
    /// token issuer.
    pub via: String,
    /// When the credential stops being valid (Unix seconds), if it does.
    pub expires_at: Option<i64>,
}

/// A kas user with a personal access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub memberships: Vec<String>,
    /// When the personal access token expires (Unix seconds), if it does.
    pub expires_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    CiJob(CiJob),
    User(User),
}

impl Principal {
    /// Who, for logs and metrics; never a secret.
    pub fn describe(&self) -> String {
        match self {
            Principal::CiJob(job) => format!("ci_job:{} project:{}", job.job_id, job.project),
            Principal::User(user) => format!("user:{}", user.name),
        }
    }

    /// When the credential stops being valid (Unix seconds), if it does.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Principal::CiJob(job) => job.expires_at,
            Principal::User(user) => user.expires_at,
        }
    }

    /// `ci` or `user`, a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::CiJob(_) => "ci",
            Principal::User(_) => "user",
        }
    }
}
