//! Property-based fuzzing of the ID-token path of the API proxy: arbitrary
//! bearer text, JWT-shaped tokens with arbitrary headers and claims, and
//! arbitrary JWKS documents from the issuer. Every one is refused (no key
//! in these JWKS ever signed them) without a panic or a hang.
//! `TETHER_FUZZ_CASES` sets the cases.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use tether_proxy::oidc::{ClaimNames, IssuerSettings, Oidc};

fn cases() -> u32 {
    std::env::var("TETHER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

const ISSUER: &str = "https://ci.fuzz.test";

fn oidc(jwks: &[u8]) -> (Oidc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks).expect("write");
    let oidc = Oidc::new(vec![IssuerSettings {
        issuer: ISSUER.into(),
        audience: "kas".into(),
        jwks_url: None,
        jwks_file: Some(path),
        claims: ClaimNames::default(),
        projects: Vec::new(),
    }])
    .expect("settings");
    (oidc, dir)
}

fn refused(oidc: &Oidc, token: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let verdict = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), oidc.verify(token, 1_800_000_000)).await
    });
    let verdict = verdict.expect("verification finished");
    assert!(verdict.is_err(), "an unsigned token was accepted: {token}");
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// JSON objects made of the fields a JWT and a JWKS use, with values of
/// every type.
fn jsonish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "alg",
        "kid",
        "typ",
        "iss",
        "aud",
        "exp",
        "nbf",
        "iat",
        "project_path",
        "job_id",
        "keys",
        "kty",
        "n",
        "e",
        "crv",
        "x",
        "y",
        "ref",
        "ref_protected",
    ]);
    let value = prop::sample::select(vec![
        "\"RS256\"",
        "\"ES256\"",
        "\"none\"",
        "\"HS256\"",
        "\"https://ci.fuzz.test\"",
        "\"kas\"",
        "1800000100",
        "-1",
        "1e308",
        "null",
        "true",
        "[]",
        "{}",
        "[{\"kty\":\"EC\"}]",
        "\"AQAB\"",
        "\"P-256\"",
        "\"\"",
        "[\"kas\", 1]",
    ]);
    prop::collection::vec((key, value), 0..12).prop_map(|fields| {
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bearer_text_is_refused(token in "\\PC{0,300}") {
        let (oidc, _dir) = oidc(br#"{"keys":[]}"#);
        refused(&oidc, &token);
    }

    #[test]
    fn jwt_shaped_tokens_are_refused(header in jsonish(), claims in jsonish(), sig in prop::collection::vec(any::<u8>(), 0..96)) {
        let (oidc, _dir) = oidc(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#);
        let claims = claims.replacen('{', &format!("{{\"iss\":\"{ISSUER}\","), 1);
        let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()), b64(&sig));
        refused(&oidc, &token);
    }

    #[test]
    fn arbitrary_jwks_documents_never_panic(jwks in prop_oneof![
        jsonish().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..2048),
    ]) {
        let (oidc, _dir) = oidc(&jwks);
        let header = b64(br#"{"alg":"ES256","kid":"k"}"#);
        let claims = b64(format!(r#"{{"iss":"{ISSUER}","aud":"kas","exp":1800000100,"project_path":"a/b","job_id":1}}"#).as_bytes());
        refused(&oidc, &format!("{header}.{claims}.{}", b64(&[7; 64])));
    }
}
