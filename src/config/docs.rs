//! docs/configuration.md's table and config/pyrogate.example.yaml, generated from the key table
//! (a test keeps the committed files in sync).

use super::keys::{KEYS, Kind};

/// Renders docs/configuration.md's key table from [`KEYS`].
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| key | flag | environment variable | type | default | description |\n|---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        let default = if k.default.is_empty() {
            "(empty)".to_owned()
        } else {
            format!("`{}`", k.default)
        };
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} | {} |\n",
            k.name,
            k.flag(),
            k.env_name(),
            k.kind.describe(),
            default,
            k.help
        ));
    }
    out
}

/// Renders `config/pyrogate.example.yaml`: every key, nested as Pyroscope writes them, each
/// with its help, flag and environment variable, set to its default.
pub fn example_yaml() -> String {
    let mut out = String::from(
        "# pyrogate configuration: every key with its default.\n\
         # Precedence: built-in defaults < this file (--config) < PYROSCOPE_* environment < flags.\n\
         # Generated from src/config/keys.rs (`pyrogate config example`); a test keeps it in sync.\n",
    );
    let mut open: Vec<&str> = Vec::new();
    for key in KEYS {
        let segments: Vec<&str> = key.name.split('.').collect();
        let (leaf, parents) = segments.split_last().unwrap_or((&key.name, &[]));
        let common = open
            .iter()
            .zip(parents.iter())
            .take_while(|(a, b)| a == b)
            .count();
        open.truncate(common);
        out.push('\n');
        for (depth, parent) in parents.iter().enumerate().skip(common) {
            out.push_str(&format!("{}{parent}:\n", "  ".repeat(depth)));
            open.push(parent);
        }
        let indent = "  ".repeat(parents.len());
        out.push_str(&format!("{indent}# {}\n", key.help));
        out.push_str(&format!(
            "{indent}# flag {}, env {}\n",
            key.flag(),
            key.env_name()
        ));
        let value = match key.kind {
            Kind::Bool | Kind::Count => key.default.to_owned(),
            _ => format!("{:?}", key.default),
        };
        out.push_str(&format!("{indent}{leaf}: {value}\n"));
    }
    out
}
