//! Test settings: YAML text over the built-in defaults, the way config files layer.

use std::path::Path;

use pyrogate::config::{Layers, Settings};

/// Settings from YAML texts over the built-in defaults, each a config file of its own
/// (`test-1.yaml`, `test-2.yaml`, …), so a later one overrides an earlier one key by key.
/// Empty texts are skipped.
pub fn layered(yamls: &[&str]) -> Settings {
    let mut layers = Layers::defaults();
    for (i, yaml) in yamls.iter().enumerate().filter(|(_, y)| !y.is_empty()) {
        let name = format!("test-{}.yaml", i + 1);
        layers
            .merge_yaml(yaml, Path::new(&name))
            .unwrap_or_else(|e| panic!("test config {name}: {e}\n{yaml}"));
    }
    Settings::from_layers(&layers).unwrap_or_else(|e| panic!("test settings: {e}\n{yamls:?}"))
}
