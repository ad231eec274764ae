//! The single sign-on parsers of what an OpenID provider (or whoever answers in its place)
//! sends: the discovery document, the JWK Set, the token response, UserInfo, the ID token's
//! header and claims, and the `next=` path check. On arbitrary bytes and on generated JSON of
//! roughly the right shape, none panics; `next=` accepts only same-site paths.

use proptest::prelude::*;
use pyrogate::authority::oidc::id_token::{self, Expected};
use pyrogate::authority::oidc::{claims, discovery::Discovery, jwks, next::safe_next, token};
use pyrogate::core::b64;
use serde_json::{Map, Value, json};

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[a-z:/.0-9]{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names the parsers look for, and others.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "code_challenge_methods_supported",
            "authorization_response_iss_parameter_supported",
            "keys",
            "kty",
            "kid",
            "alg",
            "use",
            "crv",
            "n",
            "e",
            "x",
            "y",
            "id_token",
            "access_token",
            "token_type",
            "error",
            "iss",
            "sub",
            "aud",
            "azp",
            "exp",
            "iat",
            "nbf",
            "nonce",
            "email",
            "email_verified",
            "groups",
            "preferred_username",
            "name",
            "crit",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,12}",
    ]
}

fn any_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(field(), any_json(), 0..14).prop_map(|m| m.into_iter().collect())
}

fn bytes_or_json() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        any_object().prop_map(|m| Value::Object(m).to_string().into_bytes()),
        any_object().prop_map(|m| json!({ "keys": [Value::Object(m)] })
            .to_string()
            .into_bytes()),
    ]
}

/// Compact-JWS-shaped strings: three parts, each arbitrary or base64url of JSON.
fn token_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9_-]{0,40}",
        any_object().prop_map(|m| b64::encode(Value::Object(m).to_string())),
        any::<String>(),
    ];
    prop_oneof![
        any::<String>(),
        (part.clone(), part.clone(), part).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
    ]
}

fn ed_key() -> jwks::ProviderKey {
    let key = pyrogate::core::crypto::SigningKey::from_bytes(&[7; 32]);
    let set = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "k",
        "x": b64::encode(key.verifying_key().as_bytes()),
    }]});
    jwks::parse(set.to_string().as_bytes())
        .unwrap()
        .pop()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_providers_answers_never_panic_the_parsers(body in bytes_or_json()) {
        let _ = Discovery::parse(&body, "https://idp.example");
        let _ = jwks::parse(&body);
        let _ = token::TokenResponse::parse(&body);
        let _ = token::error_code(&body);
        let _ = token::parse_userinfo(&body);
    }

    #[test]
    fn id_tokens_of_any_shape_are_refused_without_a_panic(raw in token_like(), claims in any_object()) {
        let key = ed_key();
        let expected = Expected {
            issuer: "https://idp.example",
            client_id: "pyrogate",
            nonce: "n",
            now: 1_800_000_000,
            skew: 60,
        };
        let _ = id_token::header(&raw);
        // Nothing here is signed by the key: nothing verifies.
        prop_assert!(id_token::verify(&raw, &key, &expected).is_err());
        let _ = id_token::check_claims(&claims, &expected);
        let _ = id_token::select(std::slice::from_ref(&key), jsonwebtoken::Algorithm::EdDSA, None);
    }

    #[test]
    fn claims_of_any_shape_map_without_a_panic(c in any_object(), u in any_object()) {
        let groups = claims::groups(&c, "groups");
        prop_assert!(groups.len() <= 256);
        let _ = claims::role_for(&groups, &[], false, pyrogate::core::token::Role::ReadOnly);
        let _ = claims::domain_allowed(&c, &["example.com".to_owned()]);
        let _ = claims::email(&c);
        let _ = claims::full_name(&c);
        let name = claims::user_name(&c);
        prop_assert!(!name.is_empty());
        let _ = claims::merge(c, Some(u));
    }

    #[test]
    fn next_accepts_only_same_site_paths(raw in prop_oneof![
        any::<String>(),
        "[/\\\\a-z:.%?#@ \t]{0,24}",
        "/[a-z/]{0,20}",
    ]) {
        if let Some(path) = safe_next(&raw) {
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.starts_with("//"));
            prop_assert!(!path.contains('\\'));
            prop_assert!(path.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}
