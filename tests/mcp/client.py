"""An MCP client we did not write (the official Python SDK, pinned in requirements-dev.txt)
driving actiongate's MCP server, over stdio or Streamable HTTP.

    client.py stdio <path to actiongate-mcp> <api url> <token> <second user's token>
    client.py http  <url of /mcp>             <api url> <token> <second user's token>

It runs the scenario the agent front door must hold and prints one JSON line per check; it
exits non-zero on the first check that fails.
"""

import asyncio
import json
import os
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def check(name, ok, detail=None):
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}, default=str), flush=True)
    if not ok:
        raise SystemExit(f"check failed: {name}: {detail}")


def structured(result):
    return getattr(result, "structured_content", None) or {}


def is_error(result):
    return bool(getattr(result, "is_error", False))


async def scenario(session, other, label):
    await session.initialize()
    tools = await session.list_tools()
    names = sorted(t.name for t in tools.tools)
    check("tools listed", names == sorted([
        "list_action_types", "propose_action", "get_action", "wait_for_action",
        "list_actions", "cancel_action", "rollback_action", "check_rate_limits"]), names)
    propose = next(t for t in tools.tools if t.name == "propose_action")
    schema = propose.input_schema
    check("payload schemas in propose_action", "gmail.flag" in json.dumps(schema) and "allOf" in schema,
          list(schema.keys()))

    types = structured(await session.call_tool("list_action_types", {}))
    check("action types", any(t["action_type"] == "gmail.flag" for t in types.get("action_types", [])), None)

    # Tier 1: runs; wait_for_action returns when it ends.
    message = f"mcp-{label}-{time.time_ns()}"
    r = await session.call_tool("propose_action", {
        "action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.95,
        "rate_limit_key": message})
    body = structured(r)
    check("tier 1 queued", not is_error(r) and body.get("status") in ("queued", "executing", "completed"), body)
    action_id = body["action_id"]
    status = None
    for _ in range(10):
        waited = structured(await session.call_tool("wait_for_action", {"action_id": action_id, "timeout_s": 10}))
        status = waited.get("status")
        if status in ("completed", "failed"):
            break
    check("tier 1 completes", status in ("completed", "failed"), status)

    # Tier 2: needs_approval with the expiry, as an isError result an agent can read.
    r = await session.call_tool("propose_action", {
        "action_type": "send_email", "confidence": 0.9,
        "payload": {"to": ["bob@example.com"], "subject": f"MCP {label}", "text": "hello"}})
    body = structured(r)
    check("tier 2 needs approval", is_error(r) and body.get("error") == "needs_approval"
          and body.get("approval_expires_at") and body.get("action_id"), body)
    approval_id = body["action_id"]

    # Rate limited: retry_after_s.
    limited = None
    for i in range(8):
        r = await session.call_tool("propose_action", {
            "action_type": "send_email", "confidence": 0.9,
            "payload": {"to": ["bob@example.com"], "subject": f"limit {i}", "text": "hello"}})
        body = structured(r)
        if is_error(r) and body.get("error") == "rate_limited":
            limited = body
            break
    check("rate limited with retry_after_s", limited and limited.get("retry_after_s", 0) > 0, limited)

    # Invalid arguments: a tool error naming the problem, never a crash.
    r = await session.call_tool("get_action", {"action_id": 7})
    check("invalid arguments", is_error(r) and structured(r).get("error") == "invalid_arguments", structured(r))
    r = await session.call_tool("propose_action", {"action_type": "gmail.flag", "payload": {}, "confidence": 0.9})
    check("refused payload names the field", is_error(r) and structured(r).get("field"), structured(r))

    # Unknown tool: a JSON-RPC error.
    try:
        r = await session.call_tool("no_such_tool", {})
        check("unknown tool refused", is_error(r), r)
    except Exception as e:  # the SDK raises on a JSON-RPC error
        check("unknown tool refused", True, repr(e))

    # Another user sees nothing of it through any tool.
    await other.initialize()
    seen = structured(await other.call_tool("get_action", {"action_id": approval_id}))
    check("other user cannot get it", seen.get("error") == "not_found", seen)
    seen = structured(await other.call_tool("wait_for_action", {"action_id": approval_id, "timeout_s": 0}))
    check("other user cannot wait on it", seen.get("error") == "not_found", seen)
    listed = structured(await other.call_tool("list_actions", {}))
    check("other user's list is theirs", all(a["action_id"] not in (action_id, approval_id)
                                             for a in listed.get("actions", [])), None)
    seen = structured(await other.call_tool("cancel_action", {"action_id": approval_id}))
    check("other user cannot cancel it", seen.get("error") == "not_found", seen)
    mine = structured(await session.call_tool("cancel_action", {"action_id": approval_id, "reason": "test"}))
    check("owner cancels it", mine.get("status") == "cancelled", mine)


async def main():
    mode, target, api, token, other_token = sys.argv[1:6]
    if mode == "stdio":
        def params(t):
            env = dict(os.environ, ACTIONGATE_API_URL=api, ACTIONGATE_TOKEN=t)
            return StdioServerParameters(command=target, args=[], env=env)
        async with stdio_client(params(token)) as (r, w), ClientSession(r, w) as session:
            async with stdio_client(params(other_token)) as (r2, w2), ClientSession(r2, w2) as other:
                await scenario(session, other, "stdio")
    else:
        client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        other_client = create_mcp_http_client(headers={"Authorization": f"Bearer {other_token}"})
        async with client, other_client:
            async with streamable_http_client(target, http_client=client) as (r, w), ClientSession(r, w) as session:
                async with streamable_http_client(target, http_client=other_client) as (r2, w2), \
                        ClientSession(r2, w2) as other:
                    await scenario(session, other, "http")
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    anyio.run(main)
