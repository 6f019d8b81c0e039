//! `actiongate-mcp`: the MCP server over stdio, for desktop agents. It speaks to a deployed or
//! local actiongate API as the user whose token it is given:
//!
//! ```sh
//! ACTIONGATE_API_URL=https://api.example.com ACTIONGATE_TOKEN=<jwt> actiongate-mcp
//! ```
//!
//! Logs go to stderr (stdout carries the protocol).

use rmcp::ServiceExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let base = std::env::var("ACTIONGATE_API_URL").map_err(|_| "set ACTIONGATE_API_URL to the actiongate API's URL")?;
    let token = std::env::var("ACTIONGATE_TOKEN").ok().filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!("ACTIONGATE_TOKEN is not set: every tool call will be refused as unauthorized");
    }
    let tools = actiongate_mcp::ActiongateTools::new(&base, token)?;
    let server = tools.serve(rmcp::transport::stdio()).await?;
    server.waiting().await?;
    Ok(())
}
