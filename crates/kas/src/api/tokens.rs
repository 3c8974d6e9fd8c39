//! `/api/v1/agents/{name}/tokens`: an agent's tokens. The token's text is in
//! the creation response only; kas keeps its hash.

use crate::changes::Change;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tether_credentials::{Token, TokenKind};
use tether_store::{NewToken, TokenRecord, UnixTime};

use super::{ApiError, ApiState};
pub use tether_api::{CreateToken, CreatedToken, TokenView};
use tether_store::time::{from_rfc3339, now, to_rfc3339};

pub(crate) fn token_view(t: TokenRecord) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name,
        description: t.description,
        created_at: to_rfc3339(t.created_at),
        expires_at: t.expires_at.map(to_rfc3339),
        revoked_at: t.revoked_at.map(to_rfc3339),
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Path(agent): Path<String>,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let expires_at = parse_expiry(body.expires_at.as_deref())?;
    let (record, token) =
        create_token(&state, &agent, body.name, body.description, expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            record: token_view(record),
            // The token stays off the command line: it is read from a file
            // the user saves it to (or from standard input with `-`).
            install_command: format!(
                "agentk generate --agent-token-file=agent-token --kas-address={} --agent-version={} --namespace=tether-agent | kubectl apply -f -",
                state.agent_external_address,
                env!("CARGO_PKG_VERSION"),
            ),
            token: token.expose_secret().to_owned(),
        }),
    ))
}

/// Creates an agent token: its record and its text (shown once).
pub(crate) async fn create_token(
    state: &ApiState,
    agent: &str,
    name: String,
    description: String,
    expires_at: Option<UnixTime>,
) -> Result<(TokenRecord, Token), ApiError> {
    let token = Token::generate(TokenKind::Agent);
    let record = state
        .store
        .create_token(
            agent,
            NewToken {
                name,
                description,
                hash: token.hash(),
                created_at: now(),
                expires_at,
            },
        )
        .await?;
    tracing::info!(agent = %agent, token_id = record.id, "agent token created");
    Ok((record, token))
}

pub async fn list(
    State(state): State<ApiState>,
    Path(agent): Path<String>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = state.store.list_tokens(&agent).await?;
    Ok(Json(tokens.into_iter().map(token_view).collect()))
}

pub async fn revoke(
    State(state): State<ApiState>,
    Path((agent, id)): Path<(String, i64)>,
) -> Result<Json<TokenView>, ApiError> {
    let record = revoke_token(&state, &agent, id).await?;
    Ok(Json(token_view(record)))
}

/// Revokes an agent token and closes what it opened (sessions, tunnels,
/// on every replica): the API's and the web UI's one way to do it.
pub(crate) async fn revoke_token(
    state: &ApiState,
    agent: &str,
    id: i64,
) -> Result<TokenRecord, ApiError> {
    let record = state.store.revoke_token(agent, id, now()).await?;
    let reason = format!(
        "agent token was revoked at {}",
        record.revoked_at.map(to_rfc3339).unwrap_or_default()
    );
    tracing::info!(agent = %agent, token_id = id, "agent token revoked");
    state
        .changes
        .apply(Change::AgentTokenRevoked {
            token_id: id,
            reason,
        })
        .await;
    Ok(record)
}

/// A token's `expires_at` as given (RFC 3339), or why it is not a time.
pub(super) fn parse_expiry(text: Option<&str>) -> Result<Option<UnixTime>, ApiError> {
    text.map(from_rfc3339)
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))
}
