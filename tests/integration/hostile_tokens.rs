//! Every way we could think of to get a bad token past the verifier, each with the exact reason
//! it must be refused. Claim rules are tested behind a valid signature (see `support::craft`),
//! so a refusal proves the rule, not merely that the signature failed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyrogate::core::b64;
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::revocation::RevocationList;
use pyrogate::core::token::{API_KEY_TYP, MAX_TIMESTAMP, Role, SESSION_TYP};
use pyrogate::core::verifier::{MAX_TOKEN_BYTES, VerifyError};

use crate::support::*;

const REVOKED_JTI: &str = "cmV2b2tlZC1yZXZva2VkLQ";

struct Case {
    what: String,
    token: String,
    expected: VerifyError,
}

/// Claims as raw JSON text: the valid base claims with some members replaced (`Some(raw
/// JSON)`), removed (`None`) or, for names not in the base, appended.
fn claims(overrides: &[(&str, Option<&str>)]) -> String {
    let exp = (NOW + 3600).to_string();
    let now = NOW.to_string();
    let jti = format!("\"{JTI}\"");
    let mut members: Vec<(String, Option<String>)> = [
        ("iss", "\"pyrogate\""),
        ("sub", "\"ci\""),
        ("role", "\"Agent\""),
        ("iat", now.as_str()),
        ("exp", exp.as_str()),
        ("jti", jti.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
    .collect();
    for (name, value) in overrides {
        let value = value.map(str::to_owned);
        match members.iter_mut().find(|(k, _)| k == name) {
            Some(member) => member.1 = value,
            None => members.push(((*name).to_owned(), value)),
        }
    }
    let body: Vec<String> = members
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("\"{k}\":{v}")))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn header(alg: &str, typ: &str, kid: &str, extra: &str) -> String {
    format!(r#"{{"alg":"{alg}","typ":"{typ}","kid":"{kid}"{extra}}}"#)
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Replaces the byte at `at` with `with` (ASCII only, so the result stays a `String`).
fn replace_at(token: &str, at: usize, with: char) -> String {
    let mut out = token.to_owned();
    out.replace_range(at..at + 1, &with.to_string());
    out
}

struct Keys {
    /// Trusted throughout.
    trusted: SigningKey,
    /// Trusted at first, then dropped with `set_keys`.
    dropped: SigningKey,
    /// Never trusted.
    foreign: SigningKey,
}

fn keys() -> Keys {
    Keys {
        trusted: fixed_key(1),
        dropped: fixed_key(2),
        foreign: fixed_key(3),
    }
}

fn hostile_cases(k: &Keys, revoked: &str, from_dropped_key: &str) -> Vec<Case> {
    let key = &k.trusted;
    let kid = kid_of(key);
    let good_header = header_json(key);
    let good_claims = claims_json();
    let valid = craft(key, &good_header, &good_claims);
    let payload_b64 = b64::encode(&good_claims);
    let pubkey = key.verifying_key().to_bytes();

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |what: &str, token: String, expected: VerifyError| {
        cases.push(Case {
            what: what.to_owned(),
            token,
            expected,
        })
    };
    let signed_header = |h: &str| craft(key, h, &good_claims);
    let signed_claims = |c: &str| craft(key, &good_header, c);
    use VerifyError::*;

    // --- Algorithms -------------------------------------------------------------------------
    add(
        "alg none, unsigned, empty signature segment",
        format!(
            "{}.{payload_b64}.",
            b64::encode(header("none", API_KEY_TYP, &kid, ""))
        ),
        UnsupportedAlgorithm,
    );
    add(
        "bare {\"alg\":\"none\"} header, empty signature",
        format!("{}.{payload_b64}.", b64::encode(r#"{"alg":"none"}"#)),
        UnsupportedAlgorithm,
    );
    add(
        "alg NONE in capitals, unsigned",
        format!(
            "{}.{payload_b64}.",
            b64::encode(header("NONE", API_KEY_TYP, &kid, ""))
        ),
        UnsupportedAlgorithm,
    );
    for (what, secret) in [
        ("HS256 keyed with the raw public key bytes", pubkey.to_vec()),
        (
            "HS256 keyed with the public key's base64url x",
            b64::encode(pubkey).into_bytes(),
        ),
        (
            "HS256 keyed with the published JWK JSON",
            serde_json::to_vec(&pyrogate::core::jwk::Jwk::from_verifying_key(
                &key.verifying_key(),
            ))
            .unwrap(),
        ),
    ] {
        let input = signing_input(
            header("HS256", API_KEY_TYP, &kid, "").as_bytes(),
            good_claims.as_bytes(),
        );
        let mac = hmac_sha256(&secret, input.as_bytes());
        add(what, with_signature(&input, &mac), UnsupportedAlgorithm);
    }
    let rs_input = signing_input(
        header("RS256", API_KEY_TYP, &kid, "").as_bytes(),
        good_claims.as_bytes(),
    );
    add(
        "RS256 with a 256-byte signature",
        with_signature(&rs_input, &[0x5a; 256]),
        UnsupportedAlgorithm,
    );
    let es_input = signing_input(
        header("ES256", API_KEY_TYP, &kid, "").as_bytes(),
        good_claims.as_bytes(),
    );
    add(
        "ES256 with a 64-byte signature",
        with_signature(&es_input, &[0x5a; 64]),
        UnsupportedAlgorithm,
    );
    add(
        "lower-case eddsa, validly signed",
        signed_header(&header("eddsa", API_KEY_TYP, &kid, "")),
        UnsupportedAlgorithm,
    );
    add(
        "fully-specified Ed25519 alg, validly signed",
        signed_header(&header("Ed25519", API_KEY_TYP, &kid, "")),
        UnsupportedAlgorithm,
    );
    add(
        "missing alg, validly signed",
        signed_header(&format!(r#"{{"typ":"{API_KEY_TYP}","kid":"{kid}"}}"#)),
        UnsupportedAlgorithm,
    );
    add(
        "alg null",
        signed_header(&format!(
            r#"{{"alg":null,"typ":"{API_KEY_TYP}","kid":"{kid}"}}"#
        )),
        UnsupportedAlgorithm,
    );
    add(
        "alg as an array",
        signed_header(&format!(
            r#"{{"alg":["EdDSA"],"typ":"{API_KEY_TYP}","kid":"{kid}"}}"#
        )),
        Malformed,
    );
    add(
        "alg as a number",
        signed_header(&format!(
            r#"{{"alg":1,"typ":"{API_KEY_TYP}","kid":"{kid}"}}"#
        )),
        Malformed,
    );

    // --- Key ids ----------------------------------------------------------------------------
    add(
        "missing kid",
        signed_header(&format!(r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}"}}"#)),
        MissingKeyId,
    );
    add(
        "kid null",
        signed_header(&format!(
            r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}","kid":null}}"#
        )),
        MissingKeyId,
    );
    add(
        "kid as a number",
        signed_header(&format!(
            r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}","kid":7}}"#
        )),
        Malformed,
    );
    add(
        "unknown kid: a foreign key signing with its own thumbprint",
        craft(&k.foreign, &header_json(&k.foreign), &good_claims),
        UnknownKey,
    );
    add(
        "a foreign key claiming the trusted kid",
        craft(&k.foreign, &good_header, &good_claims),
        BadSignature,
    );
    add(
        "a 400-character kid (header over the 512-character cap)",
        signed_header(&header("EdDSA", API_KEY_TYP, &"k".repeat(400), "")),
        Malformed,
    );
    add(
        "a 300-character kid (under the header cap)",
        signed_header(&header("EdDSA", API_KEY_TYP, &"k".repeat(300), "")),
        UnknownKey,
    );
    add(
        "a path-like kid",
        signed_header(&header("EdDSA", API_KEY_TYP, "../../etc/passwd", "")),
        UnknownKey,
    );
    add(
        "an empty kid",
        signed_header(&header("EdDSA", API_KEY_TYP, "", "")),
        UnknownKey,
    );
    add(
        "kid of the trusted key with a trailing NUL",
        signed_header(&header("EdDSA", API_KEY_TYP, &format!("{kid}\\u0000"), "")),
        UnknownKey,
    );

    // --- Header parameters that point elsewhere for keys --------------------------------------
    let foreign_jwk = serde_json::to_string(&pyrogate::core::jwk::Jwk::from_verifying_key(
        &k.foreign.verifying_key(),
    ))
    .unwrap();
    for (name, value) in [
        ("jku", r#""https://evil.example/jwks.json""#.to_owned()),
        ("x5u", r#""https://evil.example/cert.pem""#.to_owned()),
        ("jwk", foreign_jwk),
        ("x5c", r#"["MIIB"]"#.to_owned()),
        ("x5t", r#""dGh1bWI""#.to_owned()),
        ("x5t#S256", r#""dGh1bWI""#.to_owned()),
        ("crit", r#"["exp"]"#.to_owned()),
    ] {
        add(
            &format!("forbidden header parameter {name}"),
            signed_header(&header(
                "EdDSA",
                API_KEY_TYP,
                &kid,
                &format!(r#","{name}":{value}"#),
            )),
            ForbiddenHeader(name),
        );
    }
    add(
        "jwk: null is still a jwk",
        signed_header(&header("EdDSA", API_KEY_TYP, &kid, r#","jwk":null"#)),
        ForbiddenHeader("jwk"),
    );
    add(
        "forbidden header with a foreign key's jwk, signed by that key",
        craft(
            &k.foreign,
            &header(
                "EdDSA",
                API_KEY_TYP,
                &kid,
                &format!(
                    r#","jwk":{}"#,
                    serde_json::to_string(&pyrogate::core::jwk::Jwk::from_verifying_key(
                        &k.foreign.verifying_key()
                    ))
                    .unwrap()
                ),
            ),
            &good_claims,
        ),
        ForbiddenHeader("jwk"),
    );
    add(
        "unknown header parameter zip",
        signed_header(&header("EdDSA", API_KEY_TYP, &kid, r#","zip":"DEF""#)),
        Malformed,
    );
    add(
        "unencoded payload b64:false",
        signed_header(&header("EdDSA", API_KEY_TYP, &kid, r#","b64":false"#)),
        Malformed,
    );
    add(
        "unknown header parameter cty",
        signed_header(&header("EdDSA", API_KEY_TYP, &kid, r#","cty":"JWT""#)),
        Malformed,
    );

    // --- Token type -------------------------------------------------------------------------
    add(
        "typ JWT",
        signed_header(&header("EdDSA", "JWT", &kid, "")),
        WrongType,
    );
    add(
        "a session-cookie token signed by the very same key",
        signer(key).sign(SESSION_TYP, good_claims.as_bytes()),
        WrongType,
    );
    add(
        "a signed revocation list presented as an API key",
        RevocationList::empty(ISSUER, NOW).sign(&signer(key)),
        WrongType,
    );
    add(
        "missing typ",
        signed_header(&format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#)),
        WrongType,
    );
    add(
        "typ in capitals",
        signed_header(&header("EdDSA", "APIKEY+JWT", &kid, "")),
        WrongType,
    );
    add(
        "typ with an application/ prefix",
        signed_header(&header("EdDSA", "application/apikey+jwt", &kid, "")),
        WrongType,
    );

    // --- Time -------------------------------------------------------------------------------
    let t = |v: u64| v.to_string();
    add(
        "expired exactly at exp + skew",
        signed_claims(&claims(&[
            ("iat", Some(&t(NOW - 3600))),
            ("exp", Some(&t(NOW - SKEW))),
        ])),
        Expired,
    );
    add(
        "expired an hour ago",
        signed_claims(&claims(&[
            ("iat", Some(&t(NOW - 7200))),
            ("exp", Some(&t(NOW - 3600))),
        ])),
        Expired,
    );
    add(
        "nbf in the future beyond skew",
        signed_claims(&claims(&[("nbf", Some(&t(NOW + SKEW + 1)))])),
        NotYetValid,
    );
    add(
        "iat in the future beyond skew",
        signed_claims(&claims(&[
            ("iat", Some(&t(NOW + SKEW + 1))),
            ("exp", Some(&t(NOW + 7200))),
        ])),
        NotYetValid,
    );
    add(
        "never-expiring token issued in the future",
        signed_claims(&claims(&[("iat", Some(&t(NOW + 86_400))), ("exp", None)])),
        NotYetValid,
    );
    add(
        "nbf as a string",
        signed_claims(&claims(&[("nbf", Some("\"0\""))])),
        Malformed,
    );

    // --- exp and iat types and ranges ---------------------------------------------------------
    for (what, exp, expected) in [
        ("exp as a string", "\"1800003600\"".to_owned(), Malformed),
        ("exp as a float", "1800003600.0".to_owned(), Malformed),
        (
            "exp in exponent notation",
            "1.8000036e9".to_owned(),
            Malformed,
        ),
        ("exp negative", "-1".to_owned(), Malformed),
        ("exp 1e30", "1e30".to_owned(), Malformed),
        ("exp u64::MAX", u64::MAX.to_string(), InvalidClaim("exp")),
        (
            "exp u64::MAX + 1",
            "18446744073709551616".to_owned(),
            Malformed,
        ),
        (
            "exp after year 9999",
            (MAX_TIMESTAMP + 1).to_string(),
            InvalidClaim("exp"),
        ),
        ("exp equal to iat", NOW.to_string(), InvalidClaim("exp")),
        ("exp before iat", (NOW - 1).to_string(), InvalidClaim("exp")),
        ("exp null", "null".to_owned(), Malformed),
        ("exp true", "true".to_owned(), Malformed),
        ("exp as an object", r#"{"$gt":0}"#.to_owned(), Malformed),
    ] {
        add(
            what,
            signed_claims(&claims(&[("exp", Some(&exp))])),
            expected,
        );
    }
    add(
        "iat as a string",
        signed_claims(&claims(&[("iat", Some("\"1800000000\""))])),
        Malformed,
    );
    add(
        "iat null",
        signed_claims(&claims(&[("iat", Some("null"))])),
        Malformed,
    );
    add(
        "iat negative",
        signed_claims(&claims(&[("iat", Some("-5"))])),
        Malformed,
    );
    add(
        "iat after year 9999",
        signed_claims(&claims(&[
            ("iat", Some(&t(MAX_TIMESTAMP + 1))),
            ("exp", None),
        ])),
        InvalidClaim("iat"),
    );

    // --- Required claims ----------------------------------------------------------------------
    add(
        "missing jti",
        signed_claims(&claims(&[("jti", None)])),
        InvalidClaim("jti"),
    );
    add(
        "short jti (8 characters)",
        signed_claims(&claims(&[("jti", Some("\"AAECAwQF\""))])),
        InvalidClaim("jti"),
    );
    add(
        "jti one character short of 128 bits",
        signed_claims(&claims(&[("jti", Some(&format!("\"{}\"", &JTI[..21])))])),
        InvalidClaim("jti"),
    );
    add(
        "jti of 129 characters",
        signed_claims(&claims(&[(
            "jti",
            Some(&format!("\"{}\"", "A".repeat(129))),
        )])),
        InvalidClaim("jti"),
    );
    add(
        "jti outside the base64url alphabet",
        signed_claims(&claims(&[("jti", Some("\"AAECAwQFBgcICQoLDA0OD+/\""))])),
        InvalidClaim("jti"),
    );
    add(
        "jti as a number",
        signed_claims(&claims(&[("jti", Some("12345678901234567890123"))])),
        Malformed,
    );
    add(
        "missing iat",
        signed_claims(&claims(&[("iat", None)])),
        InvalidClaim("iat"),
    );
    add(
        "missing sub",
        signed_claims(&claims(&[("sub", None)])),
        InvalidClaim("sub"),
    );
    add(
        "empty sub",
        signed_claims(&claims(&[("sub", Some("\"\""))])),
        InvalidClaim("sub"),
    );
    add(
        "sub of 256 characters",
        signed_claims(&claims(&[(
            "sub",
            Some(&format!("\"{}\"", "n".repeat(256))),
        )])),
        InvalidClaim("sub"),
    );
    add(
        "missing role",
        signed_claims(&claims(&[("role", None)])),
        InvalidClaim("role"),
    );
    add(
        "unknown role root",
        signed_claims(&claims(&[("role", Some("\"root\""))])),
        UnknownRole,
    );
    add(
        "empty role",
        signed_claims(&claims(&[("role", Some("\"\""))])),
        UnknownRole,
    );
    add(
        "role with a trailing space",
        signed_claims(&claims(&[("role", Some("\"Agent \""))])),
        UnknownRole,
    );
    add(
        "role with a non-ASCII look-alike (Turkish dotted I)",
        signed_claims(&claims(&[("role", Some("\"ADM\u{130}N\""))])),
        UnknownRole,
    );
    add(
        "role as an array",
        signed_claims(&claims(&[("role", Some("[\"Admin\"]"))])),
        Malformed,
    );
    add(
        "role null",
        signed_claims(&claims(&[("role", Some("null"))])),
        Malformed,
    );
    add(
        "wrong iss",
        signed_claims(&claims(&[("iss", Some("\"https://evil.example\""))])),
        WrongIssuer,
    );
    add(
        "iss differing only in case",
        signed_claims(&claims(&[("iss", Some("\"Pyrogate\""))])),
        WrongIssuer,
    );
    add(
        "missing iss",
        signed_claims(&claims(&[("iss", None)])),
        WrongIssuer,
    );
    add(
        "iss null",
        signed_claims(&claims(&[("iss", Some("null"))])),
        Malformed,
    );
    add(
        "tenant with a slash",
        signed_claims(&claims(&[("tenant", Some("\"a/b\""))])),
        InvalidClaim("tenant"),
    );
    add(
        "empty tenant",
        signed_claims(&claims(&[("tenant", Some("\"\""))])),
        InvalidClaim("tenant"),
    );
    add(
        "reserved tenant __mimir_cluster",
        signed_claims(&claims(&[("tenant", Some("\"__mimir_cluster\""))])),
        InvalidClaim("tenant"),
    );

    // --- Liveness -----------------------------------------------------------------------------
    add("revoked jti", revoked.to_owned(), Revoked);
    add(
        "signed by a key removed from the key set",
        from_dropped_key.to_owned(),
        UnknownKey,
    );

    // --- Structure and encoding -----------------------------------------------------------------
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload_seg, sig_seg) = rest.split_once('.').unwrap();
    add("two segments", format!("{head}.{payload_seg}"), Malformed);
    add("four segments", format!("{valid}.{sig_seg}"), Malformed);
    add(
        "valid token with a trailing dot",
        format!("{valid}."),
        Malformed,
    );
    add("empty string", String::new(), Malformed);
    add("only dots", "..".to_owned(), Malformed);
    add("a single dot", ".".to_owned(), Malformed);
    add("three dots", "...".to_owned(), Malformed);
    add(
        "a JWE-shaped five-segment token",
        format!("{head}..{payload_seg}.{sig_seg}.AAAA"),
        Malformed,
    );
    add(
        "padding = in the header segment",
        format!("{head}=.{payload_seg}.{sig_seg}"),
        Malformed,
    );
    add(
        "padding == in the signature segment",
        format!("{head}.{payload_seg}.{sig_seg}=="),
        Malformed,
    );
    add("one trailing =", format!("{valid}="), Malformed);
    add(
        "'+' in the payload",
        replace_at(&valid, head.len() + 1, '+'),
        Malformed,
    );
    add(
        "'/' in the signature",
        replace_at(&valid, valid.len() - 10, '/'),
        Malformed,
    );
    add(
        "standard base64 instead of base64url for the signature",
        format!(
            "{}.{}",
            signing_input_of(&valid),
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                signature_of(&valid)
            )
        ),
        Malformed,
    );
    add(
        "non-canonical trailing bits in the signature",
        {
            // The last character of an 86-character signature carries 2 bits of data and
            // 4 unused bits that must be zero; set the lowest unused bit.
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let last = valid.as_bytes()[valid.len() - 1];
            let index = ALPHABET.iter().position(|&c| c == last).unwrap();
            assert_eq!(
                index & 0b1111,
                0,
                "a canonical signature ends in A, Q, g or w"
            );
            let bumped = char::from(ALPHABET[index | 1]);
            replace_at(&valid, valid.len() - 1, bumped)
        },
        Malformed,
    );
    add("a space inside", replace_at(&valid, 20, ' '), Malformed);
    add("a newline inside", replace_at(&valid, 20, '\n'), Malformed);
    add("a tab inside", replace_at(&valid, 20, '\t'), Malformed);
    add("a NUL inside", replace_at(&valid, 20, '\0'), Malformed);
    add("one trailing space", format!("{valid} "), Malformed);
    add("a trailing newline", format!("{valid}\n"), Malformed);
    add("a trailing CRLF", format!("{valid}\r\n"), Malformed);
    add("a leading space", format!(" {valid}"), Malformed);
    add(
        "a Bearer prefix left on",
        format!("Bearer {valid}"),
        Malformed,
    );
    add(
        "a non-ASCII character inside",
        format!("{head}é.{payload_seg}.{sig_seg}"),
        Malformed,
    );
    add(
        "header JSON that is not UTF-8",
        craft_bytes(
            key,
            &[
                format!(r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}","kid":"{kid}"#).as_bytes(),
                &[0xff],
                br#""}"#.as_slice(),
            ]
            .concat(),
            good_claims.as_bytes(),
        ),
        Malformed,
    );
    add(
        "claims JSON that is not UTF-8, validly signed",
        craft_bytes(
            key,
            good_header.as_bytes(),
            &[
                br#"{"iss":"pyrogate","sub":"caf"#.as_slice(),
                &[0xe9],
                format!(
                    r#"","role":"Agent","iat":{NOW},"exp":{},"jti":"{JTI}"}}"#,
                    NOW + 3600
                )
                .as_bytes(),
            ]
            .concat(),
        ),
        Malformed,
    );
    add(
        "a non-UTF-8 byte inside an unknown claim, validly signed",
        craft_bytes(
            key,
            good_header.as_bytes(),
            &[
                &good_claims.as_bytes()[..good_claims.len() - 1],
                br#","note":"caf"#.as_slice(),
                &[0xe9],
                br#""}"#.as_slice(),
            ]
            .concat(),
        ),
        Malformed,
    );
    add(
        "a lone surrogate escape inside an unknown claim, validly signed",
        signed_claims(&claims(&[("note", Some(r#""\ud800""#))])),
        Malformed,
    );
    add(
        "header with a UTF-8 byte-order mark",
        signed_header(&format!("\u{feff}{good_header}")),
        Malformed,
    );
    add("header is JSON null", signed_header("null"), Malformed);
    add(
        "header is a JSON string",
        signed_header("\"EdDSA\""),
        Malformed,
    );
    add(
        "header is a JSON array of the right values",
        signed_header(&format!(r#"["EdDSA","{API_KEY_TYP}","{kid}"]"#)),
        Malformed,
    );
    add("empty header", signed_header(""), Malformed);
    add("claims are JSON null", signed_claims("null"), Malformed);
    add("claims are empty", signed_claims(""), Malformed);
    add("claims are a JSON number", signed_claims("42"), Malformed);
    add(
        "claims are a JSON array of the right values",
        signed_claims(&format!(
            r#"["pyrogate","ci","Agent",{NOW},{},{NOW},"{JTI}"]"#,
            NOW + 3600
        )),
        Malformed,
    );
    add(
        "header and claims both JSON arrays of the right values",
        craft(
            key,
            &format!(r#"["EdDSA","{API_KEY_TYP}","{kid}"]"#),
            &format!(
                r#"["pyrogate","ci","Agent",{NOW},{},{NOW},"{JTI}"]"#,
                NOW + 3600
            ),
        ),
        Malformed,
    );
    add(
        "claims array behind whitespace",
        signed_claims(&format!(
            " \n[\"pyrogate\",\"ci\",\"Agent\",{NOW},{},{NOW},\"{JTI}\"]",
            NOW + 3600
        )),
        Malformed,
    );
    add(
        "claims followed by trailing garbage",
        signed_claims(&format!("{good_claims}x")),
        Malformed,
    );
    add(
        "claims followed by a second object",
        signed_claims(&format!("{good_claims}{{}}")),
        Malformed,
    );

    // --- Nesting ------------------------------------------------------------------------------
    add(
        "10 000 nested arrays in a jwk header (over the size cap)",
        signed_header(&header(
            "EdDSA",
            API_KEY_TYP,
            &kid,
            &format!(r#","jwk":{}"#, nested(10_000)),
        )),
        TooLarge,
    );
    add(
        "100 nested arrays in a jwk header",
        signed_header(&header(
            "EdDSA",
            API_KEY_TYP,
            &kid,
            &format!(r#","jwk":{}"#, nested(100)),
        )),
        ForbiddenHeader("jwk"),
    );
    add(
        "100 nested arrays as the kid",
        signed_header(&format!(
            r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}","kid":{}}}"#,
            nested(100)
        )),
        Malformed,
    );
    add(
        "10 000 nested arrays in a claim (over the size cap)",
        signed_claims(&claims(&[("ext", Some(&nested(10_000)))])),
        TooLarge,
    );
    add(
        "1 000 nested arrays in an unknown claim of a wrong-issuer token",
        signed_claims(&claims(&[
            ("iss", Some("\"evil\"")),
            ("ext", Some(&nested(1_000))),
        ])),
        WrongIssuer,
    );
    add(
        "1 000 nested arrays as the role",
        signed_claims(&claims(&[("role", Some(&nested(1_000)))])),
        Malformed,
    );
    add(
        "1 000 unclosed arrays in an unknown claim",
        signed_claims(&format!(
            r#"{{"iss":"pyrogate","ext":{}}}"#,
            "[".repeat(1_000)
        )),
        Malformed,
    );
    add(
        "claims that are 1 000 nested arrays",
        signed_claims(&nested(1_000)),
        Malformed,
    );
    add(
        "claims nested 300 objects deep: skipped without recursion, then no iss",
        signed_claims(&format!("{}1{}", r#"{"a":"#.repeat(300), "}".repeat(300))),
        WrongIssuer,
    );

    // --- Duplicates ---------------------------------------------------------------------------
    add(
        "alg twice (EdDSA, EdDSA)",
        signed_header(&format!(
            r#"{{"alg":"EdDSA","alg":"EdDSA","typ":"{API_KEY_TYP}","kid":"{kid}"}}"#
        )),
        Malformed,
    );
    add(
        "alg twice (none, then EdDSA)",
        signed_header(&format!(
            r#"{{"alg":"none","typ":"{API_KEY_TYP}","kid":"{kid}","alg":"EdDSA"}}"#
        )),
        Malformed,
    );
    add(
        "alg twice, the second spelled with a unicode escape",
        signed_header(&format!(
            r#"{{"alg":"none","\u0061lg":"EdDSA","typ":"{API_KEY_TYP}","kid":"{kid}"}}"#
        )),
        Malformed,
    );
    add(
        "alg EdDSA followed by an escaped NUL",
        signed_header(&header("EdDSA\\u0000", API_KEY_TYP, &kid, "")),
        UnsupportedAlgorithm,
    );
    add(
        "typ twice",
        signed_header(&format!(
            r#"{{"alg":"EdDSA","typ":"{SESSION_TYP}","typ":"{API_KEY_TYP}","kid":"{kid}"}}"#
        )),
        Malformed,
    );
    add(
        "kid twice",
        signed_header(&format!(
            r#"{{"alg":"EdDSA","typ":"{API_KEY_TYP}","kid":"x","kid":"{kid}"}}"#
        )),
        Malformed,
    );
    add(
        "role twice (Agent, then Admin)",
        signed_claims(&format!(
            r#"{{"iss":"pyrogate","sub":"ci","role":"Agent","iat":{NOW},"exp":{},"jti":"{JTI}","role":"Admin"}}"#,
            NOW + 3600
        )),
        Malformed,
    );
    add(
        "role twice, the second spelled with a unicode escape",
        signed_claims(&format!(
            r#"{{"iss":"pyrogate","sub":"ci","role":"Agent","iat":{NOW},"exp":{},"jti":"{JTI}","r\u006fle":"Admin"}}"#,
            NOW + 3600
        )),
        Malformed,
    );
    add(
        "exp twice",
        signed_claims(&format!(
            r#"{{"iss":"pyrogate","sub":"ci","role":"Agent","iat":{NOW},"exp":{},"jti":"{JTI}","exp":{}}}"#,
            NOW + 3600,
            MAX_TIMESTAMP
        )),
        Malformed,
    );
    add(
        "jti twice",
        signed_claims(&format!(
            r#"{{"iss":"pyrogate","sub":"ci","role":"Agent","iat":{NOW},"exp":{},"jti":"{JTI}","jti":"{REVOKED_JTI}"}}"#,
            NOW + 3600
        )),
        Malformed,
    );

    // --- Signatures ---------------------------------------------------------------------------
    let input = signing_input_of(&valid);
    let sig = signature_of(&valid);
    add(
        "signature of 63 bytes",
        with_signature(input, &sig[..63]),
        Malformed,
    );
    add(
        "signature of 65 bytes",
        with_signature(input, &[sig.as_slice(), &[0]].concat()),
        Malformed,
    );
    add("empty signature", format!("{input}."), Malformed);
    add(
        "all-zero 64-byte signature",
        with_signature(input, &[0u8; 64]),
        BadSignature,
    );
    add(
        "signature with S + L (malleated)",
        with_signature(
            input,
            &[&sig[..32], &add_group_order(&sig[32..])[..]].concat(),
        ),
        BadSignature,
    );
    add(
        "signature with S = L",
        with_signature(input, &[&sig[..32], &GROUP_ORDER[..]].concat()),
        BadSignature,
    );
    add(
        "signature with all bits of S set",
        with_signature(input, &[&sig[..32], &[0xff; 32][..]].concat()),
        BadSignature,
    );
    add(
        "signature with the identity as R and S = 0",
        {
            let mut forged = [0u8; 64];
            forged[0] = 1;
            with_signature(input, &forged)
        },
        BadSignature,
    );
    add(
        "a valid signature over different claims",
        format!(
            "{}.{}",
            signing_input_of(&signed_claims(&claims(&[("role", Some("\"Admin\""))]))),
            b64::encode(&sig)
        ),
        BadSignature,
    );
    add(
        "a valid signature with one bit flipped",
        {
            let mut flipped = sig.clone();
            flipped[10] ^= 0x01;
            with_signature(input, &flipped)
        },
        BadSignature,
    );

    // --- Size -----------------------------------------------------------------------------------
    add(
        "a token of 1 MB",
        format!("{head}.{}.{sig_seg}", "A".repeat(1 << 20)),
        TooLarge,
    );
    add(
        "a token one byte over the cap",
        format!("{valid}{}", "A".repeat(MAX_TOKEN_BYTES + 1 - valid.len())),
        TooLarge,
    );
    add(
        "garbage of exactly the cap is malformed, not too large",
        "A".repeat(MAX_TOKEN_BYTES),
        Malformed,
    );
    add(
        "a header segment over 512 characters",
        format!("{head}{}.{payload_seg}.{sig_seg}", "A".repeat(512)),
        Malformed,
    );

    cases
}

fn verify_without_panic(
    verifier: &pyrogate::core::verifier::Verifier,
    what: &str,
    token: &str,
) -> Result<std::sync::Arc<pyrogate::core::verifier::Principal>, VerifyError> {
    catch_unwind(AssertUnwindSafe(|| verifier.verify(token)))
        .unwrap_or_else(|_| panic!("verify panicked on: {what}"))
}

#[test]
fn every_hostile_token_is_refused_with_its_exact_reason() {
    let k = keys();
    let (verifier, _clock) = verifier(&[&k.trusted, &k.dropped]);

    // Two tokens that are valid now and get cached, then die by revocation / key removal.
    let revoked = craft_claims(
        &k.trusted,
        &claims(&[("jti", Some(&format!("\"{REVOKED_JTI}\"")))]),
    );
    let from_dropped_key = issue(&k.dropped, "old", Role::Agent, 3600, None);
    verifier.verify(&revoked).expect("valid before revocation");
    verifier
        .verify(&from_dropped_key)
        .expect("valid before its key is dropped");
    verifier.set_revocations(revoking(REVOKED_JTI, Some(NOW + 3600)).to_set());
    verifier.set_keys(key_set(&[&k.trusted]));

    let cases = hostile_cases(&k, &revoked, &from_dropped_key);
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let first = verify_without_panic(&verifier, &case.what, &case.token);
        match first {
            Err(got) if got == case.expected => {}
            Err(got) => failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                case.what, case.expected
            )),
            Ok(_) => failures.push(format!("{}: ACCEPTED", case.what)),
        }
        let uncached = catch_unwind(AssertUnwindSafe(|| verifier.verify_uncached(&case.token)))
            .unwrap_or_else(|_| panic!("verify_uncached panicked on: {}", case.what));
        if uncached.as_ref().err() != Some(&case.expected) {
            failures.push(format!(
                "{}: uncached: expected {:?}, got {:?}",
                case.what,
                case.expected,
                uncached.map(|_| "accepted")
            ));
        }
    }
    // A refusal is never cached: every token is refused again, for the same reason.
    for case in &cases {
        let second = verify_without_panic(&verifier, &case.what, &case.token);
        if second.as_ref().err() != Some(&case.expected) {
            failures.push(format!(
                "{} (second time): expected {:?}, got {:?}",
                case.what,
                case.expected,
                second.map(|_| "accepted")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let valid = craft_claims(&k.trusted, &claims_json());
    let principal = verifier
        .verify(&valid)
        .expect("a valid token still passes after every hostile one");
    assert_eq!(principal.name, "ci");
}

#[test]
fn the_hostile_table_has_a_distinct_token_per_case() {
    let k = keys();
    let cases = hostile_cases(&k, "revoked", "dropped");
    let mut tokens: Vec<&str> = cases.iter().map(|c| c.token.as_str()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), cases.len(), "two cases test the same token");
}

#[test]
fn expiry_within_the_clock_skew_still_passes() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    for exp in [NOW - 1, NOW - SKEW / 2, NOW - SKEW + 1] {
        let token = craft_claims(
            &key,
            &claims(&[
                ("iat", Some(&(NOW - 3600).to_string())),
                ("exp", Some(&exp.to_string())),
            ]),
        );
        let principal = verifier
            .verify(&token)
            .unwrap_or_else(|e| panic!("exp {exp} within skew: {e:?}"));
        assert_eq!(principal.expires_at, Some(exp));
    }
}

#[test]
fn iat_and_nbf_within_the_clock_skew_still_pass() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    let ahead = (NOW + SKEW).to_string();
    let later = (NOW + 7200).to_string();
    let iat_ahead = craft_claims(
        &key,
        &claims(&[("iat", Some(&ahead)), ("exp", Some(&later))]),
    );
    let nbf_ahead = craft_claims(&key, &claims(&[("nbf", Some(&ahead))]));
    assert!(verifier.verify(&iat_ahead).is_ok());
    assert!(verifier.verify(&nbf_ahead).is_ok());
}

#[test]
fn role_names_in_claims_parse_case_insensitively() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    for (written, role) in [
        ("agent", Role::Agent),
        ("AGENT", Role::Agent),
        ("readonly", Role::ReadOnly),
        ("aDmIn", Role::Admin),
    ] {
        let token = craft_claims(&key, &claims(&[("role", Some(&format!("\"{written}\"")))]));
        assert_eq!(verifier.verify(&token).expect(written).role, role);
    }
}

#[test]
fn unknown_claims_are_ignored() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    let token = craft_claims(
        &key,
        &claims(&[("aud", Some("\"elsewhere\"")), ("scope", Some("[1,{}]"))]),
    );
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn a_cached_token_expires_when_the_clock_passes_exp_plus_skew() {
    let key = random_key();
    let (verifier, clock) = verifier(&[&key]);
    let token = issue(&key, "ci", Role::Agent, 3600, None);
    verifier.verify(&token).expect("fresh token verifies");
    clock.set(NOW + 3600 + SKEW - 1);
    verifier.verify(&token).expect("still inside the skew");
    clock.advance(1);
    assert_eq!(verifier.verify(&token).unwrap_err(), VerifyError::Expired);
    assert_eq!(verifier.verify(&token).unwrap_err(), VerifyError::Expired);
    // Moving the clock back is not a way to resurrect it either way: the cache holds no verdicts.
    clock.set(NOW);
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn a_cached_token_is_refused_once_its_jti_is_revoked() {
    let key = random_key();
    let (verifier, _) = verifier(&[&key]);
    let token = issue(&key, "ci", Role::Agent, 0, None);
    let jti = verifier.verify(&token).expect("fresh token").jti.clone();
    verifier.set_revocations(revoking(&jti, None).to_set());
    assert_eq!(verifier.verify(&token).unwrap_err(), VerifyError::Revoked);
    assert_eq!(
        verifier.verify_uncached(&token).unwrap_err(),
        VerifyError::Revoked
    );
}

#[test]
fn a_cached_token_is_refused_once_its_signing_key_is_dropped() {
    let old = random_key();
    let new = random_key();
    let (verifier, _) = verifier(&[&old, &new]);
    let token = issue(&old, "ci", Role::Agent, 3600, None);
    verifier.verify(&token).expect("fresh token");
    verifier.set_keys(key_set(&[&new]));
    assert_eq!(
        verifier.verify(&token).unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(
        verifier.verify(&token).unwrap_err(),
        VerifyError::UnknownKey
    );
    let fresh = issue(&new, "ci", Role::Agent, 3600, None);
    assert!(verifier.verify(&fresh).is_ok());
}

#[test]
fn a_valid_token_yields_a_principal_with_the_issued_fields() {
    let key = random_key();
    let (verifier, _) = verifier(&[&key]);
    let token = issue(&key, "ci-agent", Role::Agent, 86_400, Some("team-a"));
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    let principal = verifier.verify(&token).expect("valid token");
    assert_eq!(principal.name, "ci-agent");
    assert_eq!(principal.role, Role::Agent);
    assert_eq!(principal.tenant.as_deref(), Some("team-a"));
    assert_eq!(principal.jti, jti);
    assert_eq!(principal.jti.len(), 22);
    assert_eq!(principal.kid, kid_of(&key));
    assert_eq!(principal.issued_at, NOW);
    assert_eq!(principal.expires_at, Some(NOW + 86_400));
    // The cached answer is the same principal.
    assert_eq!(*verifier.verify(&token).unwrap(), *principal);
}

#[test]
fn a_never_expiring_token_has_no_exp_and_verifies_far_in_the_future() {
    let key = random_key();
    let (verifier, clock) = verifier(&[&key]);
    let token = issue(&key, "forever", Role::ReadOnly, 0, None);
    assert!(claims_of(&token).get("exp").is_none());
    let principal = verifier.verify(&token).expect("valid token");
    assert_eq!(principal.expires_at, None);
    clock.set(MAX_TIMESTAMP);
    assert!(verifier.verify(&token).is_ok());
    assert!(verifier.verify_uncached(&token).is_ok());
}

#[test]
fn a_token_of_the_largest_legal_size_still_verifies() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    // Pad an unknown claim until the token is exactly MAX_TOKEN_BYTES long.
    let base = craft_claims(&key, &claims(&[("pad", Some("\"\""))]));
    let mut pad = (MAX_TOKEN_BYTES - base.len()) * 3 / 4;
    let token = loop {
        let t = craft_claims(
            &key,
            &claims(&[("pad", Some(&format!("\"{}\"", "p".repeat(pad))))]),
        );
        if t.len() <= MAX_TOKEN_BYTES {
            break t;
        }
        pad -= 1;
    };
    assert!(token.len() > MAX_TOKEN_BYTES - 4);
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn json_object_claims_may_be_surrounded_by_json_whitespace() {
    let key = fixed_key(1);
    let (verifier, _) = verifier(&[&key]);
    let token = craft(
        &key,
        &format!(" {}\n", header_json(&key)),
        &format!("\r\n\t{}  ", claims_json()),
    );
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn a_revocation_list_whose_payload_is_a_json_array_is_refused() {
    let key = fixed_key(1);
    let signer = signer(&key);
    let keys = key_set(&[&key]);
    let as_object = br#"{"iss":"pyrogate","ver":1,"iat":0,"entries":[]}"#;
    let signed = signer.sign(pyrogate::core::token::REVOCATIONS_TYP, as_object);
    assert_eq!(
        RevocationList::verify(&signed, &keys, ISSUER).unwrap().ver,
        1
    );
    let as_array = br#"["pyrogate",1,0,[]]"#;
    let signed = signer.sign(pyrogate::core::token::REVOCATIONS_TYP, as_array);
    assert_eq!(
        RevocationList::verify(&signed, &keys, ISSUER).unwrap_err(),
        VerifyError::Malformed
    );
}

/// A token issued by pyrogate before it moved to jsonwebtoken and ring (ed25519-dalek, header
/// `{"alg","typ","kid"}` in that order), with the public JWK of the key that signed it. Public
/// data only: the private key was thrown away.
const PRE_RING_TOKEN: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6ImFwaWtleStqd3QiLCJraWQiOiJydlNHakVyQVdVdUNzRzFIQVV0RE8xM2ItN2NMS1BISzJEZmEzX0xkaS1rIn0.eyJpc3MiOiJweXJvZ2F0ZSIsInN1YiI6ImNvbXBhdC12ZWN0b3IiLCJyb2xlIjoiQWdlbnQiLCJpYXQiOjE3OTYxMTU2MDAsImp0aSI6Ik1zQktqSF9UaTg5WFRSNUROWGJXdWciLCJ0ZW5hbnQiOiJ0ZWFtLWEifQ.l_CUSNclgSs5-JNuYvf1EafojshWoX7SZFtesci2nTIwLTM34rs-r2XpKiD0ch70I2A18XZNRwpD0TqIgJTMCA";
const PRE_RING_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"sRZCRVbVaGWo4TxNdrS-x1fFasab8RfePg6tIrAzVcI","kid":"rvSGjErAWUuCsG1HAUtDO13b-7cLKPHK2Dfa3_Ldi-k","alg":"EdDSA","use":"sig"}]}"#;

#[test]
fn a_token_issued_before_the_move_to_jsonwebtoken_and_ring_still_verifies() {
    let jwks: pyrogate::core::jwk::JwkSet = serde_json::from_str(PRE_RING_JWKS).unwrap();
    let keys = pyrogate::core::jwk::KeySet::from_jwks(&jwks).unwrap();
    let (verifier, _) = verifier(&[]);
    verifier.set_keys(keys);
    let principal = verifier
        .verify(PRE_RING_TOKEN)
        .expect("the old token verifies");
    assert_eq!(principal.name, "compat-vector");
    assert_eq!(principal.role, Role::Agent);
    assert_eq!(principal.tenant.as_deref(), Some("team-a"));
    assert_eq!(principal.jti, "MsBKjH_Ti89XTR5DNXbWug");
    assert_eq!(principal.kid, "rvSGjErAWUuCsG1HAUtDO13b-7cLKPHK2Dfa3_Ldi-k");
    assert_eq!(principal.issued_at, 1_796_115_600);
    assert_eq!(principal.expires_at, None);
    // And through the real clock, as in production (jsonwebtoken's own time checks on).
    let system = pyrogate::core::verifier::Verifier::new(
        pyrogate::core::verifier::VerifierConfig::default(),
        pyrogate::core::jwk::KeySet::from_jwks(&jwks).unwrap(),
        std::sync::Arc::new(pyrogate::core::clock::SystemClock),
    );
    assert!(system.verify_uncached(PRE_RING_TOKEN).is_ok());
}

#[test]
fn ring_rejects_non_canonical_s_but_not_small_order_keys_so_key_sets_refuse_them() {
    use pyrogate::core::crypto::{VerifyingKey, verify_ed25519};
    // Non-canonical S (S + L) of a valid signature: ring refuses it (RFC 8032 §5.1.7).
    let key = fixed_key(1);
    let msg = b"one spelling";
    let sig = key.sign(msg);
    let public = key.verifying_key().to_bytes();
    assert!(verify_ed25519(&public, msg, &sig).is_ok());
    let malleated = [&sig[..32], &add_group_order(&sig[32..])[..]].concat();
    assert!(verify_ed25519(&public, msg, &malleated).is_err());
    // The identity as public key: R = B, S = 1 satisfies [S]B = R + [k]A for every message.
    // ring accepts it, which is why small-order keys never get into a KeySet.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut forged = [0x66u8; 64];
    forged[0] = 0x58;
    forged[32..].fill(0);
    forged[32] = 1;
    assert!(
        verify_ed25519(&identity, b"any message at all", &forged).is_ok(),
        "ring now rejects small-order keys: update docs/architecture.md"
    );
    assert!(VerifyingKey::from_bytes(&identity).is_err());
    let mut jwk = pyrogate::core::jwk::Jwk::from_verifying_key(&key.verifying_key());
    jwk.x = b64::encode(identity);
    jwk.kid = None;
    assert!(
        pyrogate::core::jwk::KeySet::from_jwks(&pyrogate::core::jwk::JwkSet { keys: vec![jwk] })
            .is_err()
    );
}
