//! The real `pyrogate` binary against a temp keys dir: signing-key generate / rotate / retire /
//! list / jwks, and token issue / verify / inspect. Every invocation goes through [`Cli::run`],
//! which checks that no private key ever reaches stdout or stderr.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pyrogate::authority::keyring::Keyring;
use pyrogate::core::crypto::SigningKey;
use pyrogate::core::revocation::{RevocationEntry, RevocationList};
use pyrogate::core::token::{KeyRequest, Role};
use serde_json::Value;

use crate::support::*;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn fails(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    fn line(&self) -> String {
        let line = self.stdout.trim_end_matches('\n');
        assert!(!line.contains('\n'), "expected one line: {}", self.stdout);
        line.to_owned()
    }
}

/// A temp working dir with a keys dir inside it.
struct Cli {
    root: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Cli {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// An initialized keyring; returns the first kid.
    fn generated() -> (Self, String) {
        let cli = Cli::new();
        let kid = cli
            .run(&["signing-key", "generate", "--keys-dir", KEYS])
            .ok()
            .line();
        (cli, kid)
    }

    fn keys_dir(&self) -> PathBuf {
        self.root.path().join(KEYS)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn pem(&self, kid: &str) -> PathBuf {
        self.keys_dir().join(format!("{kid}.pem"))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pyrogate"))
            .args(args)
            .current_dir(self.root.path())
            .env_remove("PYROSCOPE_KEYS_DIR")
            .env_remove("PYROSCOPE_AUTH_ISSUER")
            .env_remove("RUST_LOG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pyrogate");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let out = Output {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
        };
        self.assert_no_private_key_in(&out, args);
        out
    }

    /// Neither a PEM header nor the body of any private key on disk appears in the output.
    fn assert_no_private_key_in(&self, out: &Output, args: &[&str]) {
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains("PRIVATE KEY"),
                "{args:?} printed a private key: {text}"
            );
            for body in self.private_key_bodies() {
                assert!(!text.contains(&body), "{args:?} printed a private key");
            }
        }
    }

    fn private_key_bodies(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.keys_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "pem"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|pem| {
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && !l.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn issue(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "issue", "--keys-dir", KEYS];
        all.extend_from_slice(args);
        let out = self.run(&all).ok();
        let token = out.line();
        assert!(
            !out.stderr.contains(&token),
            "issue echoed the token on stderr"
        );
        token
    }

    /// `token verify`, checking that stderr never carries the token.
    fn verify(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec!["token", "verify"];
        all.extend_from_slice(args);
        all.push(token);
        let out = self.run(&all);
        assert_no_echo(&out, token);
        out
    }

    fn jwks(&self) -> Value {
        self.run(&["signing-key", "jwks", "--keys-dir", KEYS])
            .ok()
            .json()
    }

    fn statuses(&self) -> Vec<(String, String)> {
        let json = self
            .run(&["signing-key", "list", "--json", "--keys-dir", KEYS])
            .ok()
            .json();
        json.as_array()
            .expect("a JSON array of keys")
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_owned(),
                    k["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

const KEYS: &str = "keys";

fn assert_no_echo(out: &Output, token: &str) {
    let tail = &token[token.len().saturating_sub(40)..];
    assert!(
        !out.stderr.contains(tail),
        "verify echoed the token on stderr: {}",
        out.stderr
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// RFC 7638 thumbprint computed here, independently of `pyrogate::core::jwk`.
fn rfc7638(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    pyrogate::core::b64::encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("a keys array")
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

#[test]
fn generate_creates_a_manifest_and_an_owner_only_private_key() {
    let (cli, kid) = Cli::generated();
    assert_eq!(kid.len(), 43, "kid is a base64url SHA-256: {kid}");
    let manifest = cli.keys_dir().join("keyring.json");
    let pem = cli.pem(&kid);
    assert!(manifest.is_file());
    assert!(pem.is_file());
    assert_eq!(mode(&pem), 0o600);
    assert_eq!(mode(&manifest) & 0o022, 0, "manifest writable by others");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(!text.contains("PRIVATE"));
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["keys"][0]["kid"], kid.as_str());
    assert_eq!(json["keys"][0]["status"], "active");
    assert_eq!(rfc7638(json["keys"][0]["x"].as_str().unwrap()), kid);
    // Nothing else is left behind (no temporary files).
    let mut names: Vec<String> = std::fs::read_dir(cli.keys_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![format!("{kid}.pem"), "keyring.json".to_owned()];
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn a_second_generate_fails_and_points_to_rotate() {
    let (cli, kid) = Cli::generated();
    let before = std::fs::read(cli.pem(&kid)).unwrap();
    let out = cli
        .run(&["signing-key", "generate", "--keys-dir", KEYS])
        .fails(1);
    assert!(out.stderr.contains("rotate"), "{}", out.stderr);
    assert!(out.stderr.contains(&kid), "{}", out.stderr);
    assert_eq!(std::fs::read(cli.pem(&kid)).unwrap(), before);
    assert_eq!(cli.statuses(), vec![(kid, "active".to_owned())]);
}

#[test]
fn commands_on_an_empty_keys_dir_say_how_to_generate() {
    let cli = Cli::new();
    for args in [
        &["signing-key", "list", "--keys-dir", KEYS][..],
        &["signing-key", "jwks", "--keys-dir", KEYS],
        &["signing-key", "rotate", "--keys-dir", KEYS],
    ] {
        let out = cli.run(args).fails(1);
        assert!(
            out.stderr.contains("signing-key generate"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn list_shows_the_kid_and_its_status() {
    let (cli, kid) = Cli::generated();
    let out = cli.run(&["signing-key", "list", "--keys-dir", KEYS]).ok();
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains(&kid))
        .unwrap_or_else(|| panic!("kid missing from: {}", out.stdout));
    assert!(row.contains("active"), "{row}");
}

#[test]
fn rotate_makes_a_new_active_key_and_keeps_the_old_one_published() {
    let (cli, old) = Cli::generated();
    let new = cli
        .run(&["signing-key", "rotate", "--keys-dir", KEYS])
        .ok()
        .line();
    assert_ne!(new, old);
    assert_eq!(mode(&cli.pem(&new)), 0o600);
    assert_eq!(
        cli.statuses(),
        vec![(old, "published".to_owned()), (new, "active".to_owned())]
    );
}

#[test]
fn jwks_publishes_every_live_key_as_an_rfc_8037_okp_key() {
    let (cli, old) = Cli::generated();
    let new = cli
        .run(&["signing-key", "rotate", "--keys-dir", KEYS])
        .ok()
        .line();
    let jwks = cli.jwks();
    let mut expected = vec![old, new];
    expected.sort();
    assert_eq!(kids(&jwks), expected);
    for jwk in jwks["keys"].as_array().unwrap() {
        let members: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut members = members;
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x"], "{jwk}");
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        let x = jwk["x"].as_str().unwrap();
        assert_eq!(pyrogate::core::b64::decode(x).unwrap().len(), 32);
        assert_eq!(jwk["kid"].as_str().unwrap(), rfc7638(x));
    }
}

#[test]
fn retire_removes_the_key_from_the_jwks_and_deletes_its_private_key() {
    let (cli, old) = Cli::generated();
    let new = cli
        .run(&["signing-key", "rotate", "--keys-dir", KEYS])
        .ok()
        .line();
    cli.run(&["signing-key", "retire", &old, "--keys-dir", KEYS])
        .ok();
    assert_eq!(kids(&cli.jwks()), vec![new.clone()]);
    assert!(!cli.pem(&old).exists());
    assert!(cli.pem(&new).exists());
    assert_eq!(
        cli.statuses(),
        vec![
            (old.clone(), "retired".to_owned()),
            (new, "active".to_owned())
        ]
    );
    // Retiring twice is an error, not a silent success.
    let out = cli
        .run(&["signing-key", "retire", &old, "--keys-dir", KEYS])
        .fails(1);
    assert!(out.stderr.contains("already retired"), "{}", out.stderr);
}

#[test]
fn retiring_the_active_key_fails() {
    let (cli, kid) = Cli::generated();
    let out = cli
        .run(&["signing-key", "retire", &kid, "--keys-dir", KEYS])
        .fails(1);
    assert!(out.stderr.contains("active"), "{}", out.stderr);
    assert!(cli.pem(&kid).exists());
    assert_eq!(kids(&cli.jwks()), vec![kid]);
    let out = cli
        .run(&["signing-key", "retire", "no-such-kid", "--keys-dir", KEYS])
        .fails(1);
    assert!(out.stderr.contains("no-such-kid"), "{}", out.stderr);
}

#[test]
fn a_private_key_readable_by_others_makes_every_command_fail_with_a_chmod_hint() {
    let (cli, kid) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    let pem = cli.pem(&kid);
    for insecure in [0o644, 0o640, 0o604] {
        chmod(&pem, insecure);
        for args in [
            &["signing-key", "generate", "--keys-dir", KEYS][..],
            &["signing-key", "rotate", "--keys-dir", KEYS],
            &["signing-key", "retire", &kid, "--keys-dir", KEYS],
            &["signing-key", "list", "--keys-dir", KEYS],
            &["signing-key", "jwks", "--keys-dir", KEYS],
            &[
                "token",
                "issue",
                "--name",
                "ci",
                "--role",
                "Agent",
                "--ttl",
                "60",
                "--keys-dir",
                KEYS,
            ],
            &["token", "verify", "--keys-dir", KEYS, &token],
        ] {
            let out = cli.run(args).fails(1);
            assert!(
                out.stderr.contains("chmod 600"),
                "{args:?} with mode {insecure:o}: {}",
                out.stderr
            );
            assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        }
    }
    // Nothing was changed while refusing, and fixing the mode fixes everything.
    chmod(&pem, 0o600);
    assert_eq!(cli.statuses(), vec![(kid, "active".to_owned())]);
    cli.verify(&token, &["--keys-dir", KEYS]).ok();
}

#[test]
fn an_issued_token_verifies_and_prints_its_claims() {
    let (cli, kid) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    let out = cli.verify(&token, &["--keys-dir", KEYS]).ok();
    let claims = out.json();
    assert_eq!(claims["sub"], "ci");
    assert_eq!(claims["role"], "Agent");
    assert_eq!(claims["iss"], "pyrogate");
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(
        cli.run(&["token", "inspect", &token]).ok().json()["header"]["kid"],
        kid.as_str()
    );
}

#[test]
fn a_never_expiring_token_with_a_tenant_verifies() {
    let (cli, _) = Cli::generated();
    let token = cli.issue(&[
        "--name", "forever", "--role", "readonly", "--ttl", "0", "--tenant", "team-a",
    ]);
    let claims = cli.verify(&token, &["--keys-dir", KEYS]).ok().json();
    assert_eq!(claims["role"], "ReadOnly");
    assert_eq!(claims["tenant"], "team-a");
    assert!(claims.get("exp").is_none(), "{claims}");
}

#[test]
fn a_token_verifies_against_a_saved_jwks_file() {
    let (cli, _) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    let jwks = cli
        .run(&["signing-key", "jwks", "--keys-dir", KEYS])
        .ok()
        .stdout;
    let file = cli.write("jwks.json", &jwks);
    // The keys dir is gone: only the JWKS is trusted.
    std::fs::remove_dir_all(cli.keys_dir()).unwrap();
    let claims = cli.verify(&token, &["--jwks", &file]).ok().json();
    assert_eq!(claims["sub"], "ci");
    // A JWKS of someone else's key does not verify it.
    let other = Cli::generated().0.jwks().to_string();
    let other = cli.write("other-jwks.json", &other);
    let out = cli.verify(&token, &["--jwks", &other]).fails(1);
    assert_eq!(out.stderr, "invalid credentials: unknown signing key\n");
}

#[test]
fn a_token_is_read_from_stdin_with_a_dash() {
    let (cli, _) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    for input in [
        token.clone(),
        format!("{token}\n"),
        format!("  {token}\r\n"),
    ] {
        let out = cli
            .run_with_stdin(&["token", "verify", "--keys-dir", KEYS, "-"], Some(&input))
            .ok();
        assert_no_echo(&out, &token);
        assert_eq!(out.json()["sub"], "ci");
    }
    let out = cli
        .run_with_stdin(&["token", "inspect", "-"], Some(&token))
        .ok();
    assert_eq!(out.json()["claims"]["sub"], "ci");
}

#[test]
fn verify_with_a_required_role_refuses_a_key_without_it() {
    let (cli, _) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    for role in ["ReadOnly", "Admin"] {
        let out = cli
            .verify(&token, &["--keys-dir", KEYS, "--role", role])
            .fails(1);
        assert!(out.stdout.is_empty());
        assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    }
    cli.verify(&token, &["--keys-dir", KEYS, "--role", "Agent"])
        .ok();
    let admin = cli.issue(&["--name", "boss", "--role", "Admin", "--ttl", "3600"]);
    for role in ["ReadOnly", "Agent", "Admin"] {
        cli.verify(&admin, &["--keys-dir", KEYS, "--role", role])
            .ok();
    }
}

#[test]
fn verify_of_garbage_exits_1_saying_only_malformed() {
    let (cli, _) = Cli::generated();
    for garbage in ["garbage", "a.b.c", "..", "Bearer x.y.z"] {
        let out = cli.verify(garbage, &["--keys-dir", KEYS]).fails(1);
        assert_eq!(out.stderr, "invalid credentials: malformed\n");
        assert!(out.stdout.is_empty());
    }
    // An unsigned alg-none token is not garbage; it gets its own reason.
    let out = cli
        .verify("eyJhbGciOiJub25lIn0.e30.", &["--keys-dir", KEYS])
        .fails(1);
    assert_eq!(out.stderr, "invalid credentials: unsupported algorithm\n");
}

#[test]
fn verify_states_the_reason_for_expired_and_future_tokens() {
    let (cli, _) = Cli::generated();
    let ring = Keyring::open(cli.keys_dir()).unwrap();
    let at = |now: u64| {
        pyrogate::core::token::issue(
            ring.active(),
            ISSUER,
            now,
            &KeyRequest {
                name: "ci",
                role: Role::Agent,
                ttl_seconds: 3600,
                tenant: None,
                apps: None,
                cidrs: None,
            },
        )
        .unwrap()
        .token
        .expose()
        .to_owned()
    };
    // Fixed instants far from any plausible wall clock: 2001 and 2096.
    let out = cli
        .verify(&at(1_000_000_000), &["--keys-dir", KEYS])
        .fails(1);
    assert_eq!(out.stderr, "invalid credentials: expired\n");
    let out = cli
        .verify(&at(4_000_000_000), &["--keys-dir", KEYS])
        .fails(1);
    assert_eq!(out.stderr, "invalid credentials: not yet valid\n");
    let out = cli
        .verify(
            &at(1_000_000_000),
            &["--keys-dir", KEYS, "--issuer", "other"],
        )
        .fails(1);
    assert_eq!(out.stderr, "invalid credentials: wrong issuer\n");
}

#[test]
fn a_token_whose_signing_key_was_rotated_out_and_retired_no_longer_verifies() {
    let (cli, old) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "0"]);
    cli.run(&["signing-key", "rotate", "--keys-dir", KEYS]).ok();
    // Rotation alone keeps it valid: the old key is still published.
    cli.verify(&token, &["--keys-dir", KEYS]).ok();
    cli.run(&["signing-key", "retire", &old, "--keys-dir", KEYS])
        .ok();
    let out = cli.verify(&token, &["--keys-dir", KEYS]).fails(1);
    assert_eq!(out.stderr, "invalid credentials: unknown signing key\n");
    assert!(out.stdout.is_empty());
    // New tokens come from the new key and verify.
    let fresh = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "0"]);
    cli.verify(&fresh, &["--keys-dir", KEYS]).ok();
}

fn revocation_list_for(token: &str) -> RevocationList {
    let claims = claims_of(token);
    RevocationList {
        ksv: None,
        limits: None,
        iss: ISSUER.into(),
        ver: 1,
        iat: claims["iat"].as_u64().unwrap(),
        entries: vec![RevocationEntry {
            jti: claims["jti"].as_str().unwrap().to_owned(),
            exp: claims["exp"].as_u64(),
            kid: None,
        }],
    }
}

#[test]
fn a_token_named_in_a_signed_revocation_list_is_refused_as_revoked() {
    let (cli, _) = Cli::generated();
    let revoked = cli.issue(&["--name", "leaked", "--role", "Agent", "--ttl", "3600"]);
    let kept = cli.issue(&["--name", "kept", "--role", "Agent", "--ttl", "3600"]);
    let ring = Keyring::open(cli.keys_dir()).unwrap();
    let signed = revocation_list_for(&revoked).sign(ring.active());
    let file = cli.write("revocations.jws", &format!("{signed}\n"));
    let out = cli
        .verify(&revoked, &["--keys-dir", KEYS, "--revocations", &file])
        .fails(1);
    assert_eq!(out.stderr, "invalid credentials: revoked\n");
    assert!(out.stdout.is_empty());
    cli.verify(&kept, &["--keys-dir", KEYS, "--revocations", &file])
        .ok();
    // Without the list the same token is still accepted: the list is the only source.
    cli.verify(&revoked, &["--keys-dir", KEYS]).ok();
}

#[test]
fn a_revocation_list_signed_by_a_foreign_key_is_rejected_by_name() {
    let (cli, _) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    let signed = revocation_list_for(&token).sign(&signer(&random_key()));
    let file = cli.write("foreign-revocations.jws", &signed);
    let out = cli
        .verify(&token, &["--keys-dir", KEYS, "--revocations", &file])
        .fails(1);
    assert!(out.stderr.contains("revocation list"), "{}", out.stderr);
    assert!(out.stderr.contains(&file), "{}", out.stderr);
    assert!(out.stderr.contains("unknown signing key"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    // An API key is not a revocation list either, even from the right key.
    let file = cli.write("not-a-list.jws", &token);
    let out = cli
        .verify(&token, &["--keys-dir", KEYS, "--revocations", &file])
        .fails(1);
    assert!(out.stderr.contains("wrong token type"), "{}", out.stderr);
}

#[test]
fn inspect_prints_header_and_claims_marked_unverified() {
    let (cli, kid) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "3600"]);
    // Inspect does not need (or trust) any key: it works from an empty dir too.
    let out = Cli::new().run(&["token", "inspect", &token]).ok();
    let json = out.json();
    assert_eq!(json["verified"], false);
    assert_eq!(json["header"]["alg"], "EdDSA");
    assert_eq!(json["header"]["typ"], "apikey+jwt");
    assert_eq!(json["header"]["kid"], kid.as_str());
    assert_eq!(json["claims"]["sub"], "ci");
    assert!(out.stderr.contains("NOT VERIFIED"), "{}", out.stderr);
    // It decodes forgeries too, and says so.
    let forged = craft_claims(&random_key(), &claims_json());
    let out = cli.run(&["token", "inspect", &forged]).ok();
    assert_eq!(out.json()["verified"], false);
    assert!(out.stderr.contains("NOT VERIFIED"));
    let out = cli.run(&["token", "inspect", "garbage"]).fails(1);
    assert!(out.stderr.contains("invalid credentials: malformed"));
}

#[test]
fn an_unknown_role_on_issue_is_a_usage_error() {
    let (cli, _) = Cli::generated();
    let out = cli
        .run(&[
            "token",
            "issue",
            "--name",
            "ci",
            "--role",
            "root",
            "--ttl",
            "60",
            "--keys-dir",
            KEYS,
        ])
        .fails(2);
    assert!(out.stderr.contains("unknown role"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_names_and_tenants_are_refused_at_issue() {
    let (cli, _) = Cli::generated();
    for args in [
        &["--name", " ", "--role", "Agent", "--ttl", "60"][..],
        &[
            "--name", "ci", "--role", "Agent", "--ttl", "60", "--tenant", "a/b",
        ],
        &[
            "--name",
            "ci",
            "--role",
            "Agent",
            "--ttl",
            "18446744073709551615",
        ],
    ] {
        let mut all = vec!["token", "issue", "--keys-dir", KEYS];
        all.extend_from_slice(args);
        let out = cli.run(&all).fails(1);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}

#[test]
fn verify_refuses_both_a_keys_dir_and_a_jwks_file() {
    let (cli, _) = Cli::generated();
    let token = cli.issue(&["--name", "ci", "--role", "Agent", "--ttl", "60"]);
    let jwks = cli.write("jwks.json", &cli.jwks().to_string());
    let out = cli
        .verify(&token, &["--keys-dir", KEYS, "--jwks", &jwks])
        .fails(2);
    assert!(out.stdout.is_empty());
}

/// The first fixed seed whose key's kid (base64url, so any of 64 first characters) starts
/// with `-`.
fn key_with_hyphen_kid() -> SigningKey {
    (0u32..)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SigningKey::from_bytes(&seed)
        })
        .find(|key| kid_of(key).starts_with('-'))
        .unwrap()
}

fn write_private_key(dir: &Path, key: &SigningKey) {
    write_pem(dir, key, &key.to_pkcs8_pem());
}

fn write_pem(dir: &Path, key: &SigningKey, pem: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(format!("{}.pem", kid_of(key))))
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
}

#[test]
fn a_published_key_whose_kid_begins_with_a_hyphen_can_be_retired() {
    // One kid in 64 begins with '-'; the CLI prints `pyrogate signing-key retire KID` as the
    // way to retire it, so that command must not mistake the kid for a flag.
    let cli = Cli::new();
    let dir = cli.keys_dir();
    std::fs::create_dir(&dir).unwrap();
    let hyphen = key_with_hyphen_kid();
    let active = fixed_key(9);
    let info = |key: &SigningKey, status: &str| {
        serde_json::json!({
            "kid": kid_of(key),
            "status": status,
            "createdAt": NOW,
            "x": pyrogate::core::b64::encode(key.verifying_key().as_bytes()),
        })
    };
    let manifest = serde_json::json!({
        "keys": [info(&hyphen, "published"), info(&active, "active")]
    });
    std::fs::write(dir.join("keyring.json"), manifest.to_string()).unwrap();
    write_private_key(&dir, &hyphen);
    write_private_key(&dir, &active);
    let old = kid_of(&hyphen);
    assert!(old.starts_with('-'));
    assert_eq!(
        cli.statuses(),
        vec![
            (old.clone(), "published".to_owned()),
            (kid_of(&active), "active".to_owned())
        ]
    );

    cli.run(&["signing-key", "retire", &old, "--keys-dir", KEYS])
        .ok();
    assert_eq!(cli.statuses()[0], (old.clone(), "retired".to_owned()));
    assert!(!cli.pem(&old).exists());
    // Flags still parse around it, in either order.
    let out = cli
        .run(&["signing-key", "retire", "--keys-dir", KEYS, &old])
        .fails(1);
    assert!(out.stderr.contains("already retired"), "{}", out.stderr);
}

/// `openssl` on PATH, or `None` (then the OpenSSL tests say so and skip; scripts/test.sh and
/// scripts/install-test-deps.sh install it, so CI always runs them).
fn openssl() -> Option<&'static str> {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: openssl is not installed (bash scripts/install-test-deps.sh)");
    }
    found.then_some("openssl")
}

/// The raw 32-byte public key OpenSSL derives from a private key file.
fn openssl_public_key(openssl: &str, pem: &Path) -> Vec<u8> {
    let out = Command::new(openssl)
        .args(["pkey", "-in"])
        .arg(pem)
        .args(["-pubout", "-outform", "DER"])
        .output()
        .expect("run openssl pkey");
    assert!(
        out.status.success(),
        "openssl pkey refused {}: {}",
        pem.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // SubjectPublicKeyInfo for Ed25519: 12 bytes of header, then the key.
    assert_eq!(out.stdout.len(), 44, "{:02x?}", out.stdout);
    out.stdout[12..].to_vec()
}

#[test]
fn openssl_reads_a_generated_private_key_and_derives_the_published_x() {
    let Some(openssl) = openssl() else { return };
    let (cli, kid) = Cli::generated();
    let public = openssl_public_key(openssl, &cli.pem(&kid));
    let jwks = cli
        .run(&["signing-key", "jwks", "--keys-dir", KEYS])
        .ok()
        .json();
    assert_eq!(
        jwks["keys"][0]["x"].as_str().unwrap(),
        pyrogate::core::b64::encode(&public)
    );
    // Byte for byte the layout `openssl genpkey -algorithm ed25519` writes: RFC 8410 v1.
    let pem = std::fs::read_to_string(cli.pem(&kid)).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(body.starts_with("MC4CAQAwBQYDK2VwBCIEI"), "{pem}");
    assert_eq!(body.len(), 64);
}

#[test]
fn a_key_generated_by_openssl_is_read_and_gives_the_same_public_key() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("openssl.pem");
    let status = Command::new(openssl)
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .status()
        .unwrap();
    assert!(status.success());
    let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&pem).unwrap()).unwrap();
    assert_eq!(
        key.verifying_key().as_bytes().to_vec(),
        openssl_public_key(openssl, &pem)
    );
    // And what we write back is what OpenSSL wrote.
    assert_eq!(key.to_pkcs8_pem(), std::fs::read_to_string(&pem).unwrap());
}

/// The PKCS#8 v2 PEM earlier pyrogate versions wrote (ed25519-dalek's layout: version 1 and
/// the public key as `[1] IMPLICIT BIT STRING`), built here from a fixed test seed.
fn pkcs8_v2_pem(seed: [u8; 32]) -> String {
    use base64::Engine as _;
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let der = [
        &[
            0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ][..],
        &seed,
        &[0x81, 0x21, 0x00],
        &public,
    ]
    .concat();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n{}\n-----END PRIVATE KEY-----\n",
        &b64[..64],
        &b64[64..]
    )
}

#[test]
fn a_keys_dir_with_pkcs8_v2_keys_keeps_working_and_rotation_writes_v1() {
    let cli = Cli::new();
    let dir = cli.keys_dir();
    std::fs::create_dir(&dir).unwrap();
    let seed = [0x42u8; 32];
    let old = SigningKey::from_bytes(&seed);
    let kid = kid_of(&old);
    let manifest = serde_json::json!({"keys": [{
        "kid": kid,
        "status": "active",
        "createdAt": NOW,
        "x": pyrogate::core::b64::encode(old.verifying_key().as_bytes()),
    }]});
    std::fs::write(dir.join("keyring.json"), manifest.to_string()).unwrap();
    write_pem(&dir, &old, &pkcs8_v2_pem(seed));
    let token = cli
        .run(&[
            "token",
            "issue",
            "--keys-dir",
            KEYS,
            "--name",
            "ci",
            "--role",
            "Agent",
            "--ttl",
            "0",
        ])
        .ok()
        .line();
    cli.run(&["token", "verify", "--keys-dir", KEYS, &token])
        .ok();
    let new = cli
        .run(&["signing-key", "rotate", "--keys-dir", KEYS])
        .ok()
        .line();
    let new_pem = std::fs::read_to_string(cli.pem(&new)).unwrap();
    let body: String = new_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(body.starts_with("MC4CAQAwBQYDK2VwBCIEI"), "{new_pem}");
    cli.run(&["token", "verify", "--keys-dir", KEYS, &token])
        .ok();
    if let Some(openssl) = openssl() {
        assert_eq!(
            openssl_public_key(openssl, &cli.pem(&new)),
            cli.run(&["signing-key", "jwks", "--keys-dir", KEYS])
                .ok()
                .json()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["kid"] == new.as_str())
                .map(|k| pyrogate::core::b64::decode(k["x"].as_str().unwrap()).unwrap())
                .unwrap()
        );
    }
}
