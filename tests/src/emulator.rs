//! The AWS emulator: a moto server on a loopback port, and SDK configuration pointing at it.

use crate::process::ManagedChild;
use anyhow::{bail, Result};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Emulator {
    pub endpoint: String,
    pub port: u16,
    _child: ManagedChild,
}

impl Emulator {
    pub async fn start(port: u16) -> Result<Self> {
        if !crate::venv_bin("moto_server").exists() {
            bail!("moto is not installed in .venv: run `make setup` (or `make dev` / `make test`, which run it)");
        }
        let root = crate::workspace_root();
        let logs = root.join(".local");
        std::fs::create_dir_all(&logs)?;
        // moto's server with DynamoDB requests serialized (scripts/emulator.py says why).
        let mut cmd = Command::new(crate::venv_bin("python"));
        cmd.arg(root.join("scripts/emulator.py")).args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child = ManagedChild::spawn("moto", cmd, Some(&logs.join(format!("moto-{port}.log"))))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for_http(&format!("{endpoint}/moto-api/reset-auth"), Duration::from_secs(60)).await?;
        Ok(Self { endpoint, port, _child: child })
    }

    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }
}

/// SDK configuration for the emulator: fixed region and dummy credentials.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "local-stack");
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .load()
        .await
}

/// Polls until `url` answers anything at all over HTTP.
pub async fn wait_for_http(url: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let start = Instant::now();
    loop {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{url} did not answer within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
