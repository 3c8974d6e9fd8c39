//! Changes announced to every kas sharing the database, over PostgreSQL's
//! `LISTEN`/`NOTIFY`: one listening connection per kas, however many
//! sessions it holds, and nothing polled per request.
//!
//! Notifications sent while a listener reconnects are lost; the listener
//! then reports a [`FeedEvent::Gap`], and kas re-checks what it holds.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use super::{PgStore, db};
use crate::{ChangeFeed, FeedEvent, Result, StoreError};

/// The channel every kas listens on.
const CHANNEL: &str = "tether_changes";
/// Events buffered towards kas; the listener waits when it is full.
const BUFFER: usize = 1024;
/// PostgreSQL's limit on a notification's payload, less some room.
const MAX_PAYLOAD: usize = 7_900;

#[async_trait]
impl ChangeFeed for PgStore {
    async fn publish(&self, payload: &str) -> Result<()> {
        if payload.len() > MAX_PAYLOAD {
            return Err(StoreError::Invalid(format!(
                "a change of {} bytes is more than a notification carries ({MAX_PAYLOAD})",
                payload.len()
            )));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db)?;
        listener.listen(CHANNEL).await.map_err(db)?;
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let event = match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        failures = 0;
                        FeedEvent::Message(notification.payload().to_owned())
                    }
                    // The connection was lost and made again: whatever was
                    // sent meanwhile is gone.
                    Ok(None) => FeedEvent::Gap,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                        tracing::warn!(error = %e, retry_in = ?wait, "change feed: listener failed");
                        tokio::time::sleep(wait).await;
                        FeedEvent::Gap
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
