//! A real browser for the web UI's tests: Debian's headless Chromium
//! driven by its WebDriver (`chromedriver`, Debian's `chromium-driver`;
//! both installed by `scripts/install-services.sh`), over the W3C WebDriver
//! protocol spoken here directly (a few JSON requests; no client library).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Proc;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One headless Chromium session; closed (and its driver stopped) on drop.
pub struct Browser {
    _driver: Proc,
    addr: SocketAddr,
    session: String,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub fn start(dir: &Path) -> Self {
        let addr = crate::free_port();
        let mut cmd = Command::new(program("chromedriver"));
        cmd.arg(format!("--port={}", addr.port()));
        let driver = Proc::spawn(cmd, dir.join(format!("chromedriver-{}.log", addr.port())));
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(addr, "GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join(format!("chromium-{}", addr.port()));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": program("chromium"),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let created = http(addr, "POST", "/session", Some(&capabilities)).expect("a session");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            _driver: driver,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer =
            http(self.addr, method, &path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as it is now (after scripts changed it).
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, css: &str) -> Option<String> {
        let found = self.call(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT].as_str().map(str::to_owned)
    }

    pub fn exists(&self, css: &str) -> bool {
        self.element(css).is_some()
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> Option<String> {
        let id = self.element(css)?;
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .map(str::to_owned)
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).unwrap_or_else(|| panic!("no {css}"));
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css).unwrap_or_else(|| panic!("no {css}"));
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// The cookies the browser holds for the current page.
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn delete_cookies(&self) {
        self.call("DELETE", "/cookie", None);
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.call("GET", "/screenshot", None);
        let png = decode_base64(encoded.as_str().unwrap_or_default());
        std::fs::write(path, png).expect("screenshot written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// `name` on the PATH's usual folders (Debian puts chromium in /usr/bin).
fn program(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path.display().to_string();
        }
    }
    panic!("{name} is not installed: run scripts/install-services.sh")
}

/// One HTTP exchange with the driver: the answer's body read to its
/// `Content-Length` (the driver keeps connections open), as JSON.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    write!(
        writer,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut answer = Vec::new();
    match length {
        Some(n) => {
            answer.resize(n, 0);
            reader.read_exact(&mut answer).map_err(|e| e.to_string())?;
        }
        None => {
            reader.read_to_end(&mut answer).map_err(|e| e.to_string())?;
        }
    }
    serde_json::from_slice(&answer)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&answer)))
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(super::decode_base64("dGV0aGVy"), b"tether");
        assert_eq!(super::decode_base64("YWI="), b"ab");
        assert_eq!(super::decode_base64("YQ=="), b"a");
    }
}
