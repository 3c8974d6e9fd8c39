//! The web UI spoken to as a browser would, without one: sign in with the
//! form's cookie and CSRF token, fetch pages with the session cookie,
//! post forms, and follow `/ui/events`. For benches and for tests that
//! need no rendering (a real browser is in [`crate::browser`]).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Signs in with `token` (the admin token or a PAT) like the browser does: the form's cookie and CSRF token, then
/// the POST; the session cookie.
pub fn sign_in(api: SocketAddr, token: &str) -> anyhow::Result<String> {
    let (_, form, headers) = request(api, "GET", "/ui/login", "", "")?;
    let login_cookie = cookie_of(&headers, "tether_login")?;
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no CSRF token in the form"))?
        .to_owned();
    let body = format!("token={token}&csrf={csrf}");
    let (_, _, headers) = request(
        api,
        "POST",
        "/ui/login",
        &format!("tether_login={login_cookie}"),
        &body,
    )?;
    Ok(format!(
        "tether_session={}",
        cookie_of(&headers, "tether_session")?
    ))
}

pub fn cookie_of(headers: &str, name: &str) -> anyhow::Result<String> {
    headers
        .lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .ok_or_else(|| anyhow::anyhow!("no {name} cookie in {headers}"))
}

pub fn get(api: SocketAddr, path: &str, cookie: &str) -> anyhow::Result<(u16, String)> {
    let (status, body, _) = request(api, "GET", path, cookie, "")?;
    Ok((status, body))
}

/// One HTTP/1.0 exchange: status, body, and the header block.
pub fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> anyhow::Result<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect(api)?;
    let cookie = match cookie {
        "" => String::new(),
        c => format!("Cookie: {c}\r\n"),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {api}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned(), head.to_owned()))
}

/// Whether `/ui/events`, opened with `cookie`, sends a `changed` event
/// after `trigger` runs, within `within`.
pub fn changed_event_after(
    api: SocketAddr,
    cookie: &str,
    within: Duration,
    trigger: impl FnOnce(),
) -> anyhow::Result<bool> {
    let mut stream = std::net::TcpStream::connect(api)?;
    write!(
        stream,
        "GET /ui/events HTTP/1.1\r\nHost: {api}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )?;
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    // The answer's head first: the stream is open before the trigger.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("text/event-stream") {
        anyhow::ensure!(Instant::now() < deadline, "no event stream: {seen}");
        if let Ok(n) = stream.read(&mut buffer) {
            anyhow::ensure!(n > 0, "the stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    }
    seen.clear();
    trigger();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
                if seen.contains("event: changed") {
                    return Ok(true);
                }
            }
            Err(_) => {}
        }
    }
    Ok(false)
}
