//! What agentk remembers of each object it applied: enough to tell, without
//! asking the API server, that applying the same body again would change
//! nothing (the sync and the plan skip such objects), and to apply it again
//! when someone drifts it.

use std::sync::Arc;

use kube::discovery::ApiResource;

use crate::hooks::DeletePolicy;
use crate::inventory::{FIELD_MANAGER, ObjRef};

/// What agentk last applied to one object, and which fields it owned
/// right after: if they are still agentk's and the desired content is the
/// same, applying again would change nothing. Kept small (hashes and the
/// body as compact JSON text, shared by `Arc`): agentk holds one per managed
/// object.
#[derive(Debug)]
pub struct Record {
    pub(crate) hash: u64,
    /// For a Helm hook: what its delete policy asks for.
    pub(crate) hook: Option<DeletePolicy>,
    /// Fingerprint of the fields agentk owned after the apply.
    pub(crate) fields: Option<u64>,
    pub resource: ApiResource,
    pub namespaced: bool,
    /// The applied body as JSON, to apply again when someone drifts it.
    pub body: Arc<str>,
    /// The object's uid after the apply, for the Events recorded on it
    /// (`kubectl describe` finds an object's Events by uid).
    pub uid: String,
}

/// What agentk last applied, by object.
pub type Records = std::collections::HashMap<ObjRef, Arc<Record>>;

/// A fingerprint of the fields agentk's last apply owns, from the object's
/// managedFields.
pub(crate) fn our_fields(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<u64> {
    meta.managed_fields
        .as_ref()?
        .iter()
        .find(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref().unwrap_or_default().is_empty()
        })
        .and_then(|m| m.fields_v1.as_ref())
        .map(|f| fingerprint(&f.0.to_string()))
}

pub(crate) fn fingerprint(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
