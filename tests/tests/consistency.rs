//! Invariants between the code, the template and the build.

use actiongate::config::vars;
use actiongate_local::template::Template;
use std::collections::BTreeSet;
use std::process::Command;

fn template() -> Template {
    Template::load(&actiongate_local::workspace_root().join("infra/template.yaml")).unwrap()
}

/// What each function's `main` reads through `actiongate::config`.
fn reads(binary: &str) -> Vec<&'static str> {
    let mut v = vec![
        vars::ACTIONS_TABLE,
        vars::AUDIT_TABLE,
        vars::WORK_QUEUE_URL,
        vars::POLICY_CACHE_SECS,
        vars::ROLLBACK_RETENTION_DAYS,
    ];
    match binary {
        "intake" | "sweep" => v.extend([vars::SENDER_EMAIL, vars::PUBLIC_BASE_URL]),
        "rollback" => {
            v.extend([vars::SENDER_EMAIL, vars::GMAIL_API_BASE, vars::CALENDAR_API_BASE, vars::WEBHOOK_ALLOWLIST])
        }
        "executor" => v.extend([
            vars::WORK_QUEUE_ARN,
            vars::SCHEDULE_GROUP,
            vars::SCHEDULER_ROLE_ARN,
            vars::SENDER_EMAIL,
            vars::GMAIL_API_BASE,
            vars::CALENDAR_API_BASE,
            vars::WEBHOOK_ALLOWLIST,
        ]),
        _ => {}
    }
    v
}

#[test]
fn every_variable_a_function_reads_is_set_for_it_in_the_template() {
    let t = template();
    let binaries: BTreeSet<&str> = t.functions.iter().map(|f| f.binary.as_str()).collect();
    assert_eq!(binaries, BTreeSet::from(["approval", "executor", "intake", "rollback", "sweep"]));
    for f in &t.functions {
        let set: BTreeSet<&str> = f.env.iter().map(|(k, _)| k.as_str()).collect();
        for var in reads(&f.binary) {
            assert!(set.contains(var), "{} reads {var} but the template does not set it", f.binary);
        }
        // The crash-simulation switch exists only for the local tests.
        assert!(!set.contains(actiongate::executor::FAULT_INJECTION_VAR));
    }
}

#[test]
fn the_tables_the_store_uses_exist_with_the_same_keys() {
    use actiongate::store::keys;
    let t = template();
    let actions = t.table("ActionsTable").unwrap();
    assert_eq!(actions.key, (keys::PK.to_owned(), Some(keys::SK.to_owned())));
    for (index, pk, sk) in [
        (keys::GSI_BY_USER, keys::GSI1_PK, keys::GSI1_SK),
        (keys::GSI_BY_USER_STATUS, keys::GSI2_PK, keys::GSI2_SK),
        (keys::GSI_DUE, keys::DUE_PK, keys::DUE_SK),
    ] {
        let i = actions.indexes.iter().find(|i| i.name == index).unwrap_or_else(|| panic!("index {index} missing"));
        assert_eq!(i.key, (pk.to_owned(), Some(sk.to_owned())), "{index}");
    }
    assert_eq!(actions.ttl_attribute.as_deref(), Some(keys::TTL));
    let audit = t.table("AuditTable").unwrap();
    assert_eq!(audit.key, (keys::AUDIT_PK.to_owned(), Some(keys::AUDIT_SK.to_owned())));
}

/// cargo lambda builds each function on its own; if a function's dependency features differed
/// from the workspace build's, the AWS SDK would be compiled twice.
#[test]
fn each_function_builds_with_the_workspace_feature_set() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = |selection: &[&str]| -> BTreeSet<String> {
        let out = Command::new(&cargo)
            .current_dir(actiongate_local::workspace_root())
            .args(["tree", "--offline", "-e", "normal,build", "-f", "{p} {f}", "--prefix", "none"])
            .args(selection)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_end_matches(" (*)").to_owned()).collect()
    };
    let workspace = tree(&["--workspace"]);
    let ours = |line: &String| {
        ["actiongate ", "intake ", "approval ", "executor ", "sweep ", "rollback ", "actiongate-local "]
            .iter()
            .any(|p| line.starts_with(p))
    };
    for binary in ["intake", "approval", "executor", "sweep", "rollback"] {
        let alone = tree(&["-p", binary]);
        let differing: Vec<&String> = alone
            .iter()
            .filter(|line| !ours(line))
            .filter(|line| {
                let package = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
                workspace.iter().any(|w| w.starts_with(&format!("{package} "))) && !workspace.contains(*line)
            })
            .collect();
        assert!(differing.is_empty(), "{binary} alone resolves different features: {differing:?}");
    }
}

/// Audit events are never updated or deleted: no function's policy allows it on the audit table.
#[test]
fn no_function_may_update_or_delete_audit_items() {
    let text = std::fs::read_to_string(actiongate_local::workspace_root().join("infra/template.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = doc["Resources"].as_mapping().unwrap();
    let mut checked = 0;
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        for policy in resource["Properties"]["Policies"].as_sequence().into_iter().flatten() {
            for statement in policy["Statement"].as_sequence().into_iter().flatten() {
                let on_audit = serde_yaml::to_string(&statement["Resource"]).unwrap().contains("AuditTable");
                if !on_audit {
                    continue;
                }
                checked += 1;
                let actions: Vec<&str> = match &statement["Action"] {
                    serde_yaml::Value::Sequence(s) => s.iter().filter_map(|a| a.as_str()).collect(),
                    other => other.as_str().into_iter().collect(),
                };
                for action in actions {
                    assert!(
                        ["dynamodb:PutItem", "dynamodb:Query"].contains(&action),
                        "{name:?} may {action} on the audit table; audit items are append-only"
                    );
                }
            }
        }
    }
    assert!(checked >= 5, "every function appends to the audit table");
}
