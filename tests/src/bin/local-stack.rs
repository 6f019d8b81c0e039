//! `make dev`: the whole stack on loopback, in the foreground until Ctrl-C.

use actiongate::ports::store::GuardStore;
use actiongate_local::outbox;
use actiongate_local::stack::{LocalStack, StackOptions};

/// The first `http(s)://…/approvals/<token>` in a mail's text.
fn approval_link(text: &str) -> Option<&str> {
    let at = text.find("/approvals/")?;
    let start = text[..at].rfind("http")?;
    let end = text[at..].find(|c: char| c.is_whitespace()).map_or(text.len(), |e| at + e);
    Some(&text[start..end])
}

fn port(var: &str, default: u16) -> anyhow::Result<u16> {
    match std::env::var(var) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{var} must be a port number, not `{v}`")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    actiongate_local::init_logs(tracing::Level::INFO, std::io::stdout);
    let options = StackOptions {
        gateway_port: port("ACTIONGATE_PORT", 8080)?,
        emulator_port: port("ACTIONGATE_EMULATOR_PORT", 5000)?,
        invoke_port: port("ACTIONGATE_FUNCTIONS_PORT", 9000)?,
        reload: std::env::var("ACTIONGATE_RELOAD").map(|v| v != "0").unwrap_or(true),
        inherit_logs: true,
        extra_env: vec![],
        schedule_every_secs: port("ACTIONGATE_SWEEP_SECS", 5)? as u64,
        no_schedules: false,
        release: false,
    };
    println!("actiongate: starting the local stack (emulator, provisioning, functions)…");
    let stack = LocalStack::start(options).await?;
    println!();
    println!("  gateway    {}   (try: curl {}/health)", stack.gateway_url, stack.gateway_url);
    println!("  emulator   {}", stack.emulator.endpoint);
    println!("  functions  http://127.0.0.1:{} (cargo lambda watch)", stack.invoke_port);
    println!("  identity   Authorization: Bearer dev:<user_id>   (admin: dev:<user_id>:admin)");
    println!("  outbox     {}/_local/outbox", stack.gateway_url);
    println!("  fakes      {}/_fake/state   (Gmail, Calendar, webhooks: {}/hook/ok)", stack.fakes.url, stack.fakes.url);
    println!();
    println!("Ready. Ctrl-C stops everything.");
    let http = reqwest::Client::new();
    let mut mail_seen = 0usize;
    let store = actiongate::adapters::aws::dynamo::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.provisioned.table("ActionsTable")?,
        stack.provisioned.table("AuditTable")?,
    );
    let mut breaker_shown: Option<actiongate::breaker::BreakerStatus> = None;
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {
                // Show the circuit breaker whenever it changes.
                // The window only shapes the ratio, which is not shown here.
                if let Ok(breaker) = store.breaker(1).await {
                    if breaker_shown != Some(breaker.state) {
                        match breaker.state {
                            actiongate::breaker::BreakerStatus::Open => println!(
                                "\n⚠  circuit breaker OPEN: {} — tier-1 work waits; reset with POST /admin/circuit-breaker/reset\n",
                                breaker.reason.as_deref().unwrap_or("too many failures")
                            ),
                            actiongate::breaker::BreakerStatus::Closed => println!("   circuit breaker: closed (automatic execution running)"),
                        }
                        breaker_shown = Some(breaker.state);
                    }
                }
                // Print each approval link as its mail is sent, so it can be clicked.
                if let Ok(messages) = outbox::read(&http, &stack.emulator.endpoint).await {
                    for m in messages.iter().skip(mail_seen) {
                        println!("\n✉  mail to {}: {}", m.to.join(", "), m.subject);
                        if let Some(link) = m.text.as_deref().and_then(approval_link) {
                            println!("   approval link: {link}\n");
                        }
                    }
                    mail_seen = mail_seen.max(messages.len());
                }
            }
        }
    }
    println!("actiongate: stopping…");
    stack.stop();
    Ok(())
}
