//! Tags and digests from a real registry (distribution's), with images
//! pushed by skopeo: anonymous, with htpasswd credentials, page by page,
//! and through the egress policy.

use tether_agent_config::ImageRepository;
use tether_images::registry::{Credentials, Registries, RegistryError};
use tether_render::egress::Egress;
use tether_testenv::registry::{Registry, RegistryOptions};

fn loopback_allowed() -> Registries {
    Registries::new(Egress::parse(&["127.0.0.1".to_owned()]).expect("a policy"))
}

fn repository(registry: &Registry, path: &str) -> ImageRepository {
    ImageRepository::parse(&format!("{}/{path}", registry.addr())).expect("a repository")
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_come_page_by_page_and_a_digest_is_what_skopeo_pushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path(), RegistryOptions::default())
        .await
        .expect("registry");
    let mut pushed = Vec::new();
    for tag in [
        "1.2.0",
        "1.3.0",
        "1.3.0-rc.1",
        "latest",
        "main-abc-1700000000",
    ] {
        let digest =
            tokio::task::block_in_place(|| registry.push("team/app", tag, tag)).expect("pushed");
        pushed.push((tag, digest));
    }
    let repo = repository(&registry, "team/app");
    let registries = loopback_allowed().with_page_size(2);
    let tags = registries.tags(&repo, None).await.expect("tags");
    let mut names = tags.tags.clone();
    names.sort();
    let mut expected: Vec<&str> = pushed.iter().map(|(t, _)| *t).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(!tags.cut);
    assert_eq!(tags.requests, 3, "five tags, two a page");
    let digest = registries
        .digest(&repo, "1.3.0", None)
        .await
        .expect("digest");
    assert_eq!(digest, pushed[1].1);

    let missing = registries
        .tags(&repository(&registry, "team/none"), None)
        .await;
    assert!(
        matches!(missing, Err(RegistryError::Status { .. })),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_with_htpasswd_needs_the_credentials_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = ("pusher".to_owned(), "s3cret-pass".to_owned());
    let registry = Registry::start(
        dir.path(),
        RegistryOptions {
            auth: Some(auth.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("registry");
    tokio::task::block_in_place(|| registry.push("team/app", "2.0.0", "two")).expect("pushed");
    let repo = repository(&registry, "team/app");
    let registries = loopback_allowed();
    let anonymous = registries.tags(&repo, None).await;
    assert!(
        matches!(&anonymous, Err(RegistryError::Unauthorized { .. })),
        "{anonymous:?}"
    );
    let message = anonymous.expect_err("refused").to_string();
    assert!(message.contains("kas registry login"), "{message}");
    let wrong = Credentials {
        username: "pusher".into(),
        password: "wrong".into(),
    };
    assert!(matches!(
        registries.tags(&repo, Some(&wrong)).await,
        Err(RegistryError::Unauthorized { .. })
    ));
    let right = Credentials {
        username: auth.0,
        password: auth.1,
    };
    let tags = registries.tags(&repo, Some(&right)).await.expect("tags");
    assert_eq!(tags.tags, ["2.0.0"]);
    assert!(
        registries
            .digest(&repo, "2.0.0", Some(&right))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_egress_policy_refuses_a_registry_on_loopback_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path(), RegistryOptions::default())
        .await
        .expect("registry");
    let refused = Registries::new(Egress::default())
        .tags(&repository(&registry, "team/app"), None)
        .await;
    let Err(RegistryError::Unreachable { reason, .. }) = refused else {
        panic!("{refused:?}")
    };
    assert!(reason.contains("refused to connect"), "{reason}");
}
