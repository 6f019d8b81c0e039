//! Administrators' listings (`GET /admin/actions`): everyone's actions by user (and status), by
//! status, or by day of creation, each a key range of a global index — never a table scan. The
//! type and tier filters apply to what the index returns, so a page may come back short; the
//! cursor carries on where the reading stopped (and, by day, on which day).

use super::actions::readable_actions;
use super::*;

/// The most index reads one page may take (short pages and empty days each take one).
const MAX_READS: usize = 40;

/// Where a listing reads: an index, its key attributes, and the partitions (newest first).
struct Plan {
    index: &'static str,
    pk: &'static str,
    sk: &'static str,
    partitions: Vec<String>,
}

fn plan(query: &ActionQuery) -> Plan {
    match (&query.user, query.status) {
        (Some(user), Some(status)) => Plan {
            index: keys::GSI_BY_USER_STATUS,
            pk: keys::GSI2_PK,
            sk: keys::GSI2_SK,
            partitions: vec![keys::user_status_partition(user, status)],
        },
        (Some(user), None) => Plan {
            index: keys::GSI_BY_USER,
            pk: keys::GSI1_PK,
            sk: keys::GSI1_SK,
            partitions: vec![keys::user_partition(user)],
        },
        (None, Some(status)) => Plan {
            index: keys::GSI_BY_STATUS,
            pk: keys::GSI4_PK,
            sk: keys::GSI4_SK,
            partitions: vec![keys::status_partition(status)],
        },
        (None, None) => {
            // Every day of the range, newest first (the range is bounded by the caller).
            let mut days = Vec::new();
            let first = query.from.date_naive();
            let mut day = (query.to - chrono::Duration::milliseconds(1)).date_naive();
            while day >= first && days.len() <= 400 {
                days.push(keys::day_partition(day));
                match day.pred_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
            Plan { index: keys::GSI_BY_DAY, pk: keys::GSI5_PK, sk: keys::GSI5_SK, partitions: days }
        }
    }
}

/// The cursor: the partition the listing stopped in and, when it stopped inside it, the key to
/// read on from. Accepted only for a partition of the same plan, with exactly its key attributes.
fn encode(partition: &str, key: Option<&Item>) -> String {
    let key: Option<BTreeMap<&str, &str>> =
        key.map(|k| k.iter().filter_map(|(name, v)| Some((name.as_str(), v.as_s().ok()?.as_str()))).collect());
    let json = serde_json::json!({"p": partition, "k": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Accepted only when its key is an action's own (`ACTION#<id>`, `ACTION`, the id as sort key)
/// within the query's id range `[lo, hi)`: DynamoDB is never handed a start key outside it.
fn decode(cursor: &str, plan: &Plan, lo: &str, hi: &str) -> Option<(usize, Option<Item>)> {
    if cursor.len() > 2048 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let partition = value.get("p")?.as_str()?;
    let at = plan.partitions.iter().position(|p| p == partition)?;
    let key = match value.get("k")? {
        serde_json::Value::Null => None,
        serde_json::Value::Object(map) => {
            let expected = [keys::PK, keys::SK, plan.pk, plan.sk];
            if map.len() != expected.len() || !expected.iter().all(|k| map.get(*k).is_some_and(|v| v.is_string())) {
                return None;
            }
            let text = |k: &str| map.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let id = text(plan.sk);
            if text(plan.pk) != partition
                || text(keys::PK) != keys::action_pk(ActionId::parse(id)?)
                || text(keys::SK) != keys::ACTION_SK
                || id < lo
                || id >= hi
            {
                return None;
            }
            Some(
                map.iter()
                    .map(|(k, v)| (k.clone(), AttributeValue::S(v.as_str().unwrap_or_default().to_owned())))
                    .collect(),
            )
        }
        _ => return None,
    };
    Some((at, key))
}

impl DynamoStore {
    pub(super) async fn listing(
        &self,
        query: &ActionQuery,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        let plan = plan(query);
        let (lo, hi) = (keys::id_floor(query.from), keys::id_floor(query.to));
        let (mut at, mut start) = match cursor {
            None => (0, None),
            Some(c) => match decode(c, &plan, &lo, &hi) {
                Some(v) => v,
                None => return Ok(Err(BadCursor)),
            },
        };
        let mut actions = Vec::new();
        let limit = limit.max(1) as usize;
        for _ in 0..MAX_READS {
            let Some(partition) = plan.partitions.get(at) else {
                return Ok(Ok(Page { actions, next_cursor: None }));
            };
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(plan.index)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#pk", plan.pk)
                .expression_attribute_names("#sk", plan.sk)
                .expression_attribute_values(":pk", s(partition.clone()))
                .expression_attribute_values(":lo", s(lo.clone()))
                .expression_attribute_values(":hi", s(hi.clone()))
                .scan_index_forward(false)
                .limit((limit - actions.len()) as i32)
                .set_exclusive_start_key(start.take());
            // On the everyone's indexes the type and tier are filtered in DynamoDB; on a user's
            // own, by what each action says (items from before those attributes lack them).
            let everyone = plan.index == keys::GSI_BY_STATUS || plan.index == keys::GSI_BY_DAY;
            let mut filters = Vec::new();
            if let (true, Some(t)) = (everyone, &query.action_type) {
                filters.push("#type = :type");
                request = request
                    .expression_attribute_names("#type", "action_type")
                    .expression_attribute_values(":type", s(t.clone()));
            }
            if let (true, Some(tier)) = (everyone, query.tier) {
                filters.push("#tier = :tier");
                request = request
                    .expression_attribute_names("#tier", "tier")
                    .expression_attribute_values(":tier", n(tier as u8));
            }
            if !filters.is_empty() {
                request = request.filter_expression(filters.join(" AND "));
            }
            let out = request.send().await.map_err(aws_error)?;
            // The index may lag a write: what the action says now decides.
            actions.extend(readable_actions(out.items()).into_iter().filter(|a| query.matches(a)));
            match out.last_evaluated_key() {
                Some(key) if actions.len() >= limit => {
                    return Ok(Ok(Page { actions, next_cursor: Some(encode(partition, Some(key))) }));
                }
                Some(key) => start = Some(key.clone()),
                None => {
                    at += 1;
                    if actions.len() >= limit {
                        let next = plan.partitions.get(at).map(|p| encode(p, None));
                        return Ok(Ok(Page { actions, next_cursor: next }));
                    }
                }
            }
        }
        // Out of reads for this page: carry on from here next time.
        let next = plan.partitions.get(at).map(|p| encode(p, start.as_ref()));
        Ok(Ok(Page { actions, next_cursor: next }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> ActionQuery {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        ActionQuery {
            status: None,
            action_type: None,
            user: None,
            tier: None,
            from: at("2026-11-28T10:00:00Z"),
            to: at("2026-12-01T00:00:00Z"),
        }
    }

    #[test]
    fn a_listing_without_user_or_status_reads_each_day_newest_first() {
        let plan = plan(&query());
        assert_eq!(plan.index, keys::GSI_BY_DAY);
        assert_eq!(plan.partitions, vec!["DAY#2026-11-30", "DAY#2026-11-29", "DAY#2026-11-28"]);
        let mut q = query();
        q.status = Some(Status::Manual);
        assert_eq!(plan_of(&q), keys::GSI_BY_STATUS);
        q.user = Some(UserId::parse("alice").unwrap());
        assert_eq!(plan_of(&q), keys::GSI_BY_USER_STATUS);
    }

    fn plan_of(q: &ActionQuery) -> &'static str {
        plan(q).index
    }

    #[test]
    fn cursors_work_only_for_their_own_plan_and_range() {
        let q = query();
        let p = plan(&q);
        let (lo, hi) = (keys::id_floor(q.from), keys::id_floor(q.to));
        let id = ActionId::new_v7(q.from + chrono::Duration::days(1)).to_string();
        let key_of = |id: &str, day: &str| {
            let mut key = Item::new();
            for (k, v) in [
                (keys::PK, format!("ACTION#{id}")),
                (keys::SK, "ACTION".into()),
                (keys::GSI5_PK, day.into()),
                (keys::GSI5_SK, id.into()),
            ] {
                key.insert(k.into(), AttributeValue::S(v));
            }
            key
        };
        let c = encode("DAY#2026-11-29", Some(&key_of(&id, "DAY#2026-11-29")));
        assert_eq!(decode(&c, &p, &lo, &hi).map(|(at, k)| (at, k.is_some())), Some((1, true)));
        assert_eq!(decode(&encode("DAY#2026-11-28", None), &p, &lo, &hi).map(|(at, _)| at), Some(2));
        assert!(decode(&encode("DAY#2020-01-01", None), &p, &lo, &hi).is_none(), "a day outside the range");
        assert!(decode(&encode("DAY#2026-11-30", Some(&key_of(&id, "DAY#2026-11-29"))), &p, &lo, &hi).is_none());
        let old = ActionId::new_v7(q.from - chrono::Duration::days(9)).to_string();
        let outside = encode("DAY#2026-11-29", Some(&key_of(&old, "DAY#2026-11-29")));
        assert!(decode(&outside, &p, &lo, &hi).is_none(), "outside the ids");
        let mut forged = key_of(&id, "DAY#2026-11-29");
        forged.insert(keys::PK.into(), AttributeValue::S("ACTION#someone-else".into()));
        assert!(decode(&encode("DAY#2026-11-29", Some(&forged)), &p, &lo, &hi).is_none(), "not the action's own key");
        let mut status = query();
        status.status = Some(Status::Completed);
        assert!(decode(&c, &plan(&status), &lo, &hi).is_none(), "another index");
        assert!(decode("not base64!", &p, &lo, &hi).is_none());
    }

    #[test]
    fn a_time_range_is_a_range_of_ids() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T02:00:00Z").unwrap().with_timezone(&Utc);
        let id = ActionId::new_v7(at).to_string();
        assert!(id >= keys::id_floor(at));
        assert!(id < keys::id_floor(at + chrono::Duration::milliseconds(1)));
        assert!(id > keys::id_floor(at - chrono::Duration::seconds(1)));
    }
}
