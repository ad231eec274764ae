//! Signing keys on a running authority: `POST /api/signing-keys/rotate` and
//! `DELETE /api/signing-keys/{kid}` (retire), and what each does to keys already issued.

use pyrogate::core::jwk::{JwkSet, KeySet};
use pyrogate::core::revocation::RevocationList;
use serde_json::Value;

use crate::harness::*;

async fn jwks_kids(http: &Http) -> Vec<String> {
    let jwks = http
        .get("/.well-known/jwks.json")
        .send()
        .await
        .expect(200)
        .json();
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| s(k, "kid").to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&pyrogate::core::b64::decode(header).expect("b64")).expect("JSON");
    s(&header, "kid").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_publishes_a_second_key_and_keys_made_before_still_verify() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let old_kids = jwks_kids(&admin).await;
    assert_eq!(old_kids.len(), 1);
    let before = admin.create_key("before", "Admin", 0).await;
    let before_token = s(&before, "key").to_owned();
    assert_eq!(kid_of(&before_token), old_kids[0]);

    let rotated = admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201)
        .json();
    let new_kid = s(&rotated, "kid").to_owned();
    assert_ne!(new_kid, old_kids[0]);
    let mut kids = jwks_kids(&admin).await;
    kids.sort();
    let mut wanted = vec![old_kids[0].clone(), new_kid.clone()];
    wanted.sort();
    assert_eq!(kids, wanted);

    let listed = admin
        .get("/api/signing-keys")
        .send()
        .await
        .expect(200)
        .json();
    let status = |kid: &str| {
        listed
            .as_array()
            .expect("array")
            .iter()
            .find(|k| k["kid"] == kid)
            .map(|k| s(k, "status").to_owned())
    };
    assert_eq!(status(&new_kid).as_deref(), Some("active"));
    assert_eq!(status(&old_kids[0]).as_deref(), Some("published"));

    // Keys signed before the rotation keep working; new ones are signed by the new key.
    app.client()
        .get("/api/keys")
        .bearer(&before_token)
        .send()
        .await
        .expect(200);
    let after = admin.create_key("after", "Admin", 0).await;
    assert_eq!(kid_of(s(&after, "key")), new_kid);
    app.client()
        .get("/api/keys")
        .bearer(s(&after, "key"))
        .send()
        .await
        .expect(200);
    // The revocation list is now signed by the new key.
    let list = admin
        .get("/api/revocations")
        .send()
        .await
        .expect(200)
        .text();
    assert_eq!(kid_of(&list), new_kid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_key_refuses_every_key_it_signed() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let old_kid = jwks_kids(&admin).await.remove(0);
    let old_admin_key = admin.create_key("old-admin", "Admin", 0).await;
    let old_token = s(&old_admin_key, "key").to_owned();
    let doomed = admin.create_key("old-deleted", "Agent", 0).await;
    admin
        .delete(&format!("/api/keys/{}", doomed["id"]))
        .send()
        .await
        .expect(204);
    let bot = app.client();
    // Verified once, so the verifier has it cached.
    bot.get("/api/keys")
        .bearer(&old_token)
        .send()
        .await
        .expect(200);

    let new_kid = s(
        &admin
            .post("/api/signing-keys/rotate")
            .send()
            .await
            .expect(201)
            .json(),
        "kid",
    )
    .to_owned();
    let version_before = admin
        .get("/api/revocations")
        .send()
        .await
        .expect(200)
        .header("etag")
        .expect("etag")
        .to_owned();
    admin
        .delete(&format!("/api/signing-keys/{old_kid}"))
        .send()
        .await
        .expect(204);
    assert_eq!(jwks_kids(&admin).await, vec![new_kid.clone()]);

    let r = bot
        .get("/api/keys")
        .bearer(&old_token)
        .send()
        .await
        .expect(401);
    assert_eq!(r.errors(), vec!["invalid credentials: unknown signing key"]);
    assert!(r.header("www-authenticate").is_some());

    // The retired key's revocation entries are dropped (its tokens are dead anyway), and the
    // list still verifies against what is published now.
    let r = admin.get("/api/revocations").send().await.expect(200);
    assert_ne!(r.header("etag"), Some(version_before.as_str()));
    let jwks: JwkSet = serde_json::from_slice(
        &admin
            .get("/.well-known/jwks.json")
            .send()
            .await
            .expect(200)
            .body,
    )
    .expect("JwkSet");
    let list = RevocationList::verify(
        &r.text(),
        &KeySet::from_jwks(&jwks).expect("keys"),
        "pyrogate",
    )
    .expect("verifies");
    assert!(list.entries.is_empty(), "{:?}", list.entries);
    // Keys the retired key signed no longer work, so they are no longer listed either.
    let listed = admin.get("/api/keys").send().await.expect(200).json();
    assert_eq!(
        listed,
        serde_json::json!([]),
        "dead keys still listed: {listed}"
    );
    // Keys signed by the new key are unaffected; the session never depended on either.
    let fresh = admin.create_key("fresh", "Admin", 0).await;
    bot.get("/api/keys")
        .bearer(s(&fresh, "key"))
        .send()
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_the_active_an_unknown_or_a_retired_key_is_refused() {
    let app = Authority::start().await;
    let admin = app.admin().await;
    let active = jwks_kids(&admin).await.remove(0);
    let r = admin
        .delete(&format!("/api/signing-keys/{active}"))
        .send()
        .await
        .expect(409);
    assert!(r.errors()[0].contains("rotate first"), "{:?}", r.errors());
    assert_eq!(jwks_kids(&admin).await, vec![active.clone()]);
    admin
        .delete("/api/signing-keys/no-such-kid")
        .send()
        .await
        .expect(404);
    admin
        .post("/api/signing-keys/rotate")
        .send()
        .await
        .expect(201);
    admin
        .delete(&format!("/api/signing-keys/{active}"))
        .send()
        .await
        .expect(204);
    let r = admin
        .delete(&format!("/api/signing-keys/{active}"))
        .send()
        .await
        .expect(409);
    assert!(
        r.errors()[0].contains("already retired"),
        "{:?}",
        r.errors()
    );
}
