//! Secrets kas must give back (a webhook's secret, a git host token for
//! commit statuses, a notification URL and signing key) are sealed before
//! they reach the database: AES-256-GCM with a key kas holds outside it,
//! the record they belong to as associated data, so a database dump or
//! backup reveals none of them and a sealed value moved to another row
//! does not open. Token hashes need no sealing; they are never given back.
//!
//! A value written before sealing (no prefix) is read as it is and sealed
//! at its next write.

use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Result, StoreError};
use crate::model::{
    AdminTokenRecord, NotificationSecret, PushCredential, RegistryLogin, StatusTarget,
};

const PREFIX: &str = "sealed:v1:";
/// Sealed with every field that gives the secret its meaning bound in
/// (a status target's token: its provider, API URL and repository).
const PREFIX_BOUND: &str = "sealed:v2:";
/// Largest sealed value opened (the secrets are URLs and tokens).
const MAX_SEALED_BYTES: usize = 64 << 10;

/// Seals and opens stored secrets; [`Sealer::none`] stores them as given
/// (tests, and stores opened only to read other records).
#[derive(Clone, Default)]
pub struct Sealer(Option<Arc<LessSafeKey>>);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sealer").field(&self.0.is_some()).finish()
    }
}

impl Sealer {
    /// A sealer whose key is derived from `secret` (at least 32 bytes of
    /// it random: kas's key file, or the replicas' shared secret).
    pub fn new(secret: &[u8]) -> Self {
        let mut material = b"tether: secrets at rest, v1\n".to_vec();
        material.extend_from_slice(secret);
        let key = ring::digest::digest(&ring::digest::SHA256, &material);
        let key = UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("a 32-byte key");
        Sealer(Some(Arc::new(LessSafeKey::new(key))))
    }

    /// Stores secrets as given.
    pub fn none() -> Self {
        Sealer(None)
    }

    fn seal(&self, plain: &str, record: &str) -> String {
        self.seal_as(PREFIX, plain, record)
    }

    fn seal_as(&self, prefix: &str, plain: &str, record: &str) -> String {
        let Some(key) = &self.0 else {
            return plain.to_owned();
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut sealed = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(record.as_bytes()),
            &mut sealed,
        )
        .expect("sealing in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{prefix}{}", hex(&out))
    }

    fn open(&self, stored: String, record: &str) -> Result<String> {
        if stored.starts_with(PREFIX_BOUND) {
            return Err(StoreError::Invalid(format!(
                "the stored secret of {record} cannot be opened: it was sealed with its record's fields bound, and is read as such only"
            )));
        }
        self.open_as(PREFIX, stored, record)
    }

    fn open_as(&self, prefix: &str, stored: String, record: &str) -> Result<String> {
        let Some(body) = stored.strip_prefix(prefix) else {
            if stored.starts_with("sealed:") {
                return Err(StoreError::Invalid(format!(
                    "the stored secret of {record} cannot be opened: sealed in another form"
                )));
            }
            return Ok(stored);
        };
        let refused = |why: &str| {
            StoreError::Invalid(format!(
                "the stored secret of {record} cannot be opened: {why}"
            ))
        };
        let Some(key) = &self.0 else {
            return Err(refused("it is sealed and this kas has no key"));
        };
        let bytes = unhex(body).ok_or_else(|| refused("it is not a sealed value"))?;
        if bytes.len() < NONCE_LEN || bytes.len() > MAX_SEALED_BYTES {
            return Err(refused("it is not a sealed value"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| refused("it is not a sealed value"))?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(record.as_bytes()), &mut sealed)
            .map_err(|_| {
                refused(
                    "it was sealed with another key (see kas serve --secrets-key-file), or altered",
                )
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| refused("it is not text"))
    }

    pub(crate) fn seal_webhook(&self, project: &str, secret: &str) -> String {
        self.seal(secret, &format!("webhook_secrets/{project}"))
    }

    pub(crate) fn open_webhook(
        &self,
        project: &str,
        stored: Option<String>,
    ) -> Result<Option<String>> {
        stored
            .map(|s| self.open(s, &format!("webhook_secrets/{project}")))
            .transpose()
    }

    /// A status target's token is bound to where it is sent: whoever can
    /// write the database cannot point a sealed token at another host,
    /// provider or repository and have kas open it there.
    pub(crate) fn seal_target(&self, project: &str, mut t: StatusTarget) -> StatusTarget {
        t.token = self.seal_as(PREFIX_BOUND, &t.token, &target_record(project, &t));
        t
    }

    pub(crate) fn open_target(
        &self,
        project: &str,
        stored: Option<StatusTarget>,
    ) -> Result<Option<StatusTarget>> {
        stored
            .map(|mut t| {
                let record = target_record(project, &t);
                if t.token.starts_with(PREFIX) {
                    return Err(StoreError::Invalid(format!(
                        "the stored token of status_targets/{project} was sealed before tokens were bound to their host; set the target again (kas project statuses set)"
                    )));
                }
                t.token = self.open_as(PREFIX_BOUND, t.token, &record)?;
                Ok(t)
            })
            .transpose()
    }

    /// The admin token's hash, sealed with the time it was set: whoever
    /// can write the database cannot put a token of theirs there (nor move
    /// the time back to revive ended sessions) without kas's key.
    pub(crate) fn seal_admin_token(&self, mut r: AdminTokenRecord) -> AdminTokenRecord {
        r.hash = self.seal_as(PREFIX_BOUND, &r.hash, &admin_record(r.rotated_at_ms));
        r
    }

    pub(crate) fn open_admin_token(
        &self,
        stored: Option<AdminTokenRecord>,
    ) -> Result<Option<AdminTokenRecord>> {
        stored
            .map(|mut r| {
                if self.0.is_some() && !r.hash.starts_with(PREFIX_BOUND) {
                    return Err(StoreError::Invalid(
                        "the admin token's record is not sealed: kas did not write it".into(),
                    ));
                }
                r.hash = self.open_as(PREFIX_BOUND, r.hash, &admin_record(r.rotated_at_ms))?;
                Ok(r)
            })
            .transpose()
    }

    pub(crate) fn seal_notification(&self, mut n: NotificationSecret) -> NotificationSecret {
        let record = format!("notification_secrets/{}", n.name);
        n.url = self.seal(&n.url, &format!("{record}/url"));
        n.signing_key = n
            .signing_key
            .map(|k| self.seal(&k, &format!("{record}/signing_key")));
        n
    }

    pub(crate) fn open_notification(
        &self,
        stored: Option<NotificationSecret>,
    ) -> Result<Option<NotificationSecret>> {
        stored
            .map(|mut n| {
                let record = format!("notification_secrets/{}", n.name);
                n.url = self.open(n.url, &format!("{record}/url"))?;
                n.signing_key = n
                    .signing_key
                    .map(|k| self.open(k, &format!("{record}/signing_key")))
                    .transpose()?;
                Ok(n)
            })
            .transpose()
    }
}

impl Sealer {
    /// A registry password, bound to its host and username.
    pub(crate) fn seal_registry(&self, mut l: RegistryLogin) -> RegistryLogin {
        l.password = self.seal_as(PREFIX_BOUND, &l.password, &registry_record(&l));
        l
    }

    pub(crate) fn open_registry(
        &self,
        stored: Option<RegistryLogin>,
    ) -> Result<Option<RegistryLogin>> {
        stored
            .map(|mut l| {
                let record = registry_record(&l);
                l.password =
                    self.open_as(PREFIX_BOUND, std::mem::take(&mut l.password), &record)?;
                Ok(l)
            })
            .transpose()
    }

    /// A push credential, bound to its project and kind.
    pub(crate) fn seal_push(&self, mut p: PushCredential) -> PushCredential {
        p.secret = self.seal_as(PREFIX_BOUND, &p.secret, &push_record(&p));
        p
    }

    pub(crate) fn open_push(
        &self,
        stored: Option<PushCredential>,
    ) -> Result<Option<PushCredential>> {
        stored
            .map(|mut p| {
                let record = push_record(&p);
                p.secret = self.open_as(PREFIX_BOUND, std::mem::take(&mut p.secret), &record)?;
                Ok(p)
            })
            .transpose()
    }
}

fn registry_record(l: &RegistryLogin) -> String {
    format!(
        "registry_credentials/{}\nusername={}\ngroups={}",
        l.host,
        l.username,
        l.groups.join(",")
    )
}

fn push_record(p: &PushCredential) -> String {
    format!("push_credentials/{}\nkind={}", p.project, p.kind.as_str())
}

/// What the admin token's record is bound to.
fn admin_record(rotated_at_ms: i64) -> String {
    format!("admin_token\nrotated_at_ms={rotated_at_ms}")
}

/// What a status target's token is bound to.
fn target_record(project: &str, t: &StatusTarget) -> String {
    format!(
        "status_targets/{project}\nprovider={}\napi_url={}\nrepository={}",
        t.provider, t.api_url, t.repository
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_record() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let sealed = sealer.seal_webhook("team/app", "s3cret");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            sealer.seal_webhook("team/app", "s3cret"),
            "a fresh nonce each time"
        );
        assert_eq!(
            sealer
                .open_webhook("team/app", Some(sealed.clone()))
                .expect("opens"),
            Some("s3cret".to_owned())
        );
        // Moved to another project's row, or opened with another key, or
        // altered: refused, naming the record and never the value.
        let moved = sealer
            .open_webhook("team/other", Some(sealed.clone()))
            .expect_err("another record");
        assert!(
            moved.to_string().contains("webhook_secrets/team/other"),
            "{moved}"
        );
        let other = Sealer::new(b"another key, 32 bytes long......");
        assert!(
            other
                .open_webhook("team/app", Some(sealed.clone()))
                .is_err()
        );
        let mut altered = sealed.clone();
        altered.replace_range(altered.len() - 2.., "00");
        assert!(sealer.open_webhook("team/app", Some(altered)).is_err());
        assert!(
            Sealer::none()
                .open_webhook("team/app", Some(sealed))
                .is_err()
        );
        for junk in ["sealed:v1:", "sealed:v1:zz", "sealed:v1:00"] {
            assert!(
                sealer.open_webhook("team/app", Some(junk.into())).is_err(),
                "{junk}"
            );
        }
        // Written before sealing: read as it is.
        assert_eq!(
            sealer
                .open_webhook("team/app", Some("plain".into()))
                .expect("legacy"),
            Some("plain".to_owned())
        );
    }

    #[test]
    fn a_status_token_opens_only_for_the_host_it_was_sealed_for() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let target = StatusTarget {
            provider: "github".into(),
            api_url: "https://api.github.com".into(),
            repository: "team/app".into(),
            token: "ghp_token".into(),
            created_at: 0,
        };
        let sealed = sealer.seal_target("team/app", target.clone());
        assert!(sealed.token.starts_with(PREFIX_BOUND) && !sealed.token.contains("ghp_token"));
        let opened = sealer
            .open_target("team/app", Some(sealed.clone()))
            .expect("opens")
            .expect("a target");
        assert_eq!(opened.token, "ghp_token");
        // Whoever writes the database points it elsewhere: refused.
        for redirect in [
            StatusTarget {
                api_url: "https://attacker.example".into(),
                ..sealed.clone()
            },
            StatusTarget {
                provider: "gitea".into(),
                ..sealed.clone()
            },
            StatusTarget {
                repository: "team/other".into(),
                ..sealed.clone()
            },
        ] {
            let refused = sealer.open_target("team/app", Some(redirect));
            assert!(refused.is_err(), "opened for another host");
        }
        // Sealed the old way (without the binding): refused, saying what to do.
        let old = StatusTarget {
            token: sealer.seal(&target.token, "status_targets/team/app"),
            ..target.clone()
        };
        let refused = sealer
            .open_target("team/app", Some(old))
            .expect_err("unbound");
        assert!(
            refused.to_string().contains("set the target again"),
            "{refused}"
        );
        // And a bound seal is no webhook secret.
        assert!(sealer.open_webhook("team/app", Some(sealed.token)).is_err());
    }

    #[test]
    fn the_admin_token_record_opens_only_as_kas_sealed_it() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let record = AdminTokenRecord {
            hash: "ab".repeat(32),
            rotated_at_ms: 1_000,
        };
        let sealed = sealer.seal_admin_token(record.clone());
        assert_ne!(sealed.hash, record.hash);
        assert_eq!(
            sealer
                .open_admin_token(Some(sealed.clone()))
                .expect("opens"),
            Some(record.clone())
        );
        // A database writer's own hash, or the time moved back: refused.
        assert!(
            sealer.open_admin_token(Some(record.clone())).is_err(),
            "plain"
        );
        let moved = AdminTokenRecord {
            rotated_at_ms: 1,
            ..sealed
        };
        assert!(sealer.open_admin_token(Some(moved)).is_err(), "time moved");
    }

    #[test]
    fn every_secret_field_is_sealed() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let n = sealer.seal_notification(NotificationSecret {
            name: "ops".into(),
            url: "https://hooks.example/T0/B0/xyz".into(),
            signing_key: Some("k".into()),
            created_at: 1,
        });
        assert!(!n.url.contains("hooks.example"));
        assert!(
            n.signing_key
                .as_deref()
                .is_some_and(|k| k.starts_with(PREFIX))
        );
        let opened = sealer
            .open_notification(Some(n))
            .expect("opens")
            .expect("some");
        assert_eq!(opened.url, "https://hooks.example/T0/B0/xyz");
        assert_eq!(opened.signing_key.as_deref(), Some("k"));
        let t = sealer.seal_target(
            "team/app",
            StatusTarget {
                provider: "gitea".into(),
                api_url: "https://git.example/api/v1".into(),
                repository: "team/app".into(),
                token: "glpat-xyz".into(),
                created_at: 1,
            },
        );
        assert!(!t.token.contains("glpat"));
        let opened = sealer
            .open_target("team/app", Some(t))
            .expect("opens")
            .expect("some");
        assert_eq!(opened.token, "glpat-xyz");
    }
}
