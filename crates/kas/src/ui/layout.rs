//! The page every view shares: a header with who is signed in, the main
//! region, and a small script of the project's own (no build step, no CDN)
//! that replaces the main region when the server says something changed.
//! Every page reads completely without JavaScript.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::session::{Session, Who};

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.2em;background:#1d2330;color:#fff}
header a{color:#fff;text-decoration:none}header .who{margin-left:auto}
main{padding:1em 1.2em;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600}
.ok{color:#17803d}.bad{color:#b42318}.wait{color:#9a6700}.dim{color:#667085}
.pill{display:inline-block;padding:0 .5em;border-radius:1em;font-size:12px;background:#eef0f3}
form.inline{display:inline}table+form{margin-top:.6em}button{font:inherit;cursor:pointer}
details{background:#fff;margin:.3em 0;border:1px solid #e3e6ea}summary{padding:.3em .6em;cursor:pointer}
code{font-size:12px}
pre.diff{background:#fff;margin:0;padding:.4em .6em;overflow-x:auto;font-size:12px}
.add{color:#17803d;background:#ecfdf3}.del{color:#b42318;background:#fef3f2}.hunk{color:#667085}
"#;

/// Replaces `<main>` with the same page fetched again whenever the server
/// sends `changed` (on `/ui/events`), so that a sync appears without a
/// reload; the page works the same without it.
const LIVE: &str = r#"
(function(){
  if(!window.EventSource)return;
  var source=new EventSource('/ui/events');
  // A page left (or kept in the back-forward cache) must not hold one of
  // the browser's few connections to kas.
  window.addEventListener('pagehide',function(){source.close();});
  source.addEventListener('changed',function(){
    fetch(location.href,{credentials:'same-origin'}).then(function(r){return r.text()}).then(function(text){
      var doc=new DOMParser().parseFromString(text,'text/html');
      var fresh=doc.querySelector('main'),now=document.querySelector('main');
      if(fresh&&now)now.replaceWith(fresh);
    });
  });
})();
"#;

/// The Content-Security-Policy of every page: nothing from elsewhere, no
/// script or style but the page's own two (by hash), no framing (a page
/// with a "Revoke" button must not be clickjacked), forms posting only
/// here. Markup is escaped by maud; this is the second line.
pub fn content_security_policy() -> String {
    use base64::Engine as _;
    let hash = |text: &str| {
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        hash(LIVE),
        hash(STYLE)
    )
}

pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tether" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/ui/" { strong { "Tether" } }
                    @if let Some(session) = session {
                        a href="/ui/" { "Agents" }
                        a href="/ui/projects" { "Projects" }
                        a href="/ui/images" { "Images" }
                        a href="/ui/rollouts" { "Rollouts" }
                        @match &session.who {
                            Who::Admin => a href="/ui/users" { "Users" },
                            Who::User { name, .. } => a href={"/ui/users/" (name)} { "My tokens" },
                        }
                    }
                    @if let Some(session) = session {
                        span class="who" {
                            (who(&session.who)) " "
                            form class="inline" method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
                @if session.is_some() {
                    script { (PreEscaped(LIVE)) }
                }
            }
        }
    }
}

fn who(who: &Who) -> String {
    match who {
        Who::Admin => "admin".to_owned(),
        Who::User { name, .. } => format!("user {name}"),
    }
}

/// A health or state word, coloured.
pub fn state(word: &str) -> Markup {
    let class = match word {
        "synced" | "Current" | "connected" | "success" | "active" => "ok",
        "failed" | "Failed" | "offline" | "revoked" | "expired" => "bad",
        _ => "wait",
    };
    html! { span class=(class) { (word) } }
}
