//! Scoped keys as tokens: their own `typ`, their claims verified like any other, and refused
//! by a verifier that only knows unscoped keys.

use pyrogate::core::error::VerifyError;
use pyrogate::core::jws;
use pyrogate::core::token::{self, API_KEY_TYP, IssueError, KeyRequest, Role, SCOPED_API_KEY_TYP};
use pyrogate::core::verifier::MAX_TOKEN_BYTES;

use crate::support::*;

fn header_typ(token: &str) -> String {
    let parts = jws::split(token, MAX_TOKEN_BYTES).unwrap();
    let (header, _) = jws::decode_unverified(parts).unwrap();
    header["typ"].as_str().unwrap().to_owned()
}

#[test]
fn a_scoped_key_has_its_own_typ_and_verifies_with_its_scope() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    let scoped = issue_scoped(
        &key,
        "ci",
        Role::Agent,
        &["checkout-*"],
        &["10.0.0.0/8", "::1"],
    );
    assert_eq!(header_typ(&scoped), SCOPED_API_KEY_TYP);
    let claims = claims_of(&scoped);
    assert_eq!(claims["apps"], serde_json::json!(["checkout-*"]));
    assert_eq!(claims["cidrs"], serde_json::json!(["10.0.0.0/8", "::1"]));
    let principal = verifier.verify(&scoped).unwrap();
    let scope = principal.scope.as_ref().expect("a scope");
    assert!(scope.allows_app("checkout-api") && !scope.allows_app("billing"));
    assert!(scope.allows_ip("10.9.9.9".parse().unwrap()));
    assert!(scope.allows_ip("::1".parse().unwrap()));
    assert!(!scope.allows_ip("192.0.2.1".parse().unwrap()));

    let plain = issue(&key, "ci", Role::Agent, 3600, None);
    assert_eq!(header_typ(&plain), API_KEY_TYP);
    assert!(claims_of(&plain).get("apps").is_none());
    assert_eq!(verifier.verify(&plain).unwrap().scope, None);
}

/// What an older node does: it pins the unscoped `typ`, and so refuses a scoped key instead
/// of ignoring the scope claims it does not know.
#[test]
fn a_verifier_that_only_knows_unscoped_keys_refuses_a_scoped_one() {
    let key = fixed_key(1);
    let scoped = issue_scoped(&key, "ci", Role::Agent, &["checkout"], &[]);
    let parts = jws::split(&scoped, MAX_TOKEN_BYTES).unwrap();
    let validation = jws::validation(ISSUER, SKEW, false);
    let old =
        jws::verify::<serde_json::Value>(parts, &[API_KEY_TYP], &key_set(&[&key]), &validation);
    assert_eq!(old.err(), Some(VerifyError::WrongType));
}

#[test]
fn the_typ_and_the_scope_claims_must_agree() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    let kid = kid_of(&key);
    let scoped_header = format!(r#"{{"alg":"EdDSA","typ":"{SCOPED_API_KEY_TYP}","kid":"{kid}"}}"#);
    let with = |extra: &str| {
        let base = claims_json();
        format!("{},{extra}}}", &base[..base.len() - 1])
    };
    // A scope under the unscoped typ: an older verifier would ignore it, so nobody accepts it.
    let sneaky = craft_claims(&key, &with(r#""apps":["checkout"]"#));
    assert_eq!(
        verifier.verify(&sneaky).err(),
        Some(VerifyError::InvalidClaim("typ"))
    );
    // The scoped typ without a scope.
    let empty = craft(&key, &scoped_header, &claims_json());
    assert_eq!(
        verifier.verify(&empty).err(),
        Some(VerifyError::InvalidClaim("apps"))
    );
    for (extra, claim) in [
        (r#""apps":[]"#, "apps"),
        (r#""apps":["*"]"#, "apps"),
        (r#""apps":"checkout""#, "malformed"),
        (r#""apps":null"#, "malformed"),
        (r#""cidrs":["10.0.0.1/8"]"#, "cidrs"),
        (r#""cidrs":["10.0.0.0/8"],"apps":["a b"]"#, "apps"),
    ] {
        let token = craft(&key, &scoped_header, &with(extra));
        let got = verifier.verify(&token).err();
        let want = if claim == "malformed" {
            VerifyError::Malformed
        } else {
            VerifyError::InvalidClaim(claim)
        };
        assert_eq!(got, Some(want), "{extra}");
    }
    let good = craft(&key, &scoped_header, &with(r#""cidrs":["127.0.0.0/8"]"#));
    assert!(verifier.verify(&good).is_ok());
    // An Admin key can mint any key: an app scope on it would be a false promise.
    let admin = claims_json().replace("\"Agent\"", "\"Admin\"");
    let admin = format!("{},\"apps\":[\"a\"]}}", &admin[..admin.len() - 1]);
    let admin = craft(&key, &scoped_header, &admin);
    assert_eq!(
        verifier.verify(&admin).err(),
        Some(VerifyError::InvalidClaim("apps"))
    );
}

#[test]
fn issuing_refuses_bad_scopes_naming_the_field() {
    let key = fixed_key(1);
    let issue_with = |role: Role, apps: Option<&[String]>, cidrs: Option<&[String]>| {
        token::issue(
            &signer(&key),
            ISSUER,
            NOW,
            &KeyRequest {
                name: "k",
                role,
                ttl_seconds: 0,
                tenant: None,
                apps,
                cidrs,
            },
        )
    };
    let bad_app = ["checkout*x".to_owned()];
    let err = issue_with(Role::Agent, Some(&bad_app), None).unwrap_err();
    assert!(err.to_string().starts_with("apps: "), "{err}");
    let bad_cidr = ["300.0.0.0/8".to_owned()];
    let err = issue_with(Role::ReadOnly, None, Some(&bad_cidr)).unwrap_err();
    assert!(err.to_string().starts_with("cidrs: "), "{err}");
    let app = ["a".to_owned()];
    assert_eq!(
        issue_with(Role::Admin, Some(&app), None).unwrap_err(),
        IssueError::AdminApps
    );
    let net = ["10.0.0.0/8".to_owned()];
    assert!(issue_with(Role::Admin, None, Some(&net)).is_ok());
}
