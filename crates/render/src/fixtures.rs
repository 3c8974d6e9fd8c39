//! What the tests of fetching serve and fetch: a chart repository on
//! 127.0.0.1 (never any other address) that records what it was asked, and
//! chart archives built in memory, well-formed or deliberately not.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An HTTP chart repository on loopback serving fixed files; dropping it
/// stops it.
pub(crate) struct ChartRepository {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    asked: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for ChartRepository {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChartRepository {
    /// Serves `files` (path without the leading `/`, body); anything else
    /// is a 404.
    pub async fn serve(files: Vec<(String, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let recorded = asked.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (files, recorded) = (files.clone(), recorded.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 << 10
                    {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    recorded.lock().expect("not poisoned").push(path.clone());
                    let body = files
                        .iter()
                        .find(|(p, _)| path.strip_prefix('/') == Some(p.as_str()))
                        .map(|(_, b)| b.clone());
                    let (status, body) = match body {
                        Some(body) => ("200 OK", body),
                        None => ("404 Not Found", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        ChartRepository { url, asked, task }
    }

    /// The paths asked for so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("not poisoned").clone()
    }
}

/// An `index.yaml` listing one chart version at `url`, with its digest
/// when one is given.
pub(crate) fn index(chart: &str, version: &str, url: &str, digest: Option<&str>) -> Vec<u8> {
    let digest = digest.map_or(String::new(), |d| format!("    digest: {d}\n"));
    format!(
        "apiVersion: v1\nentries:\n  {chart:?}:\n  - version: {version}\n    urls: [{url:?}]\n{digest}"
    )
    .into_bytes()
}

/// The SHA-256 of `bytes`, as an index gives it.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One entry of a test archive, its name written byte for byte (the tar
/// crate's builder refuses `..` and absolute names, which these tests need).
pub(crate) struct Entry<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub data: &'a [u8],
    pub link: &'a [u8],
}

impl<'a> Entry<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Entry {
            name: name.as_bytes(),
            kind: tar::EntryType::Regular,
            data,
            link: b"",
        }
    }
}

/// A gzip'd tar of `entries`, in order.
pub(crate) fn archive(entries: &[Entry<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..entry.name.len()].copy_from_slice(entry.name);
        old.linkname[..entry.link.len()].copy_from_slice(entry.link);
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, entry.data).expect("appended");
    }
    builder
        .into_inner()
        .expect("tar finished")
        .finish()
        .expect("gzip finished")
}

/// A small chart named `name`, as `helm package` lays it out.
pub(crate) fn chart(name: &str) -> Vec<u8> {
    let chart_yaml = format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n");
    let values = b"replicas: 1\n".as_slice();
    let template = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".as_slice();
    let (a, b, c) = (
        format!("{name}/Chart.yaml"),
        format!("{name}/values.yaml"),
        format!("{name}/templates/cm.yaml"),
    );
    archive(&[
        Entry::file(&a, chart_yaml.as_bytes()),
        Entry::file(&b, values),
        Entry::file(&c, template),
    ])
}
