//! SOPS-encrypted files of a manifest project (`decryption: {provider:
//! sops, secret: …}`), decrypted here, in the cluster, with keys from a
//! Secret of agentk's own namespace: kas sends them as git has them and
//! never holds a key.
//!
//! What is decrypted: manifest files, the values files of charts rendered
//! here (`render_on: agent`), and the data of Secrets a kustomization's
//! generator made from an encrypted file (kas renders those, with the
//! ciphertext as the value). The objects that carry decrypted values are
//! named, so that plans, reports and Events never show them. Keys are read
//! at each sync, so a rotated Secret takes effect without a restart.

use std::collections::BTreeSet;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use tether_agent_config as cfg;
use tether_proto::v1;

/// What a plan shows instead of a decrypted value.
pub const HIDDEN: &str = "\"(encrypted)\"";

/// Objects whose values came decrypted: (kind, "", name). The namespace
/// is left out on purpose: the sync defaults it later, and hiding an
/// object of the same kind and name in another namespace costs nothing.
pub type Sensitive = BTreeSet<(String, String, String)>;

/// Whether an object of `kind` named `name` holds decrypted values.
pub fn is_sensitive(set: &Sensitive, kind: &str, name: &str) -> bool {
    set.contains(&(kind.to_owned(), String::new(), name.to_owned()))
}

/// Reads the keys and decrypts.
#[derive(Clone)]
pub struct Decryptor {
    pub client: kube::Client,
    /// agentk's own namespace: the only one a key Secret is read from.
    pub namespace: String,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A set with its encrypted inputs opened.
#[derive(Debug, Default)]
pub struct Opened {
    pub files: Vec<v1::ManifestFile>,
    /// Files that were decrypted (their objects are sensitive).
    pub decrypted_paths: BTreeSet<String>,
    /// Releases rendered here with a decrypted values file.
    pub decrypted_releases: BTreeSet<String>,
}

impl Decryptor {
    async fn keys(&self, decryption: &cfg::Decryption) -> Result<tether_sops::Keys, String> {
        let secrets: kube::Api<Secret> =
            kube::Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets.get_opt(&decryption.secret).await.map_err(|e| {
            format!(
                "cannot read the decryption Secret {}/{}: {e}",
                self.namespace, decryption.secret
            )
        })?;
        let secret = secret.ok_or_else(|| {
            format!(
                "the decryption Secret {}/{} does not exist: nothing is applied",
                self.namespace, decryption.secret
            )
        })?;
        let data = secret.data.unwrap_or_default();
        let keys = tether_sops::Keys::from_secret_data(
            data.iter()
                .map(|(name, value)| (name.as_str(), value.0.as_slice())),
        )
        .map_err(|e| format!("the decryption Secret {}: {e}", decryption.secret))?;
        if keys.is_empty() {
            return Err(format!(
                "the decryption Secret {}/{} holds no key (entries named *.agekey or *.asc)",
                self.namespace, decryption.secret
            ));
        }
        Ok(keys)
    }

    /// Decrypts the encrypted files of a set as kas sent it. All or
    /// nothing: a file that cannot be decrypted fails the set, naming it.
    /// An encrypted file in a project without `decryption` is refused
    /// rather than applied as ciphertext.
    pub async fn open(
        &self,
        decryption: Option<&cfg::Decryption>,
        files: Vec<v1::ManifestFile>,
    ) -> Result<(Opened, Option<tether_sops::Keys>), String> {
        let mut opened = Opened::default();
        let encrypted = |f: &v1::ManifestFile| tether_sops::is_encrypted(&f.path, &f.content);
        let any = files.iter().any(encrypted);
        let keys = match (decryption, any) {
            (Some(decryption), _) => Some(self.keys(decryption).await?),
            (None, true) => {
                let path = files
                    .iter()
                    .find(|f| encrypted(f))
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                return Err(format!(
                    "{path} is encrypted with SOPS, and the project's config has no decryption (decryption: {{provider: sops, secret: …}}): nothing is applied"
                ));
            }
            (None, false) => None,
        };
        for mut file in files {
            if let Some(keys) = &keys
                && encrypted(&file)
            {
                let decrypted = tether_sops::decrypt(&file.path, &file.content, keys)
                    .map_err(|e| format!("{e}: nothing is applied"))?;
                file.content = decrypted.bytes;
                if file.render.is_empty() {
                    opened.decrypted_paths.insert(file.path.clone());
                } else {
                    opened.decrypted_releases.insert(file.render.clone());
                }
            }
            opened.files.push(file);
        }
        Ok((opened, keys))
    }
}

/// After the set is expanded: decrypts the data of Secrets a generator
/// made from an encrypted file, and names every object that holds a
/// decrypted value. Files holding such Secrets are written again as one
/// `List`.
pub fn finish(
    files: &mut [tether_gitops::manifest::ManifestFile],
    keys: Option<&tether_sops::Keys>,
    opened: &Opened,
) -> Result<Sensitive, String> {
    let mut sensitive = Sensitive::new();
    let Some(keys) = keys else {
        return Ok(sensitive);
    };
    for file in files.iter_mut() {
        let from_release = file
            .path
            .strip_prefix("helm-on-agent/")
            .and_then(|rest| rest.rsplit_once('-'))
            .is_some_and(|(release, _)| opened.decrypted_releases.contains(release));
        let whole = opened.decrypted_paths.contains(&file.path) || from_release;
        let Ok(text) = std::str::from_utf8(&file.bytes) else {
            continue;
        };
        // Parsed here only if it can matter: decrypted, or holding a
        // Secret (a generator's); the sync parses every file anyway.
        if !whole && !text.contains("Secret") {
            continue;
        }
        let mut documents: Vec<Value> = match serde_saphyr::from_multiple::<Value>(text) {
            Ok(documents) => documents,
            // The sync's own parser names the problem.
            Err(_) => continue,
        };
        let mut changed = false;
        for document in &mut documents {
            for object in objects_mut(document) {
                let opened_here = open_secret_data(object, keys)
                    .map_err(|e| format!("{}: {e}: nothing is applied", file.path))?;
                changed |= opened_here;
                if whole || opened_here {
                    sensitive.insert(key_of(object));
                }
            }
        }
        if changed {
            let items: Vec<Value> = documents
                .into_iter()
                .flat_map(|d| match d {
                    Value::Object(mut o)
                        if o.get("kind").and_then(Value::as_str) == Some("List") =>
                    {
                        match o.remove("items") {
                            Some(Value::Array(items)) => items,
                            _ => Vec::new(),
                        }
                    }
                    Value::Null => Vec::new(),
                    other => vec![other],
                })
                .collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            file.bytes = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
        }
    }
    Ok(sensitive)
}

/// The objects of a document: itself, or the items of a `List`.
fn objects_mut(document: &mut Value) -> Vec<&mut Value> {
    let is_list = document.get("kind").and_then(Value::as_str) == Some("List")
        && document.get("items").is_some_and(Value::is_array);
    if is_list {
        match document.get_mut("items") {
            Some(Value::Array(items)) => items.iter_mut().collect(),
            _ => Vec::new(),
        }
    } else if document.is_object() {
        vec![document]
    } else {
        Vec::new()
    }
}

fn key_of(object: &Value) -> (String, String, String) {
    let at = |path: &[&str]| {
        path.iter()
            .try_fold(object, |v, k| v.get(*k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (at(&["kind"]), String::new(), at(&["metadata", "name"]))
}

/// A Secret's `data` entries that hold a whole SOPS file (a generator's
/// `files:` entry of an encrypted file): replaced by the plaintext.
/// Whether any was.
fn open_secret_data(object: &mut Value, keys: &tether_sops::Keys) -> Result<bool, String> {
    if object.get("kind").and_then(Value::as_str) != Some("Secret") {
        return Ok(false);
    }
    let Some(Value::Object(data)) = object.get_mut("data") else {
        return Ok(false);
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let mut opened = false;
    for (key, value) in data.iter_mut() {
        let Some(encoded) = value.as_str() else {
            continue;
        };
        // kustomize writes a long value as a block scalar wrapped every
        // 70 characters; the API server's decoder (Go's) skips the line
        // breaks, and so must this one, or the ciphertext is applied.
        let encoded: String = encoded
            .chars()
            .filter(|c| !matches!(c, '\n' | '\r'))
            .collect();
        let Ok(bytes) = engine.decode(&encoded) else {
            continue;
        };
        if !tether_sops::is_encrypted(key, &bytes) {
            continue;
        }
        let decrypted = tether_sops::decrypt(key, &bytes, keys).map_err(|e| e.to_string())?;
        *value = Value::String(engine.encode(&decrypted.bytes));
        opened = true;
    }
    Ok(opened)
}
