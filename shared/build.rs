//! Embeds the default policy (`infra/policy.toml`) as JSON: the functions read it at every start,
//! and JSON is the cheaper of the two to read there (about a tenth of a millisecond less than
//! TOML). A policy that is not TOML fails the build; its rules are checked by the unit tests.

use std::path::PathBuf;

fn main() {
    let source = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("../infra/policy.toml");
    println!("cargo:rerun-if-changed={}", source.display());
    let text = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let json = serde_json::to_string(&value).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let out = PathBuf::from(env("OUT_DIR")).join("policy.json");
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}
