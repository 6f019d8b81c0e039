//! Invariants between the code, the template and the build.

use actiongate::config::vars;
use actiongate_local::template::Template;
use std::collections::BTreeSet;
use std::process::Command;

fn template() -> Template {
    Template::load(&actiongate_local::workspace_root().join("infra/template.yaml")).unwrap()
}

fn source(path: &str) -> String {
    std::fs::read_to_string(actiongate_local::workspace_root().join(path)).unwrap()
}

/// The identifiers `name` is preceded by in `text` (e.g. the `X` of every `X::from_env`).
fn callers_of(text: &str, name: &str) -> BTreeSet<String> {
    text.match_indices(name)
        .filter_map(|(i, _)| {
            let before = &text[..i];
            let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
            (start < i).then(|| before[start..].to_owned())
        })
        .collect()
}

/// The constants named after `prefix` in `text` (e.g. every `vars::NAME`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            rest[..rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(rest.len())].to_owned()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Every environment variable each function reads, derived from the code: the config types its
/// `main` builds (`X::from_env`), and the `vars::` each of those reads in its `impl` block of
/// `shared/src/config.rs`, following the config types they build in turn.
fn reads(binary: &str) -> BTreeSet<String> {
    let config = source("shared/src/config.rs");
    let mut blocks = std::collections::BTreeMap::new();
    for block in config.split("\nimpl ").skip(1) {
        let name = block.split_whitespace().next().unwrap().to_owned();
        let body = block.split("\n}\n").next().unwrap();
        blocks.insert(name, (names_after(body, "vars::"), callers_of(body, "::from_env")));
    }
    let mut todo: Vec<String> = callers_of(&source(&format!("functions/{binary}/src/main.rs")), "::from_env")
        .into_iter()
        .filter(|t| t.ends_with("Config"))
        .collect();
    assert!(!todo.is_empty(), "{binary} builds no configuration");
    let (mut seen, mut vars) = (BTreeSet::new(), BTreeSet::new());
    while let Some(ty) = todo.pop() {
        if seen.insert(ty.clone()) {
            let (read, nested) = blocks.get(&ty).unwrap_or_else(|| panic!("no impl {ty} in config.rs"));
            vars.extend(read.iter().cloned());
            todo.extend(nested.iter().filter(|n| **n != ty).cloned());
        }
    }
    vars
}

#[test]
fn configuration_is_read_in_one_place() {
    for dir in ["shared/src", "functions"] {
        let mut stack = vec![actiongate_local::workspace_root().join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("shared/src/config.rs")
                // The functions' build script: cargo's variables, at build time.
                && !path.ends_with("functions/link.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(!text.contains("env::var"), "{} reads the environment; only config.rs may", path.display());
            }
        }
    }
    // Each constant's value is its name, so the names found in the code are the variables.
    let config = source("shared/src/config.rs");
    for name in names_after(&config, "pub const ") {
        if config.contains(&format!("pub const {name}: &str")) {
            assert!(config.contains(&format!("pub const {name}: &str = \"{name}\";")), "{name}");
        }
    }
}

#[test]
fn every_variable_a_function_reads_is_set_for_it_in_the_template_and_no_other() {
    let t = template();
    let binaries: BTreeSet<&str> = t.functions.iter().map(|f| f.binary.as_str()).collect();
    assert_eq!(binaries, BTreeSet::from(["approval", "executor", "intake", "mcp", "rollback", "sweep"]));
    for f in &t.functions {
        let set: BTreeSet<&str> = f.env.iter().map(|(k, _)| k.as_str()).collect();
        let reads = reads(&f.binary);
        for var in &reads {
            assert!(
                set.contains(var.as_str()) || vars::UNSET_IN_TEMPLATE.contains(&var.as_str()),
                "{} reads {var} but the template does not set it",
                f.binary
            );
        }
        for var in &set {
            assert!(
                *var == "RUST_LOG" || reads.contains(*var),
                "the template sets {var} for {}, which never reads it",
                f.binary
            );
        }
        // The crash-simulation switch exists only for the local tests.
        assert!(!set.contains(actiongate::config::ACTIONGATE_FAULT_INJECTION));
    }
    assert!(reads("executor").contains(vars::SCHEDULER_ROLE_ARN), "the derivation follows nested configs");
}

#[test]
fn the_tables_the_store_uses_exist_with_the_same_keys() {
    use actiongate::adapters::aws::dynamo::keys;
    let t = template();
    let actions = t.table("ActionsTable").unwrap();
    assert_eq!(actions.key, (keys::PK.to_owned(), Some(keys::SK.to_owned())));
    for (index, pk, sk) in [
        (keys::GSI_BY_USER, keys::GSI1_PK, keys::GSI1_SK),
        (keys::GSI_BY_USER_STATUS, keys::GSI2_PK, keys::GSI2_SK),
        (keys::GSI_DUE, keys::DUE_PK, keys::DUE_SK),
        (keys::GSI_BY_STATUS, keys::GSI4_PK, keys::GSI4_SK),
        (keys::GSI_BY_DAY, keys::GSI5_PK, keys::GSI5_SK),
    ] {
        let i = actions.indexes.iter().find(|i| i.name == index).unwrap_or_else(|| panic!("index {index} missing"));
        assert_eq!(i.key, (pk.to_owned(), Some(sk.to_owned())), "{index}");
    }
    // The intake function reads every index its routes list from (IAM, which the emulator does
    // not enforce: checked here).
    let template_text = source("infra/template.yaml");
    let intake_role =
        template_text.split("  IntakeRole:").nth(1).and_then(|r| r.split("\n  ApprovalLogs:").next()).unwrap_or("");
    let intake_role = intake_role.split("\n  ApprovalFunction:").next().unwrap_or(intake_role);
    for index in
        [keys::GSI_BY_USER, keys::GSI_BY_USER_STATUS, keys::GSI_BY_APPROVER, keys::GSI_BY_STATUS, keys::GSI_BY_DAY]
    {
        assert!(
            intake_role.contains(&format!("${{ActionsTable.Arn}}/index/{index}\"")),
            "IntakeRole may not query {index}"
        );
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
        [
            "actiongate ",
            "intake ",
            "approval ",
            "executor ",
            "sweep ",
            "rollback ",
            "mcp ",
            "actiongate-mcp ",
            "actiongate-local ",
        ]
        .iter()
        .any(|p| line.starts_with(p))
    };
    for binary in ["intake", "approval", "executor", "sweep", "rollback", "mcp"] {
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

/// The statements a function's role grants: its inline policies and the template's managed
/// policies it attaches (any other managed policy is refused).
fn role_statements(doc: &serde_yaml::Value, role: &str) -> Vec<serde_yaml::Value> {
    let resources = &doc["Resources"];
    let props = &resources[role]["Properties"];
    let mut documents: Vec<serde_yaml::Value> =
        props["Policies"].as_sequence().into_iter().flatten().map(|p| p["PolicyDocument"].clone()).collect();
    for arn in props["ManagedPolicyArns"].as_sequence().into_iter().flatten() {
        let serde_yaml::Value::Tagged(tagged) = arn else {
            panic!("{role} attaches a policy from outside the template: {arn:?}")
        };
        let name = tagged.value.as_str().unwrap();
        assert_eq!(resources[name]["Type"].as_str(), Some("AWS::IAM::ManagedPolicy"), "{role}: {name}");
        documents.push(resources[name]["Properties"]["PolicyDocument"].clone());
    }
    documents.iter().flat_map(|d| d["Statement"].as_sequence().cloned().unwrap_or_default()).collect()
}

fn strings(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::Sequence(s) => s.iter().flat_map(strings).collect(),
        serde_yaml::Value::String(s) => vec![s.clone()],
        other => vec![serde_yaml::to_string(other).unwrap()],
    }
}

fn template_doc() -> serde_yaml::Value {
    serde_yaml::from_str(&source("infra/template.yaml")).unwrap()
}

/// One role per function, granting only named actions on named resources: `*` resources only
/// for X-Ray (which has no resource-level permissions), wildcards only for the wait-step
/// schedules the executor names at run time, and nothing from outside the template.
#[test]
fn each_function_has_a_least_privilege_role_of_its_own() {
    let doc = template_doc();
    let t = template();
    let mut roles = BTreeSet::new();
    for f in &t.functions {
        let role = f.role.clone().unwrap_or_else(|| panic!("{} has no Role: !GetAtt <Role>.Arn", f.logical_id));
        assert!(roles.insert(role.clone()), "{role} is shared by two functions");
        assert!(
            doc["Resources"][&f.logical_id]["Properties"]["Policies"].is_null(),
            "{}: policies belong on its role",
            f.logical_id
        );
        let statements = role_statements(&doc, &role);
        assert!(!statements.is_empty());
        for s in statements {
            assert_eq!(s["Effect"].as_str(), Some("Allow"));
            let actions = strings(&s["Action"]);
            let resources = strings(&s["Resource"]);
            for action in &actions {
                assert!(!action.contains('*'), "{role}: wildcard action {action}");
            }
            for resource in &resources {
                if resource == "*" {
                    assert!(actions.iter().all(|a| a.starts_with("xray:")), "{role}: {actions:?} on every resource");
                } else if resource.trim_end().ends_with('*') {
                    let connector_secrets = actions == ["secretsmanager:GetSecretValue"]
                        && resource.trim_end().ends_with(":secret:actiongate/*");
                    assert!(
                        actions == ["scheduler:CreateSchedule"] || connector_secrets,
                        "{role}: wildcard resource {resource} for {actions:?}"
                    );
                }
            }
        }
    }
}

/// Audit events are never updated or deleted: no function's role allows it on the audit table.
#[test]
fn no_function_may_update_or_delete_audit_items() {
    let doc = template_doc();
    let mut checked = 0;
    for f in &template().functions {
        for statement in role_statements(&doc, f.role.as_deref().unwrap()) {
            if !serde_yaml::to_string(&statement["Resource"]).unwrap().contains("AuditTable") {
                continue;
            }
            checked += 1;
            for action in strings(&statement["Action"]) {
                assert!(
                    ["dynamodb:PutItem", "dynamodb:Query"].contains(&action.as_str()),
                    "{} may {action} on the audit table; audit items are append-only",
                    f.logical_id
                );
            }
        }
    }
    assert!(checked >= 5, "every function appends to the audit table");
}

/// `sam build` / `sam deploy` defaults: the template, the capability its roles need, and no
/// deployment-specific values (`sam deploy --guided` asks for those).
#[test]
fn samconfig_points_at_the_template_and_holds_nothing_deployment_specific() {
    let config: toml::Table = toml::from_str(&source("samconfig.toml")).unwrap();
    let command = |name: &str| config["default"][name]["parameters"].as_table().unwrap().clone();
    for name in ["build", "validate"] {
        let file = command(name)["template_file"].as_str().unwrap().to_owned();
        assert!(actiongate_local::workspace_root().join(&file).is_file(), "{name}: {file}");
    }
    assert_eq!(command("build")["beta_features"].as_bool(), Some(true), "rust-cargolambda is a beta build method");
    let deploy = command("deploy");
    assert!(deploy["capabilities"].as_str().unwrap().contains("CAPABILITY_IAM"), "the stack creates roles");
    let text = source("samconfig.toml");
    for secret_or_specific in ["parameter_overrides", "JwtIssuer", "profile", "region", "s3_bucket ="] {
        assert!(!text.contains(secret_or_specific), "samconfig.toml holds {secret_or_specific}");
    }
}

/// Every function is built by cargo lambda for arm64 and runs on the OS-only runtime, with a log
/// group of its own that has a retention.
#[test]
fn functions_are_arm64_cargo_lambda_builds_with_retained_logs() {
    let doc = template_doc();
    let globals = &doc["Globals"]["Function"];
    for f in &template().functions {
        let resource = &doc["Resources"][&f.logical_id];
        let setting = |name: &str| {
            let own = &resource["Properties"][name];
            if own.is_null() {
                globals[name].clone()
            } else {
                own.clone()
            }
        };
        assert_eq!(resource["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"), "{}", f.logical_id);
        assert_eq!(setting("Runtime").as_str(), Some("provided.al2023"), "{}", f.logical_id);
        assert_eq!(strings(&setting("Architectures")), ["arm64"], "{}", f.logical_id);
        let serde_yaml::Value::Tagged(group) = &resource["Properties"]["LoggingConfig"]["LogGroup"] else {
            panic!("{} has no log group of its own", f.logical_id)
        };
        let group = &doc["Resources"][group.value.as_str().unwrap()];
        assert!(!group["Properties"]["RetentionInDays"].is_null(), "{}: logs kept forever", f.logical_id);
    }
}

/// A panic in one message must stay in its task (the executor reports that message alone):
/// with `panic = "abort"` the whole process, and every batch-mate, would go down with it.
#[test]
fn release_builds_unwind_so_a_panicking_message_spares_its_batch_mates() {
    let manifest: toml::Table = toml::from_str(&source("Cargo.toml")).unwrap();
    let release = manifest["profile"]["release"].as_table().unwrap();
    assert_ne!(release.get("panic").and_then(|v| v.as_str()), Some("abort"));
}

/// Where the runtime reports no absolute deadline, a function takes its template `Timeout` as
/// the invocation's length: the two must agree.
#[test]
fn deadline_fallbacks_are_the_template_timeouts() {
    let doc = template_doc();
    for (function, logical_id) in
        [("executor", "ExecutorFunction"), ("sweep", "SweepFunction"), ("rollback", "RollbackFunction")]
    {
        let timeout = doc["Resources"][logical_id]["Properties"]["Timeout"].as_u64().unwrap();
        let main = source(&format!("functions/{function}/src/main.rs"));
        assert!(
            main.contains(&format!("chrono::Duration::seconds({timeout})")),
            "functions/{function}: the deadline fallback is not the template's {timeout} s"
        );
    }
}

/// The modules a source file names through `crate::` (its imports and paths), other than
/// those under `allowed`.
fn crate_paths_outside(text: &str, allowed: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .filter_map(|(i, _)| {
            let rest = &text[i + "crate::".len()..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..end];
            (name != allowed).then(|| if name.is_empty() { rest.chars().take(12).collect() } else { name.to_owned() })
        })
        .collect()
}

/// The layering's first rule: the domain (pure types and rules) imports nothing above it —
/// no store, queue, mail, HTTP, service or handler — so it is tested without any I/O.
#[test]
fn the_domain_imports_nothing_above_it() {
    let dir = actiongate_local::workspace_root().join("shared/src/domain");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 9, "the domain modules are there: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let outside = crate_paths_outside(&text, "domain");
        assert!(outside.is_empty(), "{} imports {outside:?} from above the domain", file.display());
    }
    // The check itself finds an import pointing the wrong way (as a cycle added back would).
    let upward = "use crate::domain::Action;\nuse crate::store::Store;\nfn f() { crate::{api}; }";
    assert_eq!(crate_paths_outside(upward, "domain"), BTreeSet::from(["store".to_owned(), "{api}; }".to_owned()]));
}

/// `examples/monetization.toml` is a valid policy with the auto-execution spec's tier table.
#[test]
fn the_monetization_example_is_a_valid_policy_with_the_spec_s_tiers() {
    let policy = actiongate::policy::Policy::parse_toml(&source("examples/monetization.toml")).expect("it parses");
    let tier = |t: &str| policy.types.get(t).and_then(|r| r.tier).map(|t| t as u8);
    for (types, expected) in [
        (
            &[
                "ADD_AFFILIATE_LINK",
                "UPDATE_META_DESCRIPTION",
                "ADD_TO_COLLECTION",
                "GENERATE_INTERNAL_LINK_SUGGESTIONS",
            ][..],
            1,
        ),
        (&["EXPAND_CONTENT", "ADD_AD_SLOT", "CREATE_COLLECTION_PAGE"][..], 2),
        (&["REMOVE_CONTENT", "CHANGE_URL", "MODIFY_USER_DATA", "EXTERNAL_API_CALL", "CHANGE_PRICING"][..], 3),
    ] {
        for t in types {
            assert_eq!(tier(t), Some(expected), "{t}");
            let rule = &policy.types[*t];
            assert_eq!(rule.connector.is_some(), expected < 3, "{t}: tiers 1 and 2 run through the connector");
        }
    }
    let custom = policy.custom_types().unwrap();
    let ok = serde_json::json!({"page": "/best-pens", "url": "https://shop.example.com/pen"});
    assert_eq!(custom.check("ADD_AFFILIATE_LINK", &ok, "payload"), Some(Ok(())));
    let bad = serde_json::json!({"page": "/best-pens", "url": "http://shop.example.com/pen"});
    assert_eq!(custom.check("ADD_AFFILIATE_LINK", &bad, "payload").unwrap().unwrap_err().field, "payload.url");
}

/// The OpenAPI document (`openapi/openapi.json`) names exactly the routes the template
/// serves, method by method, and is a valid OpenAPI 3.1 document (`openapi-spec-validator`).
#[test]
fn the_openapi_document_covers_every_route_and_no_other() {
    let doc = actiongate_local::openapi::document();
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    let t = template();
    let mut served: BTreeSet<(String, String)> = BTreeSet::new();
    for f in &t.functions {
        for r in &f.routes {
            if r.method == "ANY" {
                // An ANY route is documented by the methods its function answers.
                assert!(documented.iter().any(|(_, p)| *p == r.path), "{} (ANY) is served but not documented", r.path);
                served.extend(documented.iter().filter(|(_, p)| *p == r.path).cloned());
            } else {
                served.insert((r.method.clone(), r.path.clone()));
            }
        }
    }
    // The MCP endpoint speaks JSON-RPC (the MCP specification describes it), not REST.
    served.retain(|(_, p)| p != "/mcp");
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
    let validator = actiongate_local::workspace_root().join(".venv/bin/openapi-spec-validator");
    if validator.exists() {
        let out = std::process::Command::new(validator)
            .arg(actiongate_local::workspace_root().join("openapi/openapi.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        panic!("openapi-spec-validator is not installed: run make setup (requirements-dev.txt pins it)");
    }
}

/// The console's development sign-in exists only in the local stack: the template fixes the
/// console to OpenID Connect with a literal no parameter can change, and only the local stack's
/// own overrides say `dev` (whose identities only the local gateway accepts anyway).
#[test]
fn the_deployed_console_signs_in_through_the_identity_provider_only() {
    use actiongate_local::template::EnvValue;
    let t = template();
    let setters: Vec<(&str, &EnvValue)> = t
        .functions
        .iter()
        .flat_map(|f| f.env.iter().filter(|(k, _)| k == "CONSOLE_SIGN_IN").map(move |(_, v)| (f.binary.as_str(), v)))
        .collect();
    assert_eq!(setters, vec![("approval", &EnvValue::Literal("oidc".into()))]);
    let template_text = source("infra/template.yaml");
    assert_eq!(template_text.matches("CONSOLE_SIGN_IN").count(), 1, "set once, as a literal");
    assert!(!template_text.contains("sign_in: dev") && !template_text.contains("CONSOLE_SIGN_IN: dev"));
}
