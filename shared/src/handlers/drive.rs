//! `drive.move_file` through Drive v3 `files.update` (`addParents` / `removeParents`). The
//! snapshot is the file's parents before the move; rollback puts back exactly that set (and
//! does nothing when the file is already there). Moving to where a file already is changes
//! nothing, so a repeated attempt is harmless.

use super::google_api::{self, api_url, call, strings};
use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub const ACTION_TYPE: &str = "drive.move_file";
const WHAT: &str = "Google Drive";

pub struct MoveFile;

/// The parents to add and remove to put a file whose parents are `now` exactly in `target`;
/// `None` when it is already there.
pub fn reparent_plan(
    now: &BTreeSet<String>,
    target: &BTreeSet<String>,
) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    if now == target {
        return None;
    }
    let add = target.difference(now).cloned().collect();
    let remove = now.difference(target).cloned().collect();
    Some((add, remove))
}

fn joined(ids: &BTreeSet<String>) -> String {
    ids.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// The file's parents now (an exact read: a snapshot relies on it).
async fn parents(ctx: &StepContext<'_>, file_id: &str) -> Result<BTreeSet<String>, HandlerError> {
    let url = api_url(
        &ctx.deps.drive_base,
        &["files", file_id],
        &[("fields", "id,parents"), ("supportsAllDrives", "true")],
        WHAT,
    )?;
    let file = call(ctx, Method::GET, url, None, WHAT).await?.into_object(WHAT)?;
    Ok(strings(file.get("parents")).into_iter().collect())
}

/// Adds and removes parents; the parents Drive reports after (or, if its answer cannot be
/// read, the ones expected: the change was made).
async fn reparent(
    ctx: &StepContext<'_>,
    file_id: &str,
    now: &BTreeSet<String>,
    add: &BTreeSet<String>,
    remove: &BTreeSet<String>,
) -> Result<BTreeSet<String>, HandlerError> {
    let add_list = joined(add);
    let remove_list = joined(remove);
    let url = {
        let mut query = vec![("fields", "id,parents"), ("supportsAllDrives", "true")];
        if !add_list.is_empty() {
            query.push(("addParents", add_list.as_str()));
        }
        if !remove_list.is_empty() {
            query.push(("removeParents", remove_list.as_str()));
        }
        api_url(&ctx.deps.drive_base, &["files", file_id], &query, WHAT)?
    };
    let answer = call(ctx, Method::PATCH, url, Some(&json!({})), WHAT).await?;
    if !answer.is_success() {
        return Err(answer.error(WHAT));
    }
    match answer.json.get("parents").and_then(Value::as_array) {
        Some(_) => Ok(strings(answer.json.get("parents")).into_iter().collect()),
        None => Ok(now.difference(remove).chain(add.iter()).cloned().collect()),
    }
}

fn ids(payload: &Value) -> Result<(&str, &str), HandlerError> {
    google_api::check(ACTION_TYPE, payload)?;
    Ok((google_api::field(payload, "file_id"), google_api::field(payload, "to_folder_id")))
}

impl Handler for MoveFile {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        google_api::check(ACTION_TYPE, payload)
    }

    fn preview(&self, payload: &Value) -> String {
        google_api::preview(ACTION_TYPE, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Reversible
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("drive".into())
    }

    fn snapshot<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let (file_id, _) = ids(ctx.payload)?;
            let before = parents(ctx, file_id).await?;
            Ok(json!({"file_id": file_id, "parents": before}))
        })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let (file_id, folder) = ids(ctx.payload)?;
            let now = parents(ctx, file_id).await?;
            let target = BTreeSet::from([folder.to_owned()]);
            let Some((add, remove)) = reparent_plan(&now, &target) else {
                return Ok(json!({"file_id": file_id, "parents": now, "removed": [], "changed": false}));
            };
            let after = reparent(ctx, file_id, &now, &add, &remove).await?;
            Ok(json!({"file_id": file_id, "parents": after, "removed": remove, "changed": true}))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        snapshot: &'a Value,
        result: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let (payload_file, _) = ids(ctx.payload)?;
            let file_id = snapshot.get("file_id").and_then(Value::as_str).unwrap_or(payload_file);
            if snapshot.get("parents").and_then(Value::as_array).is_none() {
                return Err(HandlerError::permanent(
                    "no_snapshot",
                    format!("the parents of Drive file {file_id} before the move were not recorded"),
                ));
            }
            let before: BTreeSet<String> = strings(snapshot.get("parents")).into_iter().collect();
            let now = parents(ctx, file_id).await?;
            let Some((add, remove)) = reparent_plan(&now, &before) else {
                return Ok(json!({"file_id": file_id, "parents": now, "changed": false}));
            };
            // Only our move is undone: a file someone moved on since stays where they put it.
            // Where our move left it is what Drive answered (a folder named `root` comes back
            // as its real id), else the payload's folder.
            let (_, folder) = ids(ctx.payload)?;
            let ours: BTreeSet<String> = match result.get("parents").and_then(Value::as_array) {
                Some(_) => strings(result.get("parents")).into_iter().collect(),
                None => BTreeSet::from([folder.to_owned()]),
            };
            if now != ours {
                return Err(HandlerError::permanent(
                    "target_changed",
                    format!(
                        "Drive file {file_id} was moved again since (now in {now:?}); a human decides where it goes"
                    ),
                ));
            }
            let restored = reparent(ctx, file_id, &now, &add, &remove).await?;
            Ok(json!({"file_id": file_id, "parents": restored, "changed": true}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_move_adds_the_folder_and_removes_the_others() {
        let (add, remove) = reparent_plan(&set(&["a", "b"]), &set(&["c"])).unwrap();
        assert_eq!((add, remove), (set(&["c"]), set(&["a", "b"])));
        let (add, remove) = reparent_plan(&set(&["a", "c"]), &set(&["c"])).unwrap();
        assert_eq!((add, remove), (set(&[]), set(&["a"])));
        assert_eq!(reparent_plan(&set(&["c"]), &set(&["c"])), None);
    }

    #[test]
    fn a_rollback_restores_exactly_the_snapshot() {
        let (add, remove) = reparent_plan(&set(&["c"]), &set(&["a", "b"])).unwrap();
        assert_eq!((add, remove), (set(&["a", "b"]), set(&["c"])));
        assert_eq!(reparent_plan(&set(&["a", "b"]), &set(&["b", "a"])), None);
        assert_eq!(joined(&set(&["b", "a"])), "a,b");
    }

    #[test]
    fn payload_ids_are_checked_again() {
        assert!(ids(&json!({"file_id": "f1", "to_folder_id": "d1"})).is_ok());
        assert_eq!(ids(&json!({"file_id": "f/1", "to_folder_id": "d1"})).unwrap_err().code, "invalid_payload");
    }
}
