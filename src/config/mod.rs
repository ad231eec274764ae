//! Configuration with Pyroscope's own key names, from four layers (later wins):
//! built-in defaults < YAML file (`--config`) < environment (`PYROSCOPE_…`) < command-line flags
//! (`--auth.ingestion.enabled`).
//!
//! Every key is declared once, in [`KEYS`] (`keys.rs`): its name, default, type and help. The flags, the
//! environment names, `docs/configuration.md` and `config/pyrogate.example.yaml` all follow from
//! that table (a test checks the docs against it), so a key can't exist in one place and not
//! another. Each value remembers where it came from, so an unknown key or a bad value is a
//! startup error that names both the key and its source. Secret values are never echoed.
//!
//! Unknown `PYROSCOPE_*` environment variables are ignored with a warning rather than refused:
//! that namespace is shared with Pyroscope's agents (`PYROSCOPE_AUTH_TOKEN`,
//! `PYROSCOPE_SERVER_ADDRESS`, …), which often run on the same hosts.
//!
//! | file | job |
//! |---|---|
//! | `keys.rs` | the key table and each key's scope (which commands read it) |
//! | `layers.rs` | merging defaults, file, environment and flags; typed readers |
//! | `flags.rs` | the clap flags, per command |
//! | `settings.rs` | the typed, nested [`Settings`] |
//! | `docs.rs` | generated docs and example file |

mod docs;
mod flags;
mod keys;
mod layers;
mod settings;

pub use docs::{example_yaml, markdown_table};
pub use flags::{AnyFlags, FlagsFor, IngestFlags, LocalFlags, ServerFlags, SpoolFlags};
pub use keys::{KEYS, Key, Kind, Scope, lookup};
pub use layers::{ConfigError, ConfigFlags, Layers, Source, parse_duration};
pub use settings::{
    AuthSettings, AuthoritySettings, ClientTls, Database, DefaultKeyLimits, FirstAdmin,
    HostPattern, IngestSettings, LOGIN_MAX_QUEUE_SECS, LoginDelays, NodeSettings, OidcSettings,
    PostgresSettings, ServerSettings, ServerTls, SessionSettings, Settings, UpstreamAuth,
    secure_or_loopback, valid_node_name,
};

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_names_follow_pyroscope() {
        let k = lookup("auth.ingestion.enabled").unwrap();
        assert_eq!(k.env_name(), "PYROSCOPE_AUTH_INGESTION_ENABLED");
        assert_eq!(
            lookup("api-bind-addr").unwrap().env_name(),
            "PYROSCOPE_API_BIND_ADDR"
        );
        assert_eq!(k.flag(), "--auth.ingestion.enabled");
    }

    #[test]
    fn env_names_are_unambiguous() {
        let mut names: Vec<String> = KEYS.iter().map(Key::env_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn every_default_parses() {
        let l = Layers::defaults();
        for k in KEYS {
            let ok = match k.kind {
                Kind::Bool => l.bool(k.name).is_ok(),
                Kind::Count => l.count(k.name).is_ok(),
                Kind::Duration => l.duration(k.name).is_ok(),
                Kind::Addr => l.addr(k.name).is_ok(),
                Kind::Choice(_) => l.choice(k.name).is_ok(),
                Kind::Url => l.url(k.name).is_ok(),
                Kind::String | Kind::Secret => true,
            };
            assert!(ok, "default of {} does not parse", k.name);
        }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let mut l = Layers::defaults();
        l.merge_yaml(
            "auth:\n  ingestion:\n    enabled: true\n  issuer: from-file\nlog-level: debug\n",
            Path::new("f.yaml"),
        )
        .unwrap();
        assert!(l.bool("auth.ingestion.enabled").unwrap());
        l.merge_env(env(&[
            ("PYROSCOPE_AUTH_INGESTION_ENABLED", "false"),
            ("PYROSCOPE_AUTH_ISSUER", "from-env"),
        ]));
        assert!(!l.bool("auth.ingestion.enabled").unwrap());
        let flags = ConfigFlags {
            config: None,
            values: vec![("auth.issuer".into(), "from-flag".into())],
        };
        let mut merged =
            Layers::load(None, env(&[("PYROSCOPE_AUTH_ISSUER", "from-env")]), &flags).unwrap();
        assert_eq!(merged.string("auth.issuer").unwrap(), "from-flag");
        merged
            .merge_yaml("log-level: warn", Path::new("x.yaml"))
            .unwrap();
        assert_eq!(l.string("auth.issuer").unwrap(), "from-env");
        assert_eq!(l.choice("log-level").unwrap(), "debug");
    }

    #[test]
    fn dotted_yaml_keys_work_too() {
        let mut l = Layers::defaults();
        l.merge_yaml("auth.ingestion.enabled: true\n", Path::new("f.yaml"))
            .unwrap();
        assert!(l.bool("auth.ingestion.enabled").unwrap());
    }

    #[test]
    fn unknown_file_key_names_key_and_file() {
        let mut l = Layers::defaults();
        let err = l
            .merge_yaml(
                "auth:\n  ingestion:\n    enabeld: true\n",
                Path::new("/etc/p.yaml"),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key \"auth.ingestion.enabeld\" in config file /etc/p.yaml"
        );
    }

    #[test]
    fn bad_values_name_key_and_source() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[("PYROSCOPE_AUTH_INGESTION_ENABLED", "yes")]));
        assert_eq!(
            l.bool("auth.ingestion.enabled").unwrap_err().to_string(),
            "invalid value for auth.ingestion.enabled from environment variable \
             PYROSCOPE_AUTH_INGESTION_ENABLED: expected true or false, got \"yes\""
        );
    }

    #[test]
    fn unknown_env_vars_are_ignored_not_fatal() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[("PYROSCOPE_AUTH_TOKEN", "x"), ("HOME", "/root")]));
        assert_eq!(l.ignored_env, vec!["PYROSCOPE_AUTH_TOKEN".to_owned()]);
    }

    #[test]
    fn urls_with_credentials_are_refused_naming_the_key_and_never_echoing_them() {
        let secret = "hunter2";
        for (key, var, hint) in [
            ("upstream.url", "PYROSCOPE_UPSTREAM_URL", true),
            ("upstream.url", "PYROSCOPE_UPSTREAM", true),
            ("authority.url", "PYROSCOPE_AUTHORITY_URL", false),
        ] {
            for url in [
                format!("https://user:{secret}@pyroscope.example:4040"),
                format!("http://{secret}@pyroscope.example/base"),
                format!("https://user:{secret}@[::1]:4040?x=1"),
                // Not a URL at all, but still no echo of what looks like a password.
                format!("user:{secret}@pyroscope.example"),
            ] {
                let mut l = Layers::defaults();
                l.merge_env(env(&[(var, &url)]));
                let debug = format!("{l:?}");
                assert!(!debug.contains(secret), "{debug}");
                assert!(debug.contains("[redacted]@"), "{debug}");
                let err = l.url(key).unwrap_err().to_string();
                assert!(err.contains(key) && err.contains(var), "{err}");
                assert!(!err.contains(secret), "{err}");
                assert!(err.contains("credentials"), "{err}");
                assert_eq!(err.contains("upstream.basic-auth-username"), hint, "{err}");
                let err = Settings::from_layers(&l).unwrap_err().to_string();
                assert!(!err.contains(secret), "{err}");
            }
        }
        // An @ after the host is part of the path or query, not credentials.
        let mut l = Layers::defaults();
        l.merge_env(env(&[(
            "PYROSCOPE_UPSTREAM_URL",
            "https://pyroscope.example/a@b?c=d@e",
        )]));
        assert_eq!(
            l.url("upstream.url").unwrap().as_deref(),
            Some("https://pyroscope.example/a@b?c=d@e")
        );
    }

    #[test]
    fn layers_debug_redacts_secrets() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[
            ("PYROSCOPE_UPSTREAM_BASIC_AUTH_PASSWORD", "hunter2"),
            ("PYROSCOPE_UPSTREAM_BEARER_TOKEN", "tok3n"),
        ]));
        let debug = format!("{l:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("tok3n"),
            "{debug}"
        );
        assert!(debug.contains("PYROSCOPE_UPSTREAM_BEARER_TOKEN"), "{debug}");
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let mut l = Layers::defaults();
        l.merge_env(env(&[("PYROSCOPE_AUTH_JWT_SECRET", "hunter2")]));
        assert_eq!(l.shown("auth.jwt-secret"), "[redacted]");
    }

    #[test]
    fn durations_and_addresses_parse() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("5 minutes"), None);
        let mut l = Layers::defaults();
        assert_eq!(l.addr("api-bind-addr").unwrap().port(), 4040);
        l.merge_env(env(&[("PYROSCOPE_API_BIND_ADDR", "localhost")]));
        assert!(l.addr("api-bind-addr").is_err());
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let mut l = Layers::defaults();
        l.merge_yaml(&example_yaml(), Path::new("example.yaml"))
            .unwrap();
        for k in KEYS {
            assert_eq!(l.raw(k.name).unwrap().0, k.default, "{}", k.name);
            assert!(
                matches!(l.raw(k.name).unwrap().1, Source::File(_)),
                "{} not in example",
                k.name
            );
        }
    }

    #[test]
    fn committed_example_and_docs_match_the_key_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join("config/pyrogate.example.yaml")).unwrap();
        assert_eq!(
            example,
            example_yaml(),
            "run: pyrogate config example > config/pyrogate.example.yaml"
        );
        let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        assert!(
            docs.contains(&markdown_table()),
            "run: pyrogate config docs, paste into docs/configuration.md"
        );
    }

    #[test]
    fn every_committed_config_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let mut l = Layers::defaults();
                l.merge_file(&path).unwrap();
                Settings::from_layers(&l).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
        assert!(
            checked >= 3,
            "expected the example, authority and ingest-node files"
        );
    }

    #[test]
    fn lists_are_refused_as_values() {
        let mut l = Layers::defaults();
        let err = l
            .merge_yaml("keys-dir: [a, b]\n", Path::new("f.yaml"))
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::BadValue {
                key: "keys-dir",
                ..
            }
        ));
    }

    #[test]
    fn database_url_chooses_the_backend_and_is_never_quoted() {
        let database = |yaml: &str| {
            let mut l = Layers::defaults();
            l.merge_yaml(yaml, Path::new("f.yaml")).unwrap();
            Settings::from_layers(&l).map(|s| s.authority.database)
        };
        let sqlite_in = |yaml: &str| match database(yaml).unwrap() {
            Database::Sqlite(dir) => dir,
            other => panic!("{other:?}"),
        };
        assert_eq!(sqlite_in("storage-path: d\n"), Path::new("d"));
        assert_eq!(
            sqlite_in("database:\n  url: \"sqlite://\"\n"),
            Path::new("data")
        );
        assert_eq!(
            sqlite_in("database:\n  url: \"sqlite:///var/lib/p\"\n"),
            Path::new("/var/lib/p")
        );
        for scheme in ["postgres", "postgresql"] {
            let yaml = format!("database:\n  url: \"{scheme}://u:hunter2@db/p\"\n");
            match database(&yaml).unwrap() {
                Database::Postgres(pg) => {
                    assert!(pg.url.expose().starts_with(scheme));
                    assert!(!format!("{pg:?}").contains("hunter2"));
                }
                other => panic!("{other:?}"),
            }
        }
        let err = database("database:\n  url: \"mysql://u:hunter2@db/p\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = database("database:\n  password-file: /p\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.password-file"), "{err}");
    }

    #[test]
    fn settings_read_only_keys_in_the_table_and_every_key_is_read() {
        // A name that is not in the table is an error, not an empty string.
        assert!(matches!(
            Layers::defaults().string("auth.ingestion.enabeld"),
            Err(ConfigError::UnknownKey { .. })
        ));
        // Every key reaches the settings: give each a value that parses but differs from its
        // default (with the keys it only makes sense with), and the settings must change.
        let companions = |name: &str| -> &'static [(&'static str, &'static str)] {
            match name {
                "server.http-tls-cert-path" => &[("server.http-tls-key-path", "k.pem")],
                "server.http-tls-key-path" => &[("server.http-tls-cert-path", "c.pem")],
                "server.http-tls-client-auth" => &[
                    ("server.http-tls-cert-path", "c.pem"),
                    ("server.http-tls-key-path", "k.pem"),
                    ("server.http-tls-ca-path", "ca.pem"),
                ],
                "server.http-tls-ca-path" => &[
                    ("server.http-tls-cert-path", "c.pem"),
                    ("server.http-tls-key-path", "k.pem"),
                    ("server.http-tls-client-auth", "RequireAndVerifyClientCert"),
                ],
                "upstream.tls-cert-path" => &[("upstream.tls-key-path", "k.pem")],
                "upstream.tls-key-path" => &[("upstream.tls-cert-path", "c.pem")],
                "authority.tls-cert-path" => &[("authority.tls-key-path", "k.pem")],
                "authority.tls-key-path" => &[("authority.tls-cert-path", "c.pem")],
                "upstream.basic-auth-username" => &[("upstream.basic-auth-password", "p")],
                "upstream.basic-auth-password" => &[("upstream.basic-auth-username", "u")],
                "auth.default-key-limits.agent.burst-pushes" => {
                    &[("auth.default-key-limits.agent.pushes-per-second", "5")]
                }
                "auth.default-key-limits.admin.burst-pushes" => {
                    &[("auth.default-key-limits.admin.pushes-per-second", "5")]
                }
                "auth.default-key-limits.agent.burst-bytes" => {
                    &[("auth.default-key-limits.agent.bytes-per-second", "1000")]
                }
                "auth.default-key-limits.admin.burst-bytes" => {
                    &[("auth.default-key-limits.admin.bytes-per-second", "1000")]
                }
                "database.password-file"
                | "database.tls-ca-path"
                | "authority.key-encryption-key-file" => {
                    &[("database.url", "postgres://u@db.invalid/pyrogate")]
                }
                _ => &[],
            }
        };
        let settings = |pairs: &[(&str, String)]| {
            let mut l = Layers::defaults();
            for (name, value) in pairs {
                l.merge_yaml(&format!("{name}: {value:?}\n"), Path::new("f.yaml"))
                    .unwrap();
            }
            Settings::from_layers(&l).map(|s| format!("{s:?}"))
        };
        let node_key_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(node_key_file.path(), "a-node-key\n").unwrap();
        for k in KEYS {
            let other = match k.kind {
                Kind::Bool if k.default == "true" => "false".to_owned(),
                Kind::Bool => "true".to_owned(),
                Kind::Count => "3".to_owned(),
                Kind::Duration => "3s".to_owned(),
                Kind::Addr => "127.0.0.1:7".to_owned(),
                Kind::Choice(words) => words
                    .iter()
                    .find(|w| **w != k.default && **w != "None")
                    .unwrap()
                    .to_string(),
                Kind::Url if k.name.starts_with("auth.oidc.") => "https://other.invalid".to_owned(),
                Kind::Url => "http://example.invalid".to_owned(),
                Kind::Secret if k.name == "database.url" => {
                    "postgres://u@db.invalid/pyrogate".to_owned()
                }
                Kind::String
                    if k.name == "authority.node-key-file"
                        || k.name == "auth.oidc.client-secret-file" =>
                {
                    node_key_file.path().display().to_string()
                }
                Kind::String | Kind::Secret if k.name == "auth.trusted-proxies" => {
                    "10.0.0.0/8".to_owned()
                }
                Kind::String if k.name.ends_with("pushes-per-second") => "2.5".to_owned(),
                Kind::String | Kind::Secret => "t7".to_owned(),
            };
            let mut pairs: Vec<(&str, String)> = companions(k.name)
                .iter()
                .map(|(n, v)| (*n, (*v).to_owned()))
                .collect();
            // Single sign-on keys are read only with it on, and it needs a provider.
            if k.name.starts_with("auth.oidc.") || k.name == "auth.signup-default-role" {
                let oidc = [
                    ("auth.oidc.enabled", "true"),
                    ("auth.oidc.issuer-url", "https://idp.invalid"),
                    ("auth.oidc.client-id", "c"),
                    ("auth.oidc.client-secret", "s"),
                    (
                        "auth.oidc.redirect-url",
                        "https://p.invalid/auth/oidc/callback",
                    ),
                ];
                for (name, value) in oidc {
                    let replaced = name == k.name
                        || (k.name == "auth.oidc.client-secret-file"
                            && name == "auth.oidc.client-secret");
                    if !replaced {
                        pairs.push((name, value.to_owned()));
                    }
                }
            }
            // Without the key: its default (an error is fine: the key may be what makes the
            // companions valid).
            let base = settings(&pairs);
            pairs.push((k.name, other));
            let changed = settings(&pairs).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            assert_ne!(Ok(changed), base, "{} is not read into Settings", k.name);
        }
    }
}
