//! The local stack: moto as the AWS emulator, resources provisioned from the SAM template,
//! the functions running under `cargo lambda watch`, and a gateway on loopback that plays
//! API Gateway (routes and JWT authorizer) in front of them. `make dev` runs it in the
//! foreground; the end-to-end tests start one per test binary.

pub mod bench;
pub mod emulator;
pub mod fake_google;
pub mod fakes;
pub mod fixtures;
pub mod gateway;
pub mod oidc;
pub mod openapi;
pub mod outbox;
pub mod process;
pub mod provision;
pub mod pump;
pub mod stack;
pub mod template;
pub mod world;

use std::path::PathBuf;

/// Human-readable logs of the local tools on `writer`, filtered by `RUST_LOG` as the functions'
/// logs are (`default` when it is unset; a value that does not parse is reported).
pub fn init_logs<W>(default: tracing::Level, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    let (filter, refused) = actiongate::telemetry::log_filter(actiongate::config::log_directives(), default);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(writer).with_filter(filter))
        .init();
    if let Some(reason) = refused {
        tracing::warn!("{reason}");
    }
}

/// The repository root (where `Cargo.toml`, `infra/` and `.venv/` are).
pub fn workspace_root() -> PathBuf {
    match std::env::var_os("ACTIONGATE_ROOT") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// The virtualenv `scripts/setup.sh` creates, holding moto, cargo-lambda and cfn-lint.
pub fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("ACTIONGATE_VENV").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".venv"));
    venv.join("bin").join(tool)
}

/// A port the OS says is free right now on loopback.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Room for many automatic executions: an edit for [`policy_file`] (the deployed policy allows
/// ten an hour and fifty a day).
pub const ROOMY_AUTO_LIMITS: (&str, &str) = (
    "[auto_execution]\nenabled = true\nper_hour = 10\nper_day = 50",
    "[auto_execution]\nenabled = true\nper_hour = 1000\nper_day = 5000",
);

/// The deployed policy (`infra/policy.toml`) with `edits` (exact text replacements) applied,
/// written to `.local/policy-<name>.toml`; returns its path for `POLICY_FILE`.
pub fn policy_file(name: &str, edits: &[(&str, &str)]) -> anyhow::Result<String> {
    let root = workspace_root();
    let mut policy = std::fs::read_to_string(root.join("infra/policy.toml"))?;
    for (from, to) in edits {
        anyhow::ensure!(policy.contains(from), "policy edit does not apply: {from}");
        policy = policy.replace(from, to);
    }
    std::fs::create_dir_all(root.join(".local"))?;
    let path = root.join(format!(".local/policy-{name}.toml"));
    std::fs::write(&path, policy)?;
    Ok(path.to_string_lossy().into_owned())
}
