//! Reads `infra/template.yaml`: the tables, queues, functions, environment variables and
//! HTTP routes it declares. The local stack provisions and routes from this, so the template
//! stays the single source of truth.

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Parameter name → default value.
    pub parameters: Vec<(String, Option<String>)>,
    /// SES email identities (the sender), resolved from parameter defaults.
    pub email_identities: Vec<String>,
    /// EventBridge Scheduler groups (logical ids).
    pub schedule_groups: Vec<String>,
    /// IAM roles (logical ids).
    pub roles: Vec<String>,
    /// SES configuration sets (logical ids).
    pub configuration_sets: Vec<String>,
    /// Secrets Manager secrets (logical ids); each gets a random value locally.
    pub secrets: Vec<String>,
    /// Every resource: (logical id, type).
    pub resources: Vec<(String, String)>,
    pub tables: Vec<TableSpec>,
    pub queues: Vec<QueueSpec>,
    pub functions: Vec<FunctionSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub logical_id: String,
    /// (name, type) of every declared attribute.
    pub attributes: Vec<(String, String)>,
    /// (hash, optional range).
    pub key: (String, Option<String>),
    pub indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    pub key: (String, Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub visibility_timeout: Option<i64>,
    /// (dead-letter queue logical id, maxReceiveCount).
    pub redrive: Option<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    pub env: Vec<(String, EnvValue)>,
    pub routes: Vec<Route>,
    /// Queues (logical ids) whose messages an event source mapping delivers to it.
    pub sqs_sources: Vec<String>,
    /// Inputs of the EventBridge Scheduler schedules (`ScheduleV2`) that invoke it.
    pub schedule_inputs: Vec<String>,
    /// Its execution role (logical id), from `Role: !GetAtt <Role>.Arn`.
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Literal(String),
    Ref(String),
    GetAtt(String, String),
    /// An intrinsic only CloudFormation can resolve (`!If`, `!Sub` of the API's URL, …); the
    /// local stack must set the variable itself.
    Deployed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub method: String,
    /// `/actions/{id}` style.
    pub path: String,
    /// Declared with `Auth: { Authorizer: NONE }`: no JWT needed.
    pub public: bool,
}

impl Route {
    /// Matches a concrete path, returning the path parameters.
    pub fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if self.method != "ANY" && !self.method.eq_ignore_ascii_case(method) {
            return None;
        }
        let pattern: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let actual: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if pattern.len() != actual.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, a) in pattern.iter().zip(&actual) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                params.push((name.to_owned(), (*a).to_owned()));
            } else if p != a {
                return None;
            }
        }
        Some(params)
    }
}

impl Template {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let doc: Value = serde_yaml::from_str(text).context("parsing the SAM template")?;
        let resources =
            doc.get("Resources").and_then(Value::as_mapping).ok_or_else(|| anyhow!("template has no Resources"))?;
        let globals_env = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .map(parse_env)
            .transpose()?
            .unwrap_or_default();
        let parameters: Vec<(String, Option<String>)> = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let default = v.get("Default").and_then(|d| match d {
                            Value::String(s) => Some(s.clone()),
                            Value::Number(n) => Some(n.to_string()),
                            _ => None,
                        });
                        Some((k.as_str()?.to_owned(), default))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut template = Template {
            parameters,
            email_identities: vec![],
            schedule_groups: vec![],
            roles: vec![],
            configuration_sets: vec![],
            secrets: vec![],
            resources: vec![],
            tables: vec![],
            queues: vec![],
            functions: vec![],
        };
        for (id, resource) in resources {
            let id = id.as_str().ok_or_else(|| anyhow!("resource id is not a string"))?.to_owned();
            let kind = resource.get("Type").and_then(Value::as_str).unwrap_or_default();
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            template.resources.push((id.clone(), kind.to_owned()));
            match kind {
                "AWS::DynamoDB::Table" => template.tables.push(parse_table(&id, &props)?),
                "AWS::SQS::Queue" => template.queues.push(parse_queue(&id, &props)?),
                "AWS::Scheduler::ScheduleGroup" => template.schedule_groups.push(id.clone()),
                "AWS::IAM::Role" => template.roles.push(id.clone()),
                "AWS::SES::ConfigurationSet" => template.configuration_sets.push(id.clone()),
                "AWS::SecretsManager::Secret" => template.secrets.push(id.clone()),
                "AWS::SES::EmailIdentity" => {
                    let identity = match props.get("EmailIdentity") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Tagged(t)) if t.tag == "Ref" => {
                            let name = t.value.as_str().unwrap_or_default();
                            template
                                .parameter_default(name)
                                .ok_or_else(|| anyhow!("{id}: parameter {name} needs a Default for the local stack"))?
                        }
                        _ => bail!("{id}: EmailIdentity must be a string or !Ref to a parameter"),
                    };
                    template.email_identities.push(identity);
                }
                "AWS::Serverless::Function" => {
                    let binary = resource
                        .get("Metadata")
                        .and_then(|m| m.get("BuildProperties"))
                        .and_then(|b| b.get("Binary"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("{id}: Metadata.BuildProperties.Binary is required"))?
                        .to_owned();
                    let mut env = globals_env.clone();
                    if let Some(vars) = props.get("Environment").and_then(|e| e.get("Variables")) {
                        for (k, v) in parse_env(vars)? {
                            env.retain(|(name, _)| name != &k);
                            env.push((k, v));
                        }
                    }
                    let mut routes = Vec::new();
                    let mut sqs_sources = Vec::new();
                    let mut schedule_inputs = Vec::new();
                    if let Some(events) = props.get("Events").and_then(Value::as_mapping) {
                        for (_, event) in events {
                            if event.get("Type").and_then(Value::as_str) == Some("SQS") {
                                let queue = match event.get("Properties").and_then(|p| p.get("Queue")) {
                                    Some(Value::Tagged(t)) if t.tag == "GetAtt" => {
                                        t.value.as_str().and_then(|s| s.strip_suffix(".Arn")).map(str::to_owned)
                                    }
                                    _ => None,
                                };
                                sqs_sources.push(
                                    queue
                                        .ok_or_else(|| anyhow!("{id}: SQS event Queue must be !GetAtt <Queue>.Arn"))?,
                                );
                                continue;
                            }
                            if event.get("Type").and_then(Value::as_str) == Some("ScheduleV2") {
                                let input = event
                                    .get("Properties")
                                    .and_then(|p| p.get("Input"))
                                    .and_then(Value::as_str)
                                    .unwrap_or("{}");
                                schedule_inputs.push(input.to_owned());
                                continue;
                            }
                            if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                                continue;
                            }
                            let p = event
                                .get("Properties")
                                .ok_or_else(|| anyhow!("{id}: HttpApi event without Properties"))?;
                            let path = p
                                .get("Path")
                                .and_then(Value::as_str)
                                .ok_or_else(|| anyhow!("{id}: route without Path"))?;
                            let method = p
                                .get("Method")
                                .and_then(Value::as_str)
                                .ok_or_else(|| anyhow!("{id}: route without Method"))?;
                            let public =
                                p.get("Auth").and_then(|a| a.get("Authorizer")).and_then(Value::as_str) == Some("NONE");
                            routes.push(Route { method: method.to_ascii_uppercase(), path: path.to_owned(), public });
                        }
                    }
                    template.functions.push(FunctionSpec {
                        logical_id: id,
                        binary,
                        env,
                        routes,
                        sqs_sources,
                        schedule_inputs,
                        role: match props.get("Role") {
                            Some(Value::Tagged(t)) if t.tag == "GetAtt" => {
                                t.value.as_str().and_then(|s| s.strip_suffix(".Arn")).map(str::to_owned)
                            }
                            _ => None,
                        },
                    });
                }
                _ => {}
            }
        }
        Ok(template)
    }

    pub fn parameter_default(&self, name: &str) -> Option<String> {
        self.parameters.iter().find(|(n, _)| n == name).and_then(|(_, d)| d.clone())
    }

    pub fn table(&self, logical_id: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    pub fn function_by_binary(&self, binary: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.binary == binary)
    }
}

fn parse_env(vars: &Value) -> Result<Vec<(String, EnvValue)>> {
    let map = vars.as_mapping().ok_or_else(|| anyhow!("Environment.Variables is not a mapping"))?;
    map.iter()
        .map(|(k, v)| {
            let name = k.as_str().ok_or_else(|| anyhow!("env var name is not a string"))?.to_owned();
            Ok((name, parse_env_value(v)?))
        })
        .collect()
}

fn parse_env_value(v: &Value) -> Result<EnvValue> {
    match v {
        Value::String(s) => Ok(EnvValue::Literal(s.clone())),
        Value::Number(n) => Ok(EnvValue::Literal(n.to_string())),
        Value::Bool(b) => Ok(EnvValue::Literal(b.to_string())),
        Value::Tagged(tagged) => {
            let deployed = || {
                let arg = serde_yaml::to_string(&tagged.value).unwrap_or_default();
                EnvValue::Deployed(format!("!{} {}", tagged.tag.to_string().trim_start_matches('!'), arg.trim()))
            };
            match tagged.value.as_str() {
                Some(arg) if tagged.tag == "Ref" => Ok(EnvValue::Ref(arg.to_owned())),
                Some(arg) if tagged.tag == "GetAtt" => {
                    let (res, attr) = arg.split_once('.').ok_or_else(|| anyhow!("!GetAtt {arg} has no attribute"))?;
                    Ok(EnvValue::GetAtt(res.to_owned(), attr.to_owned()))
                }
                // `!If`, `!Sub` and friends: only a deployment can resolve them.
                _ => Ok(deployed()),
            }
        }
        other => bail!("unsupported environment value {other:?}"),
    }
}

fn key_schema(v: Option<&Value>, what: &str) -> Result<(String, Option<String>)> {
    let items = v.and_then(Value::as_sequence).ok_or_else(|| anyhow!("{what}: KeySchema missing"))?;
    let mut hash = None;
    let mut range = None;
    for item in items {
        let name =
            item.get("AttributeName").and_then(Value::as_str).ok_or_else(|| anyhow!("{what}: key without name"))?;
        match item.get("KeyType").and_then(Value::as_str) {
            Some("HASH") => hash = Some(name.to_owned()),
            Some("RANGE") => range = Some(name.to_owned()),
            other => bail!("{what}: unknown KeyType {other:?}"),
        }
    }
    Ok((hash.ok_or_else(|| anyhow!("{what}: no HASH key"))?, range))
}

fn parse_table(id: &str, props: &Value) -> Result<TableSpec> {
    let attributes = props
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow!("{id}: AttributeDefinitions missing"))?
        .iter()
        .map(|a| {
            let name = a.get("AttributeName").and_then(Value::as_str);
            let kind = a.get("AttributeType").and_then(Value::as_str);
            match (name, kind) {
                (Some(n), Some(k)) => Ok((n.to_owned(), k.to_owned())),
                _ => Err(anyhow!("{id}: malformed attribute definition")),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let key = key_schema(props.get("KeySchema"), id)?;
    let indexes = props
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .map(|gsis| {
            gsis.iter()
                .map(|g| {
                    let name = g
                        .get("IndexName")
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("{id}: index without name"))?;
                    Ok(IndexSpec { name: name.to_owned(), key: key_schema(g.get("KeySchema"), name)? })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let ttl_attribute = props
        .get("TimeToLiveSpecification")
        .filter(|t| t.get("Enabled").and_then(Value::as_bool) == Some(true))
        .and_then(|t| t.get("AttributeName"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(TableSpec { logical_id: id.to_owned(), attributes, key, indexes, ttl_attribute })
}

fn parse_queue(id: &str, props: &Value) -> Result<QueueSpec> {
    let visibility_timeout = props.get("VisibilityTimeout").and_then(Value::as_i64);
    let redrive = match props.get("RedrivePolicy") {
        None => None,
        Some(r) => {
            let target = match r.get("deadLetterTargetArn") {
                Some(Value::Tagged(t)) if t.tag == "GetAtt" => {
                    t.value.as_str().and_then(|s| s.strip_suffix(".Arn")).map(str::to_owned)
                }
                _ => None,
            }
            .ok_or_else(|| anyhow!("{id}: deadLetterTargetArn must be !GetAtt <Queue>.Arn"))?;
            let max = r
                .get("maxReceiveCount")
                .and_then(Value::as_i64)
                .ok_or_else(|| anyhow!("{id}: maxReceiveCount missing"))?;
            Some((target, max))
        }
    };
    Ok(QueueSpec { logical_id: id.to_owned(), visibility_timeout, redrive })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_matching_binds_parameters() {
        let r = Route { method: "GET".into(), path: "/actions/{id}/audit".into(), public: false };
        assert_eq!(r.matches("GET", "/actions/abc/audit"), Some(vec![("id".into(), "abc".into())]));
        assert_eq!(r.matches("POST", "/actions/abc/audit"), None);
        assert_eq!(r.matches("GET", "/actions/abc"), None);
        let any = Route { method: "ANY".into(), path: "/x".into(), public: true };
        assert!(any.matches("DELETE", "/x").is_some());
    }

    #[test]
    fn reads_the_project_template() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
        let t = Template::load(&path).unwrap();
        let actions = t.table("ActionsTable").unwrap();
        assert_eq!(actions.key, ("pk".into(), Some("sk".into())));
        assert_eq!(actions.ttl_attribute.as_deref(), Some("ttl"));
        assert!(actions.indexes.iter().any(|i| i.name == "by_user"));
        let intake = t.function_by_binary("intake").unwrap();
        assert!(intake.env.iter().any(|(k, v)| k == "ACTIONS_TABLE" && *v == EnvValue::Ref("ActionsTable".into())));
        assert!(intake.routes.iter().any(|r| r.method == "POST" && r.path == "/actions"));
        let work = t.queues.iter().find(|q| q.logical_id == "WorkQueue").unwrap();
        assert_eq!(work.redrive, Some(("WorkDeadLetterQueue".into(), 5)));
    }
}
