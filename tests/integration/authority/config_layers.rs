//! Configuration layering (defaults < file < environment < flags) through the library and
//! through `pyrogate config check`; errors name the key and where the value came from.

use std::path::{Path, PathBuf};

use pyrogate::config::{ConfigError, ConfigFlags, Layers, Settings};

use crate::harness::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn flags(pairs: &[(&str, &str)]) -> ConfigFlags {
    ConfigFlags {
        config: None,
        values: env(pairs),
    }
}

fn effective(file: Option<&Path>, e: &[(&str, &str)], f: &[(&str, &str)]) -> (bool, String) {
    let layers = Layers::load(file, env(e), &flags(f)).expect("layers");
    let settings = Settings::from_layers(&layers).expect("settings");
    (settings.auth.ingestion_enabled, settings.auth.issuer)
}

#[test]
fn a_file_beats_defaults_env_beats_the_file_and_flags_beat_the_env() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "pyrogate.yaml",
        "auth:\n  ingestion:\n    enabled: true\n  issuer: from-file\n",
    );
    let file = Some(file.as_path());
    let env_vars = [
        ("PYROSCOPE_AUTH_INGESTION_ENABLED", "false"),
        ("PYROSCOPE_AUTH_ISSUER", "from-env"),
    ];
    let flag_values = [
        ("auth.ingestion.enabled", "true"),
        ("auth.issuer", "from-flag"),
    ];
    assert_eq!(effective(None, &[], &[]), (false, "pyrogate".into()));
    assert_eq!(effective(file, &[], &[]), (true, "from-file".into()));
    assert_eq!(effective(file, &env_vars, &[]), (false, "from-env".into()));
    assert_eq!(
        effective(file, &env_vars, &flag_values),
        (true, "from-flag".into())
    );
    // Each layer only overrides the keys it sets.
    assert_eq!(
        effective(file, &env_vars[1..], &[]),
        (true, "from-env".into())
    );
    assert_eq!(
        effective(file, &env_vars, &flag_values[1..]),
        (false, "from-flag".into())
    );
    // Environment variables of other programs are ignored, and reported.
    let layers = Layers::load(
        file,
        env(&[("PYROSCOPE_AUTH_TOKEN", "x"), ("PATH", "/bin")]),
        &flags(&[]),
    )
    .expect("layers");
    assert_eq!(layers.ignored_env, vec!["PYROSCOPE_AUTH_TOKEN".to_owned()]);
}

#[test]
fn an_unknown_key_in_the_file_is_an_error_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "typo.yaml",
        "auth:\n  ingestion:\n    enabeld: true\n",
    );
    let err = Layers::load(Some(&file), env(&[]), &flags(&[])).expect_err("refused");
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "auth.ingestion.enabeld"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("auth.ingestion.enabeld"), "{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
}

#[test]
fn a_bad_value_is_an_error_naming_the_key_and_its_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "bad.yaml",
        "auth:\n  ingestion:\n    enabled: maybe\n",
    );
    let settings = |file: Option<&Path>, e: &[(&str, &str)], f: &[(&str, &str)]| {
        let layers = Layers::load(file, env(e), &flags(f)).expect("layers");
        Settings::from_layers(&layers)
            .expect_err("refused")
            .to_string()
    };
    let from_file = settings(Some(&file), &[], &[]);
    assert!(from_file.contains("auth.ingestion.enabled"), "{from_file}");
    assert!(
        from_file.contains(&file.display().to_string()),
        "{from_file}"
    );
    let from_env = settings(None, &[("PYROSCOPE_AUTH_INGESTION_ENABLED", "maybe")], &[]);
    assert!(
        from_env.contains("environment variable PYROSCOPE_AUTH_INGESTION_ENABLED"),
        "{from_env}"
    );
    let from_flag = settings(None, &[], &[("auth.ingestion.enabled", "maybe")]);
    assert!(
        from_flag.contains("flag --auth.ingestion.enabled"),
        "{from_flag}"
    );
    // A later layer that fixes the value wins over an earlier bad one.
    let fixed = Layers::load(
        Some(&file),
        env(&[("PYROSCOPE_AUTH_INGESTION_ENABLED", "true")]),
        &flags(&[]),
    )
    .expect("layers");
    assert!(
        Settings::from_layers(&fixed)
            .expect("ok")
            .auth
            .ingestion_enabled
    );
}

#[test]
fn config_check_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "good.yaml",
        "api-bind-addr: \":4141\"\nauth:\n  ingestion:\n    enabled: true\n  issuer: acme\n",
    );
    let out = pyrogate(
        &["config", "check", "--config", file.to_str().expect("path")],
        &[],
        "",
    )
    .ok();
    assert!(out.stdout.contains("configuration ok"), "{out:?}");
    // The committed example file is valid too.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pyrogate.example.yaml");
    pyrogate(
        &[
            "config",
            "check",
            "--config",
            example.to_str().expect("path"),
        ],
        &[],
        "",
    )
    .ok();
}

#[test]
fn config_check_refuses_a_bad_value_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "bad.yaml",
        "auth: {ingestion: {enabled: maybe}}\n",
    );
    let path = file.to_str().expect("path");
    let out = pyrogate(&["config", "check", "--config", path], &[], "").fails();
    assert!(out.stderr.contains("auth.ingestion.enabled"), "{out:?}");
    assert!(out.stderr.contains(path), "{out:?}");
    assert!(out.stderr.contains("maybe"), "{out:?}");
    assert!(!out.stdout.contains("configuration ok"));
    // A flag fixes it: flags beat the file.
    pyrogate(
        &[
            "config",
            "check",
            "--config",
            path,
            "--auth.ingestion.enabled=true",
        ],
        &[],
        "",
    )
    .ok();
}

#[test]
fn config_check_refuses_an_unknown_key_naming_it_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "typo.yaml", "auth:\n  isuer: acme\n");
    let path = file.to_str().expect("path");
    let out = pyrogate(&["config", "check", "--config", path], &[], "").fails();
    assert!(out.stderr.contains("auth.isuer"), "{out:?}");
    assert!(out.stderr.contains(path), "{out:?}");
}

#[test]
fn config_check_names_the_environment_variable_that_holds_a_bad_value() {
    let out = pyrogate(
        &["config", "check"],
        &[("PYROSCOPE_AUTH_INGESTION_ENABLED", "maybe")],
        "",
    )
    .fails();
    assert!(
        out.stderr.contains("PYROSCOPE_AUTH_INGESTION_ENABLED"),
        "{out:?}"
    );
    // Flags beat the environment.
    pyrogate(
        &["config", "check", "--auth.ingestion.enabled", "false"],
        &[("PYROSCOPE_AUTH_INGESTION_ENABLED", "maybe")],
        "",
    )
    .ok();
    // Pyroscope agents' own variables are noted, not fatal.
    let out = pyrogate(
        &["config", "check"],
        &[("PYROSCOPE_AUTH_TOKEN", "eyJhbGciOi.fake.token")],
        "",
    )
    .ok();
    assert!(out.stderr.contains("PYROSCOPE_AUTH_TOKEN"), "{out:?}");
    assert!(!out.stderr.contains("eyJhbGciOi"), "{out:?}");
}

#[test]
fn config_check_names_a_bad_flag() {
    let out = pyrogate(
        &["config", "check", "--auth.login-lockout", "forever"],
        &[],
        "",
    )
    .fails();
    assert!(out.stderr.contains("--auth.login-lockout"), "{out:?}");
}

#[test]
fn a_missing_or_unparsable_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.yaml");
    let out = pyrogate(
        &[
            "config",
            "check",
            "--config",
            missing.to_str().expect("path"),
        ],
        &[],
        "",
    )
    .fails();
    assert!(out.stderr.contains("missing.yaml"), "{out:?}");
    let broken = write(dir.path(), "broken.yaml", "auth: [unclosed\n");
    let out = pyrogate(
        &[
            "config",
            "check",
            "--config",
            broken.to_str().expect("path"),
        ],
        &[],
        "",
    )
    .fails();
    assert!(out.stderr.contains("broken.yaml"), "{out:?}");
}

#[test]
fn a_long_poll_wait_past_the_request_timeout_is_refused_naming_the_key() {
    let settings = |value: &str| {
        let layers = Layers::load(None, env(&[]), &flags(&[("revocations.max-wait", value)]))
            .expect("layers");
        Settings::from_layers(&layers)
    };
    let err = settings("241s").expect_err("refused").to_string();
    assert!(err.contains("revocations.max-wait"), "{err}");
    assert!(err.contains("240s"), "{err}");
    assert_eq!(
        settings("240s")
            .expect("accepted")
            .authority
            .revocations_max_wait,
        std::time::Duration::from_secs(240)
    );
}
