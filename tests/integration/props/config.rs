//! The configuration parser on generated values, through its public API: the key table
//! ([`KEYS`]), the layers ([`Layers`]: YAML, environment, flags) and the typed [`Settings`].
//!
//! - Round trip: for every key in the table, a generated valid value reads back as that value
//!   through the key's typed reader, and gives the same `Settings` (or the same refusal, key and
//!   reason) whether it came from a YAML file (nested or dotted, quoted or native scalars), an
//!   environment variable, or a command-line flag parsed by the real clap definition — under
//!   the key's name or its alias.
//! - Any string for a typed key parses or is refused with an error naming the key; nothing
//!   panics.
//! - A name outside the table is refused naming it (YAML, flags), or reported as an ignored
//!   variable (environment, shared with Pyroscope's agents).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use clap::{Args as _, FromArgMatches as _};
use proptest::prelude::*;
use pyrogate::config::{
    AnyFlags, ConfigError, ConfigFlags, KEYS, Key, Kind, Layers, Settings, lookup,
};
use serde_yaml_ng::{Mapping, Value};

/// What a key's typed reader returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Typed {
    Bool(bool),
    Count(u64),
    Duration(Duration),
    Addr(SocketAddr),
    Choice(&'static str),
    Url(Option<String>),
    Text(String),
}

/// The value `l` holds for `key`, through the reader its kind calls for.
fn read(l: &Layers, key: &Key) -> Result<Typed, ConfigError> {
    Ok(match key.kind {
        Kind::Bool => Typed::Bool(l.bool(key.name)?),
        Kind::Count => Typed::Count(l.count(key.name)?),
        Kind::Duration => Typed::Duration(l.duration(key.name)?),
        Kind::Addr => Typed::Addr(l.addr(key.name)?),
        Kind::Choice(_) => Typed::Choice(l.choice(key.name)?),
        Kind::Url => Typed::Url(l.url(key.name)?),
        Kind::String => Typed::Text(l.string(key.name)?),
        Kind::Secret => Typed::Text(
            l.secret(key.name)?
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
        ),
    })
}

/// `Settings` as comparable text, or the key and reason of its refusal.
type Outcome = Result<String, (String, String)>;

/// The [`Outcome`] of building `Settings` from `l` (a refusal's source differs between forms
/// by design, so it is left out).
fn outcome(l: &Layers) -> Outcome {
    match Settings::from_layers(l) {
        Ok(s) => Ok(format!("{s:?}")),
        Err(ConfigError::BadValue { key, reason, .. }) => Err((key.to_owned(), reason)),
        Err(other) => Err(("?".into(), other.to_string())),
    }
}

/// A raw value for a key and what its reader must return for it. `native` is the YAML scalar
/// an operator would write without quotes, when there is one.
#[derive(Debug, Clone)]
struct Generated {
    raw: String,
    expected: Typed,
    native: Option<Value>,
}

fn spaced(inner: BoxedStrategy<(String, Typed)>) -> BoxedStrategy<(String, Typed)> {
    // Readers that trim: surrounding spaces don't change the value.
    (inner, 0usize..3, 0usize..3)
        .prop_map(|((raw, t), l, r)| (format!("{}{raw}{}", " ".repeat(l), " ".repeat(r)), t))
        .boxed()
}

/// `word` with the case of each letter flipped where `mask` has a bit set.
fn recase(word: &str, mask: u64) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            } else {
                c
            }
        })
        .collect()
}

fn valid_value(kind: Kind) -> BoxedStrategy<Generated> {
    let plain = |s: BoxedStrategy<(String, Typed)>| {
        s.prop_map(|(raw, expected)| Generated {
            raw,
            expected,
            native: None,
        })
        .boxed()
    };
    match kind {
        Kind::Bool => (any::<bool>(), any::<bool>(), any::<u64>(), any::<bool>())
            .prop_map(|(v, digit, mask, native)| {
                let word = match (v, digit) {
                    (true, true) => "1".to_owned(),
                    (false, true) => "0".to_owned(),
                    (true, false) => recase("true", mask),
                    (false, false) => recase("false", mask),
                };
                Generated {
                    native: (native && (word == "true" || word == "false"))
                        .then_some(Value::Bool(v)),
                    raw: word,
                    expected: Typed::Bool(v),
                }
            })
            .boxed(),
        Kind::Count => (any::<u64>(), any::<bool>(), 0usize..3)
            .prop_map(|(n, native, pad)| Generated {
                raw: format!("{}{n}", " ".repeat(pad)),
                expected: Typed::Count(n),
                native: native.then(|| Value::Number(n.into())),
            })
            .boxed(),
        Kind::Duration => {
            let units: [(&str, u64); 6] = [
                ("", 1_000),
                ("s", 1_000),
                ("ms", 1),
                ("m", 60_000),
                ("h", 3_600_000),
                ("d", 86_400_000),
            ];
            let inner = (
                proptest::sample::select(units.to_vec()),
                0u64..=u64::MAX / 86_400,
            )
                .prop_map(|((unit, millis), n)| {
                    let expected = if millis == 1 {
                        Duration::from_millis(n)
                    } else {
                        Duration::from_secs(n * (millis / 1_000))
                    };
                    (format!("{n}{unit}"), Typed::Duration(expected))
                })
                .boxed();
            plain(spaced(inner))
        }
        Kind::Addr => {
            let ip = prop_oneof![
                any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
                any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            ];
            let inner = (ip, any::<u16>(), any::<bool>())
                .prop_map(|(ip, port, short)| {
                    if short {
                        (
                            format!(":{port}"),
                            Typed::Addr(SocketAddr::from(([0, 0, 0, 0], port))),
                        )
                    } else {
                        let addr = SocketAddr::new(ip, port);
                        (addr.to_string(), Typed::Addr(addr))
                    }
                })
                .boxed();
            plain(spaced(inner))
        }
        Kind::Choice(words) => (proptest::sample::select(words.to_vec()), any::<u64>())
            .prop_map(|(word, mask)| Generated {
                raw: recase(word, mask),
                expected: Typed::Choice(word),
                native: None,
            })
            .boxed(),
        Kind::Url => {
            let url = (
                prop_oneof![Just("http://"), Just("https://")],
                "[a-z0-9][a-z0-9.-]{0,20}(:[0-9]{1,5})?",
                "(/[A-Za-z0-9._~%-]{0,12}){0,3}",
                "/{0,2}",
            )
                .prop_map(|(scheme, host, path, slashes)| {
                    let raw = format!("{scheme}{host}{path}{slashes}");
                    let expected = Typed::Url(Some(raw.trim_end_matches('/').to_owned()));
                    (raw, expected)
                });
            let inner = prop_oneof![
                1 => Just((String::new(), Typed::Url(None))),
                8 => url,
            ]
            .boxed();
            plain(spaced(inner))
        }
        // Anything but NUL, which no environment variable or argument can hold.
        Kind::String | Kind::Secret => "[^\u{0}]{0,40}"
            .prop_map(|s| Generated {
                expected: Typed::Text(s.clone()),
                raw: s,
                native: None,
            })
            .boxed(),
    }
}

/// How a value reaches the layers.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// A config file; `nested` writes `a: {b: v}` for `a.b`, else the dotted name; `native`
    /// writes an unquoted bool or number where the value is one.
    Yaml {
        nested: bool,
        native: bool,
    },
    Env,
    Flag,
}

const FORMS: [Form; 5] = [
    Form::Yaml {
        nested: true,
        native: true,
    },
    Form::Yaml {
        nested: false,
        native: false,
    },
    Form::Yaml {
        nested: true,
        native: false,
    },
    Form::Env,
    Form::Flag,
];

fn yaml_of(name: &str, value: Value, nested: bool) -> String {
    let mut value = value;
    let mut path: Vec<&str> = if nested {
        name.split('.').collect()
    } else {
        vec![name]
    };
    let last = path.pop().expect("a name");
    let mut map = Mapping::new();
    map.insert(Value::String(last.to_owned()), value);
    while let Some(parent) = path.pop() {
        value = Value::Mapping(map);
        map = Mapping::new();
        map.insert(Value::String(parent.to_owned()), value);
    }
    serde_yaml_ng::to_string(&Value::Mapping(map)).expect("YAML")
}

/// The real flag parser: every key's `--flag`, as `pyrogate config check` defines them.
fn flag_command() -> clap::Command {
    AnyFlags::augment_args(clap::Command::new("pyrogate").no_binary_name(true))
}

/// Layers with `name` set to `g` in `form` (over the defaults). `name` may be an alias.
fn layers_with(
    cmd: &mut clap::Command,
    name: &str,
    g: &Generated,
    form: Form,
) -> Result<Layers, String> {
    let env_name = env_var(name);
    match form {
        Form::Yaml { nested, native } => {
            let value = match (&g.native, native) {
                (Some(v), true) => v.clone(),
                _ => Value::String(g.raw.clone()),
            };
            let text = yaml_of(name, value, nested);
            let mut l = Layers::defaults();
            l.merge_yaml(&text, Path::new("prop.yaml"))
                .map_err(|e| format!("{e}\n{text}"))?;
            Ok(l)
        }
        Form::Env => Layers::load(None, [(env_name, g.raw.clone())], &ConfigFlags::default())
            .map_err(|e| e.to_string()),
        Form::Flag => {
            let m = cmd
                .try_get_matches_from_mut([format!("--{name}={}", g.raw)])
                .map_err(|e| e.to_string())?;
            let flags = AnyFlags::from_arg_matches(&m).map_err(|e| e.to_string())?;
            Layers::load(None, Vec::<(String, String)>::new(), &flags.0).map_err(|e| e.to_string())
        }
    }
}

/// The documented spelling (Pyroscope's): `PYROSCOPE_` and the name upper-cased, `.` and `-`
/// as `_`. For a key in the table it is [`Key::env_name`]; written out here for the names
/// that are not.
fn env_var(name: &str) -> String {
    let tail: String = name
        .chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("PYROSCOPE_{tail}")
}

/// One generated valid value per key in the table, in table order, and whether to use the
/// key's alias (for keys that have one).
fn every_key_valued() -> impl Strategy<Value = Vec<(Generated, bool)>> {
    KEYS.iter()
        .map(|k| (valid_value(k.kind), any::<bool>()))
        .collect::<Vec<_>>()
}

/// Raw strings for a typed key: anything at all, and near misses of every kind.
fn any_raw() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ 0-9a-zA-Z:.\\[\\]/_-]{0,30}",
        "-?[0-9]{0,30}(ms|s|m|h|d|S|M|x| s)?",
        // Every u64, with each unit: the multiplications must not overflow.
        (any::<u64>(), "(|s|ms|m|h|d|w| s)").prop_map(|(n, unit)| format!("{n}{unit}")),
        "(https?|ftp)?:?/{0,3}[a-z .]{0,10}",
        "\\[?[0-9a-f:.]{0,40}\\]?:?-?[0-9]{0,7}",
    ]
}

fn typed_keys() -> Vec<&'static Key> {
    KEYS.iter()
        .filter(|k| !matches!(k.kind, Kind::String | Kind::Secret))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_key_round_trips_through_yaml_env_and_flags(values in every_key_valued()) {
        let mut cmd = flag_command();
        for (key, (g, use_alias)) in KEYS.iter().zip(&values) {
            let name = match key.alias {
                Some(alias) if *use_alias => alias,
                _ => key.name,
            };
            let mut seen: Option<(Form, Outcome)> = None;
            for form in FORMS {
                let l = layers_with(&mut cmd, name, g, form);
                prop_assert!(l.is_ok(), "{name} = {:?} as {form:?}: {}", g.raw, l.err().unwrap_or_default());
                let l = l.unwrap();
                let typed = read(&l, key);
                prop_assert_eq!(
                    typed.as_ref().ok(),
                    Some(&g.expected),
                    "{} = {:?} as {:?}: {:?}", name, g.raw, form, typed
                );
                let got = outcome(&l);
                if let Some((first, wanted)) = &seen {
                    prop_assert_eq!(
                        &got, wanted,
                        "{} = {:?}: {:?} and {:?} disagree", name, g.raw, first, form
                    );
                } else {
                    seen = Some((form, got));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_string_for_a_typed_key_parses_or_names_the_key(
        key in proptest::sample::select(typed_keys()),
        raw in any_raw(),
        form in proptest::sample::select(FORMS.to_vec()),
    ) {
        let mut cmd = flag_command();
        prop_assume!(!raw.contains('\u{0}') || matches!(form, Form::Env | Form::Yaml { .. }));
        let g = Generated { raw: raw.clone(), expected: Typed::Text(String::new()), native: None };
        let l = match layers_with(&mut cmd, key.name, &g, form) {
            Ok(l) => l,
            // clap may refuse a value outright (none of ours is refused there today); a
            // YAML text the generator made can't fail to parse.
            Err(e) => {
                prop_assert!(matches!(form, Form::Flag), "{form:?}: {e}");
                return Ok(());
            }
        };
        match read(&l, key) {
            Ok(_) => {}
            Err(ConfigError::BadValue { key: named, .. }) => prop_assert_eq!(named, key.name),
            Err(other) => prop_assert!(false, "{}: {other}", key.name),
        }
        if let Err(e) = read(&l, key) {
            prop_assert!(e.to_string().contains(key.name), "{e}");
        }
        if let Err(e) = Settings::from_layers(&l) {
            prop_assert!(e.to_string().contains(key.name), "{} = {raw:?}: {e}", key.name);
        }
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it(
        name in "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9][a-z0-9-]{0,10}){0,3}",
        value in "[a-z0-9 ]{0,10}",
        nested in any::<bool>(),
        with_valid in any::<bool>(),
    ) {
        prop_assume!(lookup(&name).is_none());
        // A name that is a prefix of real keys (`auth`, `auth.ingestion`) given a scalar is
        // not a key either.
        let mut text = yaml_of(&name, Value::String(value.clone()), nested);
        if with_valid {
            text = format!("log-level: debug\n{text}");
        }
        let mut l = Layers::defaults();
        match l.merge_yaml(&text, Path::new("prop.yaml")) {
            Err(ConfigError::UnknownKey { key, .. }) => prop_assert_eq!(&key, &name),
            other => prop_assert!(false, "{name}: {other:?}\n{text}"),
        }

        let flags = ConfigFlags { config: None, values: vec![(name.clone(), value.clone())] };
        match Layers::load(None, Vec::<(String, String)>::new(), &flags) {
            Err(ConfigError::UnknownKey { key, .. }) => prop_assert_eq!(&key, &name),
            other => prop_assert!(false, "{name}: {other:?}"),
        }
        let parsed = flag_command().try_get_matches_from([format!("--{name}={value}")]);
        match parsed {
            Err(e) => prop_assert!(e.to_string().contains(&format!("--{name}")), "{e}"),
            Ok(_) => prop_assert!(false, "clap took --{name}"),
        }

        let var = env_var(&name);
        let l = Layers::load(None, [(var.clone(), value)], &ConfigFlags::default());
        prop_assert!(l.is_ok());
        let l = l.unwrap();
        if KEYS.iter().any(|k| k.answers_to_env(&var)) {
            // `auth-ingestion.enabled` spells a real key's variable: that key is set.
            prop_assert!(l.ignored_env.is_empty());
        } else {
            prop_assert_eq!(l.ignored_env, vec![var]);
        }
    }
}

#[test]
fn a_kid_that_begins_with_a_hyphen_is_a_value_not_a_flag() {
    // One kid in 64 begins with `-`; the soak met one as `--authority.trusted-keys -9…`.
    let m = flag_command()
        .try_get_matches_from([
            "--authority.trusted-keys",
            "-9Kx_kid",
            "--log-level",
            "warn",
        ])
        .expect("parses");
    let flags = AnyFlags::from_arg_matches(&m).expect("flags");
    let l = Layers::load(None, Vec::<(String, String)>::new(), &flags.0).expect("layers");
    assert_eq!(l.string("authority.trusted-keys").unwrap(), "-9Kx_kid");
    assert_eq!(l.string("log-level").unwrap(), "warn");
}
