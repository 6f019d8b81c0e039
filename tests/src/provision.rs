//! Creates in the emulator exactly the tables, queues, SES identities and configuration sets
//! and schedule groups the SAM template declares (`tests/tests/provisioning.rs` checks it), and
//! resolves each function's environment (`!Ref`, `!GetAtt`) to the local resources.

use crate::template::{EnvValue, FunctionSpec, TableSpec, Template};
use anyhow::{anyhow, Context, Result};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::BTreeMap;

/// Local names of what was created: logical id → table name, logical id → (url, arn).
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// Template parameters at their defaults.
    pub parameters: BTreeMap<String, String>,
    pub email_identities: Vec<String>,
    /// Schedule group logical id → name.
    pub schedule_groups: BTreeMap<String, String>,
    /// Role logical id → ARN.
    pub roles: BTreeMap<String, String>,
    /// SES configuration set logical id → name.
    pub configuration_sets: BTreeMap<String, String>,
    pub tables: BTreeMap<String, String>,
    pub queues: BTreeMap<String, (String, String)>,
    /// Secret logical id → its name (`actiongate/local/<id>`), holding a random value.
    pub secrets: BTreeMap<String, String>,
}

impl Provisioned {
    pub fn table(&self, logical_id: &str) -> Result<&str> {
        self.tables.get(logical_id).map(String::as_str).ok_or_else(|| anyhow!("no table {logical_id}"))
    }

    pub fn queue_url(&self, logical_id: &str) -> Result<&str> {
        self.queues.get(logical_id).map(|(url, _)| url.as_str()).ok_or_else(|| anyhow!("no queue {logical_id}"))
    }
}

pub async fn provision(template: &Template, sdk: &SdkConfig) -> Result<Provisioned> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let ses = aws_sdk_sesv2::Client::new(sdk);
    let mut out = Provisioned {
        parameters: template.parameters.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect(),
        ..Default::default()
    };
    let scheduler = aws_sdk_scheduler::Client::new(sdk);
    for group in &template.schedule_groups {
        scheduler.create_schedule_group().name(group).send().await.map_err(|e| {
            anyhow!("creating schedule group {group}: {}", aws_sdk_scheduler::error::DisplayErrorContext(e))
        })?;
        out.schedule_groups.insert(group.clone(), group.clone());
    }
    for role in &template.roles {
        // moto does not check IAM; the ARN only has to be well formed.
        out.roles.insert(role.clone(), format!("arn:aws:iam::123456789012:role/{role}"));
    }
    for identity in &template.email_identities {
        ses.create_email_identity().email_identity(identity).send().await.map_err(|e| {
            anyhow!("creating SES identity {identity}: {}", aws_sdk_sesv2::error::DisplayErrorContext(e))
        })?;
        out.email_identities.push(identity.clone());
    }
    for set in &template.configuration_sets {
        ses.create_configuration_set().configuration_set_name(set).send().await.map_err(|e| {
            anyhow!("creating SES configuration set {set}: {}", aws_sdk_sesv2::error::DisplayErrorContext(e))
        })?;
        out.configuration_sets.insert(set.clone(), set.clone());
    }
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    for id in &template.secrets {
        let name = format!("actiongate/local/{id}");
        // An approval token's 256 random bits make a good key too.
        let value = actiongate::domain::token::ApprovalToken::generate().as_str().to_owned();
        secrets.create_secret().name(&name).secret_string(value).send().await.map_err(|e| {
            anyhow!("creating secret {name}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e))
        })?;
        out.secrets.insert(id.clone(), name);
    }
    for table in &template.tables {
        create_table(&ddb, table).await.with_context(|| format!("creating table {}", table.logical_id))?;
        out.tables.insert(table.logical_id.clone(), table.logical_id.clone());
    }
    // Dead-letter queues first, so redrive policies can name them.
    let mut queues = template.queues.clone();
    queues.sort_by_key(|q| q.redrive.is_some());
    for queue in &queues {
        let mut req = sqs.create_queue().queue_name(&queue.logical_id);
        if let Some(v) = queue.visibility_timeout {
            req = req.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
        }
        if let Some((dlq, max)) = &queue.redrive {
            let (_, arn) = out
                .queues
                .get(dlq)
                .ok_or_else(|| anyhow!("{}: dead-letter queue {dlq} not declared", queue.logical_id))?;
            let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max.to_string()});
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let created =
            req.send().await.map_err(|e| anyhow!("creating queue {}: {}", queue.logical_id, DisplayErrorContext(e)))?;
        let url = created.queue_url.ok_or_else(|| anyhow!("no url for {}", queue.logical_id))?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| anyhow!("reading queue {}: {}", queue.logical_id, DisplayErrorContext(e)))?;
        let arn = attrs
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| anyhow!("no arn for {}", queue.logical_id))?;
        out.queues.insert(queue.logical_id.clone(), (url, arn));
    }
    Ok(out)
}

pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, spec: &TableSpec) -> Result<()> {
    let key = |(hash, range): &(String, Option<String>)| -> Result<Vec<KeySchemaElement>> {
        let mut k = vec![KeySchemaElement::builder().attribute_name(hash).key_type(KeyType::Hash).build()?];
        if let Some(r) = range {
            k.push(KeySchemaElement::builder().attribute_name(r).key_type(KeyType::Range).build()?);
        }
        Ok(k)
    };
    let mut req = ddb
        .create_table()
        .table_name(&spec.logical_id)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key(&spec.key)?));
    for (name, kind) in &spec.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for index in &spec.indexes {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key(&index.key)?))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()?,
        );
    }
    req.send().await.map_err(|e| anyhow!("{}", DisplayErrorContext(e)))?;
    if let Some(ttl) = &spec.ttl_attribute {
        ddb.update_time_to_live()
            .table_name(&spec.logical_id)
            .time_to_live_specification(TimeToLiveSpecification::builder().attribute_name(ttl).enabled(true).build()?)
            .send()
            .await
            .map_err(|e| anyhow!("{}", DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// The environment the template gives `function`, resolved against the local resources.
/// `overrides` supply what only a deployment can resolve (such as the API's public URL).
pub fn resolve_env(
    function: &FunctionSpec,
    provisioned: &Provisioned,
    overrides: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    function
        .env
        .iter()
        .map(|(name, value)| {
            if let Some((_, v)) = overrides.iter().find(|(k, _)| k == name) {
                return Ok((name.clone(), v.clone()));
            }
            let resolved = match value {
                EnvValue::Literal(s) => s.clone(),
                EnvValue::Deployed(expr) => {
                    return Err(anyhow!(
                        "{}: {name} = {expr} has no local value; the local stack must set it",
                        function.logical_id
                    ))
                }
                EnvValue::Ref(id) => match (provisioned.tables.get(id), provisioned.queues.get(id)) {
                    (Some(table), _) => table.clone(),
                    (_, Some((url, _))) => url.clone(),
                    _ if provisioned.parameters.contains_key(id) => provisioned.parameters[id].clone(),
                    _ if provisioned.schedule_groups.contains_key(id) => provisioned.schedule_groups[id].clone(),
                    _ if provisioned.configuration_sets.contains_key(id) => provisioned.configuration_sets[id].clone(),
                    _ if provisioned.secrets.contains_key(id) => provisioned.secrets[id].clone(),
                    _ => return Err(anyhow!("{}: {name} refers to unknown resource {id}", function.logical_id)),
                },
                EnvValue::GetAtt(id, attr) => match (provisioned.queues.get(id), attr.as_str()) {
                    (Some((_, arn)), "Arn") => arn.clone(),
                    (None, "Arn") if provisioned.roles.contains_key(id) => provisioned.roles[id].clone(),
                    (Some((url, _)), "QueueUrl") => url.clone(),
                    (_, "Arn") if provisioned.tables.contains_key(id) => {
                        format!("arn:aws:dynamodb:us-east-1:123456789012:table/{id}")
                    }
                    _ => return Err(anyhow!("{}: {name} uses unsupported !GetAtt {id}.{attr}", function.logical_id)),
                },
            };
            Ok((name.clone(), resolved))
        })
        .collect()
}
