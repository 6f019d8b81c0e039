//! What AWS bills: DynamoDB request units worked out from the items a request reads and
//! writes, and the public on-demand prices (us-east-1) that turn counts into dollars.

use serde_json::{Map, Value};

/// A public on-demand price, per million of `unit`.
#[derive(Debug, Clone, Copy)]
pub struct Price {
    pub service: &'static str,
    pub unit: &'static str,
    pub per_million: f64,
}

pub const DYNAMODB_WRITE: Price =
    Price { service: "DynamoDB", unit: "write request unit (on-demand, 1 KB)", per_million: 0.625 };
pub const DYNAMODB_READ: Price =
    Price { service: "DynamoDB", unit: "read request unit (on-demand, 4 KB)", per_million: 0.125 };
pub const SQS: Price = Price { service: "SQS", unit: "request (standard queue, 64 KB)", per_million: 0.40 };
/// $0.10 per 1,000 emails; every recipient of a message is one email.
pub const SES: Price = Price { service: "SES", unit: "email (per recipient)", per_million: 100.0 };
/// Creating a schedule is free; each invocation it makes is billed.
pub const SCHEDULER: Price =
    Price { service: "EventBridge Scheduler", unit: "scheduled invocation", per_million: 1.00 };
pub const LAMBDA_REQUEST: Price = Price { service: "Lambda", unit: "invocation (request charge)", per_million: 0.20 };
pub const API_GATEWAY: Price = Price { service: "API Gateway", unit: "HTTP API request", per_million: 1.00 };
pub const STEP_FUNCTIONS: Price =
    Price { service: "Step Functions", unit: "state transition (Standard workflow)", per_million: 25.0 };
/// Lambda duration on arm64, dollars per GB-second.
pub const LAMBDA_ARM64_GB_SECOND: f64 = 0.000_013_333_4;

pub const PRICES: [Price; 8] =
    [DYNAMODB_WRITE, DYNAMODB_READ, SQS, SES, SCHEDULER, LAMBDA_REQUEST, API_GATEWAY, STEP_FUNCTIONS];

/// Read and write request units one DynamoDB request consumes on an on-demand table.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    pub read: f64,
    pub write: f64,
}

/// The units of DynamoDB operation `op`, from its request and response bodies. `size_after`
/// gives the size of the item with a table and key as it is now: an update's request does not
/// show the item it writes, and DynamoDB bills the item's size.
pub fn dynamodb_units(
    op: &str,
    request: &Value,
    response: &Value,
    size_after: &mut dyn FnMut(&str, &Value) -> u64,
) -> Units {
    let consistent = request.get("ConsistentRead").and_then(Value::as_bool).unwrap_or(false);
    let table = |v: &Value| v.get("TableName").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut units = Units::default();
    match op {
        "GetItem" => units.read = read_units(item_size_of(response.get("Item")), consistent),
        "Query" | "Scan" => {
            let bytes = items(response.get("Items")).map(item_size).sum();
            units.read = read_units(bytes, consistent);
        }
        "BatchGetItem" => {
            for (name, found) in response.get("Responses").and_then(Value::as_object).into_iter().flatten() {
                let consistent = request["RequestItems"][name]["ConsistentRead"].as_bool().unwrap_or(false);
                units.read += items(Some(found)).map(|i| read_units(item_size(i), consistent)).sum::<f64>();
            }
        }
        "TransactGetItems" => {
            for got in response.get("Responses").and_then(Value::as_array).into_iter().flatten() {
                units.read += 2.0 * read_units(item_size_of(got.get("Item")), true);
            }
        }
        "PutItem" => units.write = write_units(item_size_of(request.get("Item"))),
        "UpdateItem" => units.write = write_units(size_after(&table(request), &request["Key"])),
        "DeleteItem" => units.write = write_units(0),
        "BatchWriteItem" => {
            for writes in request.get("RequestItems").and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
                for write in writes.as_array().into_iter().flatten() {
                    units.write += write_units(item_size_of(write.pointer("/PutRequest/Item")));
                }
            }
        }
        // Transactional writes cost twice a plain write, condition checks included.
        "TransactWriteItems" => {
            for item in request.get("TransactItems").and_then(Value::as_array).into_iter().flatten() {
                let bytes = if let Some(put) = item.get("Put") {
                    item_size_of(put.get("Item"))
                } else if let Some(update) = item.get("Update") {
                    size_after(&table(update), &update["Key"])
                } else {
                    0
                };
                units.write += 2.0 * write_units(bytes);
            }
        }
        _ => {}
    }
    units
}

/// The (table, key) of every item `op` updates: their size is not in the request.
pub fn updated_items(op: &str, request: &Value) -> Vec<(String, Value)> {
    let target = |update: &Value| {
        (update.get("TableName").and_then(Value::as_str).unwrap_or_default().to_owned(), update["Key"].clone())
    };
    match op {
        "UpdateItem" => vec![target(request)],
        "TransactWriteItems" => request
            .get("TransactItems")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("Update"))
            .map(target)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `op` reads (rather than writes) a DynamoDB table.
pub fn dynamodb_reads(op: &str) -> bool {
    matches!(op, "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems")
}

/// One unit reads up to 4 KB strongly consistently, or twice that eventually consistently.
fn read_units(bytes: u64, consistent: bool) -> f64 {
    bytes.div_ceil(4096).max(1) as f64 * if consistent { 1.0 } else { 0.5 }
}

/// One unit writes up to 1 KB.
fn write_units(bytes: u64) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn items(list: Option<&Value>) -> impl Iterator<Item = &Map<String, Value>> {
    list.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_object)
}

fn item_size_of(item: Option<&Value>) -> u64 {
    item.and_then(Value::as_object).map_or(0, item_size)
}

/// DynamoDB's size of an item given in its JSON wire form: every attribute's name plus its value.
pub fn item_size(item: &Map<String, Value>) -> u64 {
    item.iter().map(|(name, value)| name.len() as u64 + value_size(value)).sum()
}

/// Strings and binaries by length, numbers about a byte per two digits, booleans and nulls one
/// byte, lists and maps three bytes plus one per element and the elements (and map keys).
fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return 0 };
    let strings = || inner.as_array().into_iter().flatten().filter_map(Value::as_str);
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, |s| s.len() as u64),
        "N" => inner.as_str().map_or(0, number_size),
        "B" => inner.as_str().map_or(0, base64_size),
        "BOOL" | "NULL" => 1,
        "SS" => strings().map(|s| s.len() as u64).sum(),
        "NS" => strings().map(number_size).sum(),
        "BS" => strings().map(base64_size).sum(),
        "L" => 3 + inner.as_array().into_iter().flatten().map(|v| 1 + value_size(v)).sum::<u64>(),
        "M" => {
            3 + inner.as_object().into_iter().flatten().map(|(k, v)| 1 + k.len() as u64 + value_size(v)).sum::<u64>()
        }
        _ => 0,
    }
}

fn number_size(number: &str) -> u64 {
    let digits = number.trim_start_matches(['-', '0']).chars().filter(char::is_ascii_digit).count() as u64;
    digits.div_ceil(2) + 1
}

fn base64_size(encoded: &str) -> u64 {
    (encoded.trim_end_matches('=').len() as u64 * 3) / 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_size_follows_dynamodb_rules() {
        let item = json!({"pk": {"S": "ACTION#1"}, "n": {"N": "12345"}, "ok": {"BOOL": true},
                          "l": {"L": [{"S": "ab"}]}, "m": {"M": {"k": {"S": "v"}}}});
        // pk 2+8, n 1+4, ok 2+1, l 1+3+(1+2), m 1+3+(1+1+1)
        assert_eq!(item_size(item.as_object().unwrap()), 10 + 5 + 3 + 7 + 7);
    }

    #[test]
    fn transactional_writes_cost_double_per_started_kilobyte() {
        let big = "x".repeat(1500);
        let request = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {"doc": {"S": big}}}},
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "c"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "c"}}}},
        ]});
        let units = dynamodb_units("TransactWriteItems", &request, &json!({}), &mut |_, _| 100);
        assert_eq!(units, Units { read: 0.0, write: 2.0 * 2.0 + 2.0 + 2.0 });
    }

    #[test]
    fn reads_round_up_to_four_kilobytes_and_halve_when_eventually_consistent() {
        let response = json!({"Item": {"doc": {"S": "x".repeat(5000)}}});
        let eventual = dynamodb_units("GetItem", &json!({}), &response, &mut |_, _| 0);
        let strong = dynamodb_units("GetItem", &json!({"ConsistentRead": true}), &response, &mut |_, _| 0);
        assert_eq!((eventual.read, strong.read), (1.0, 2.0));
        let missing = dynamodb_units("GetItem", &json!({}), &json!({}), &mut |_, _| 0);
        assert_eq!(missing.read, 0.5);
    }
}
