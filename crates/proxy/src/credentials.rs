//! The proxy's credentials: `Authorization: Bearer <kind>:<agent>:<secret>`,
//! the GitLab agent's convention, where the kind is `ci` (a project access
//! token or the job's OIDC ID token) or `pat` (a user's personal access
//! token). The agent is named in the credential, so one proxy URL serves
//! every agent.

use tether_agent_config::{AgentName, AgentNameError};
use tether_credentials::{Token, TokenKind};
use tether_store::{AccessTokenStatus, TokenOwner};

use super::needs::Credentials;

use super::oidc::Oidc;
use super::principal::{CiJob, Principal, User};
use tether_store::time::to_rfc3339;

/// A parsed credential. Its `Debug` never shows the secret.
pub struct Credential {
    pub kind: Kind,
    /// Checked as the header is read: nothing after it parses the name again.
    pub agent: AgentName,
    secret: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ci,
    Pat,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

/// Why a request is not authenticated.
#[derive(Debug)]
pub enum Refused {
    /// 401, with the reason.
    Unauthorized(String),
    /// 503: kas cannot check credentials now.
    Unavailable,
}

/// Why an `Authorization` header holds no credential the proxy reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("no credentials: send Authorization: Bearer ci:<agent>:<token> or pat:<agent>:<token>")]
    Missing,
    #[error("the Authorization header is not Bearer")]
    NotBearer,
    #[error("the bearer token is not <kind>:<agent>:<token> (kind ci or pat)")]
    Shape,
    #[error("unknown credential kind {0:?}: use ci or pat")]
    Kind(String),
    /// The agent part is not an agent name, so no agent can have it.
    #[error(transparent)]
    Agent(#[from] AgentNameError),
}

impl Credential {
    /// Reads an `Authorization` header value.
    pub fn from_header(value: Option<&str>) -> Result<Self, Unreadable> {
        let value = value.ok_or(Unreadable::Missing)?;
        let (scheme, rest) = value.trim().split_once(' ').ok_or(Unreadable::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Unreadable::NotBearer);
        }
        let mut parts = rest.trim().splitn(3, ':');
        let (Some(kind), Some(agent), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Unreadable::Shape);
        };
        let kind = match kind {
            "ci" => Kind::Ci,
            "pat" => Kind::Pat,
            other => return Err(Unreadable::Kind(other.to_owned())),
        };
        if agent.is_empty() || secret.is_empty() {
            return Err(Unreadable::Shape);
        }
        Ok(Credential {
            kind,
            agent: AgentName::new(agent)?,
            secret: secret.to_owned(),
        })
    }

    /// Who presents this credential at `now`, or why it is refused.
    pub async fn authenticate(
        &self,
        store: &dyn Credentials,
        oidc: &Oidc,
        now: i64,
    ) -> Result<Principal, Refused> {
        match self.kind {
            Kind::Ci if self.secret.starts_with(TokenKind::Project.prefix()) => {
                self.access_token(store, TokenKind::Project, now).await
            }
            Kind::Ci => {
                if !oidc.is_enabled() {
                    return Err(Refused::Unauthorized(
                        "not a project access token, and this kas trusts no OIDC issuer".into(),
                    ));
                }
                oidc.verify(&self.secret, now)
                    .await
                    .map(Principal::CiJob)
                    .map_err(|e| Refused::Unauthorized(e.to_string()))
            }
            Kind::Pat => self.access_token(store, TokenKind::User, now).await,
        }
    }

    async fn access_token(
        &self,
        store: &dyn Credentials,
        kind: TokenKind,
        now: i64,
    ) -> Result<Principal, Refused> {
        let what = match kind {
            TokenKind::Project => "project access token",
            _ => "personal access token",
        };
        let token = Token::parse_kind(&self.secret, kind)
            .map_err(|_| Refused::Unauthorized(format!("malformed {what}")))?;
        let status = store.access_token(&token.hash(), now).await.map_err(|e| {
            tracing::error!(error = ?e, "cannot check an access token");
            Refused::Unavailable
        })?;
        let record = match status {
            AccessTokenStatus::Active(record) => record,
            AccessTokenStatus::Revoked { revoked_at } => {
                return Err(Refused::Unauthorized(format!(
                    "{what} was revoked at {}",
                    to_rfc3339(revoked_at)
                )));
            }
            AccessTokenStatus::Expired { expired_at } => {
                return Err(Refused::Unauthorized(format!(
                    "{what} expired at {}",
                    to_rfc3339(expired_at)
                )));
            }
            AccessTokenStatus::Unknown => {
                return Err(Refused::Unauthorized(format!("unknown {what}")));
            }
        };
        match (kind, record.owner) {
            (TokenKind::Project, TokenOwner::Project(project)) => Ok(Principal::CiJob(CiJob {
                project,
                git_ref: None,
                ref_protected: record.protected,
                // A project token is the project's CI as a whole; it names
                // no job, so the token stands in for one.
                job_id: format!("project-token-{}", record.id),
                environment: None,
                user: None,
                via: format!("project_token:{}", record.id),
                expires_at: record.expires_at,
            })),
            (TokenKind::User, TokenOwner::User(name)) => {
                let user = store.user(&name).await.map_err(|_| Refused::Unavailable)?;
                let user = user.ok_or_else(|| {
                    Refused::Unauthorized(format!("user {name} no longer exists"))
                })?;
                Ok(Principal::User(User {
                    name: user.name,
                    memberships: user.memberships,
                    expires_at: record.expires_at,
                }))
            }
            _ => Err(Refused::Unauthorized(format!("unknown {what}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_gitlab_convention() {
        let c = Credential::from_header(Some("Bearer ci:prod:tthr_project_x")).expect("valid");
        assert_eq!((c.kind, c.agent.as_str()), (Kind::Ci, "prod"));
        let jwt = "Bearer ci:prod:eyJ.a:b.c";
        assert_eq!(
            Credential::from_header(Some(jwt)).expect("valid").secret,
            "eyJ.a:b.c"
        );
        assert!(!format!("{c:?}").contains("tthr_project_x"));
        for bad in [
            None,
            Some("Basic x"),
            Some("Bearer x"),
            Some("Bearer su:prod:x"),
            Some("Bearer ci::x"),
        ] {
            assert!(Credential::from_header(bad).is_err(), "{bad:?}");
        }
        for bad_name in ["Bearer pat:Prod:x", "Bearer ci:../x:y", "Bearer ci:a b:y"] {
            assert!(
                matches!(
                    Credential::from_header(Some(bad_name)),
                    Err(Unreadable::Agent(_))
                ),
                "{bad_name}"
            );
        }
    }
}
