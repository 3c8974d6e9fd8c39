//! A real OCI registry for tests: distribution's (built from its Go module
//! by `scripts/oci-registry.sh`) on a loopback port, its storage in a
//! folder of its own, optionally behind htpasswd authentication and
//! sending its push notifications to a URL. Images are pushed to it with
//! the real skopeo, from a small OCI layout made here, so each tag points
//! at a manifest of its own.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::supervisor::{ProcessSpec, Supervisor};

/// How a test's registry runs.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// htpasswd authentication with this username and password.
    pub auth: Option<(String, String)>,
    /// Push notifications to this URL, with this `Authorization` header.
    pub notify: Option<(String, String)>,
}

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    supervisor: Supervisor,
    dir: PathBuf,
    addr: SocketAddr,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry keeping its files in `dir`; ready when `/v2/`
    /// answers.
    pub async fn start(dir: &Path, options: RegistryOptions) -> Result<Self> {
        let addr = crate::ports::free().map_err(Error::io("find a free port"))?;
        Self::start_on(dir, addr, options).await
    }

    /// Starts a registry on `addr` with the files in `dir`: the one a test
    /// stopped, again (with other options, say).
    pub async fn start_on(dir: &Path, addr: SocketAddr, options: RegistryOptions) -> Result<Self> {
        let program = crate::binaries::oci_registry()?.join("registry");
        std::fs::create_dir_all(dir).map_err(Error::io("create the registry's folder"))?;
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nlog:\n  level: error\n",
            dir.join("data").display()
        );
        if let Some((user, password)) = &options.auth {
            let hash = bcrypt::hash(password, 5)
                .map_err(|e| Error::Binaries(format!("cannot hash the registry password: {e}")))?;
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n"))
                .map_err(Error::io("write htpasswd"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: tether-test\n    path: {}\n",
                file.display()
            ));
        }
        if let Some((url, authorization)) = &options.notify {
            config.push_str(&format!(
                "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: kas\n      url: {url}\n      headers:\n        Authorization: [{authorization:?}]\n      timeout: 2s\n      threshold: 5\n      backoff: 1s\n"
            ));
        }
        let file = dir.join("config.yml");
        std::fs::write(&file, config).map_err(Error::io("write the registry's config"))?;
        let supervisor = Supervisor::start()?;
        supervisor.spawn(ProcessSpec {
            name: "registry".into(),
            program,
            args: vec!["serve".into(), file.into_os_string()],
            log: dir.join("registry.log"),
            run_as: None,
        })?;
        let registry = Registry {
            supervisor,
            dir: dir.to_owned(),
            addr,
            auth: options.auth,
        };
        crate::wait::wait_until("the registry to answer", Duration::from_secs(30), || {
            let supervisor = &registry.supervisor;
            let answered = std::net::TcpStream::connect(registry.addr).is_ok();
            async move {
                supervisor.check()?;
                Ok::<_, Error>(answered.then_some(()))
            }
        })
        .await?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Pushes an image to `repository:tag` with skopeo: one small layer
    /// holding `content`, so tags with different content have different
    /// digests. Returns the manifest's digest (`sha256:…`).
    pub fn push(&self, repository: &str, tag: &str, content: &str) -> Result<String> {
        let layout = self
            .dir
            .join("layouts")
            .join(format!("{}-{tag}", repository.replace('/', "-")));
        write_layout(&layout, content)?;
        let digest_file = layout.with_extension("digest");
        let mut command = Command::new("skopeo");
        command
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg("--digestfile")
            .arg(&digest_file);
        if let Some((user, password)) = &self.auth {
            command.arg(format!("--dest-creds={user}:{password}"));
        }
        command
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.addr));
        let out = command.output().map_err(Error::io("run skopeo"))?;
        if !out.status.success() {
            return Err(Error::Binaries(format!(
                "skopeo copy to {repository}:{tag} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::fs::read_to_string(&digest_file)
            .map(|d| d.trim().to_owned())
            .map_err(Error::io("read skopeo's digest file"))
    }
}

/// An OCI image layout in `dir` with one image tagged `latest`: a gzipped
/// tar layer holding `/content` and a config for linux/amd64.
fn write_layout(dir: &Path, content: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(Error::io("create the layout"))?;
    let put = |bytes: &[u8]| -> Result<(String, usize)> {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest), bytes).map_err(Error::io("write a blob"))?;
        Ok((format!("sha256:{digest}"), bytes.len()))
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "content", content.as_bytes())
        .map_err(Error::io("write the layer"))?;
    let tar = tar.into_inner().map_err(Error::io("write the layer"))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)
        .map_err(Error::io("compress the layer"))?;
    let gz = gz.finish().map_err(Error::io("compress the layer"))?;
    let (layer, layer_size) = put(&gz)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/content"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&tar))]},
    });
    let (config, config_size) = put(config.to_string().as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    });
    let (manifest, manifest_size) = put(manifest.to_string().as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())
        .map_err(Error::io("write index.json"))?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(Error::io("write oci-layout"))?;
    Ok(())
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
