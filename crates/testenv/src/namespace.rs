//! A namespace of its own for every test, so tests sharing one cluster never
//! see each other's objects.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::wait::wait_until;

/// Label on every namespace created here, to find them when debugging.
pub const TEST_NAMESPACE_LABEL: &str = "tether.dev/testenv";

/// A namespace created for one test. It is not deleted on drop (deletion is
/// asynchronous and the cluster goes away with the test process anyway); call
/// [`TestNamespace::delete`] to test deletion itself.
#[derive(Clone, Debug)]
pub struct TestNamespace {
    name: String,
}

// === impl TestNamespace ===

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace and waits until the API server no longer has it
    /// (its finalizers, run by controller-manager, have emptied it).
    pub async fn delete(self, cluster: &Cluster, timeout: Duration) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(cluster.client()?);
        namespaces
            .delete(&self.name, &DeleteParams::default())
            .await?;
        wait_until(
            &format!("namespace {} to be gone", self.name),
            timeout,
            || async {
                Ok::<_, Error>(
                    namespaces
                        .get_opt(&self.name)
                        .await?
                        .is_none()
                        .then_some(()),
                )
            },
        )
        .await
    }
}

// === impl Cluster ===

impl Cluster {
    /// Creates a namespace named after `hint` with a random suffix, and waits
    /// for its `default` ServiceAccount, without which no pod can be created.
    pub async fn namespace(&self, hint: &str) -> Result<TestNamespace> {
        let name = namespace_name(hint, rand::random::<u32>());
        let client = self.client()?;
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { TEST_NAMESPACE_LABEL: "true" } }
        }))
        .expect("static namespace manifest is valid");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        wait_until(
            &format!("default ServiceAccount in {name}"),
            Duration::from_secs(60),
            || async { Ok::<_, Error>(accounts.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        Ok(TestNamespace { name })
    }
}

/// A valid DNS label: the hint lower-cased, other characters turned to `-`,
/// shortened so that the suffix fits in 63 characters.
fn namespace_name(hint: &str, suffix: u32) -> String {
    let mut base: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    base = base.trim_matches('-').to_owned();
    if base.is_empty() {
        base.push_str("test");
    }
    format!("{base}-{suffix:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        let long = "A".repeat(200);
        for hint in ["prunes_objects", "Weird Name!!", "", "--x--", long.as_str()] {
            let name = namespace_name(hint, 0xdead_beef);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_eq!(
            namespace_name("prunes_objects", 1),
            "prunes-objects-00000001"
        );
    }
}
