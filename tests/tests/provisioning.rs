//! The local stack provisions exactly what the template declares: every resource of the
//! template is either created in the emulator (and the emulator holds nothing else) or played
//! by a named part of the local stack; a resource type nobody placed fails this test.

use actiongate_local::emulator::sdk_config_for;
use actiongate_local::stack::shared_emulator;
use actiongate_local::template::Template;
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::BTreeSet;

/// Created in the emulator by `provision`.
const EMULATED: &[&str] = &[
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::SES::EmailIdentity",
    "AWS::SES::ConfigurationSet",
    "AWS::Scheduler::ScheduleGroup",
    "AWS::SecretsManager::Secret",
];

/// Played by the local stack itself, with what plays it.
const PLAYED_LOCALLY: &[(&str, &str)] = &[
    ("AWS::Serverless::Function", "cargo lambda watch, with the template's environment"),
    ("AWS::Serverless::HttpApi", "the gateway, with the template's routes and the JWT authorizer's part"),
    ("AWS::Logs::LogGroup", ".local/functions-<port>.log"),
    ("AWS::IAM::Role", "ARNs only: the emulator does not enforce IAM (the consistency tests check the policies)"),
    ("AWS::IAM::ManagedPolicy", "as for roles"),
];

/// Deployed only: there are no metrics or deliveries to watch locally.
const DEPLOYED_ONLY: &[(&str, &str)] = &[
    ("AWS::CloudWatch::Alarm", "no CloudWatch metrics locally"),
    ("AWS::SNS::Topic", "alarm notifications"),
    ("AWS::SES::ConfigurationSetEventDestination", "SES delivery events"),
];

fn template() -> Template {
    Template::load(&actiongate_local::workspace_root().join("infra/template.yaml")).unwrap()
}

fn set<T: Into<String>>(items: impl IntoIterator<Item = T>) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

#[test]
fn every_resource_type_of_the_template_has_a_local_counterpart_or_a_reason() {
    let known: BTreeSet<&str> = EMULATED
        .iter()
        .copied()
        .chain(PLAYED_LOCALLY.iter().map(|(t, _)| *t))
        .chain(DEPLOYED_ONLY.iter().map(|(t, _)| *t))
        .collect();
    for (id, kind) in &template().resources {
        assert!(known.contains(kind.as_str()), "{id}: the local stack does not know what to do with {kind}");
    }
}

#[tokio::test]
async fn the_emulator_holds_exactly_the_template_resources() {
    let t = template();
    let (endpoint, provisioned) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;

    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(set(tables.table_names().iter().cloned()), set(t.tables.iter().map(|t| t.logical_id.clone())));
    for spec in &t.tables {
        let table = ddb.describe_table().table_name(&spec.logical_id).send().await.unwrap().table.unwrap();
        let key: Vec<String> = table.key_schema().iter().map(|k| k.attribute_name().to_owned()).collect();
        let mut want = vec![spec.key.0.clone()];
        want.extend(spec.key.1.clone());
        assert_eq!(key, want, "{} key", spec.logical_id);
        let indexes = set(table.global_secondary_indexes().iter().filter_map(|i| i.index_name().map(str::to_owned)));
        assert_eq!(indexes, set(spec.indexes.iter().map(|i| i.name.clone())), "{} indexes", spec.logical_id);
        let ttl = ddb.describe_time_to_live().table_name(&spec.logical_id).send().await.unwrap();
        let ttl = ttl.time_to_live_description().and_then(|d| d.attribute_name()).map(str::to_owned);
        assert_eq!(ttl, spec.ttl_attribute, "{} TTL", spec.logical_id);
    }

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let urls = sqs.list_queues().send().await.unwrap().queue_urls.unwrap_or_default();
    let names = set(urls.iter().map(|u| u.rsplit('/').next().unwrap().to_owned()));
    assert_eq!(names, set(t.queues.iter().map(|q| q.logical_id.clone())));
    for spec in &t.queues {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(provisioned.queue_url(&spec.logical_id).unwrap())
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        if let Some(v) = spec.visibility_timeout {
            assert_eq!(attrs.get(&QueueAttributeName::VisibilityTimeout), Some(&v.to_string()), "{}", spec.logical_id);
        }
        let redrive = attrs.get(&QueueAttributeName::RedrivePolicy).map(|p| {
            let p: serde_json::Value = serde_json::from_str(p).unwrap();
            let dlq = p["deadLetterTargetArn"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
            let max = p["maxReceiveCount"].as_i64().or_else(|| p["maxReceiveCount"].as_str()?.parse().ok()).unwrap();
            (dlq, max)
        });
        assert_eq!(redrive, spec.redrive, "{} redrive", spec.logical_id);
    }

    let ses = aws_sdk_sesv2::Client::new(&sdk);
    let identities = ses.list_email_identities().send().await.unwrap();
    let identities = set(identities.email_identities().iter().filter_map(|i| i.identity_name().map(str::to_owned)));
    assert_eq!(identities, set(t.email_identities.iter().cloned()));
    let configuration_sets = ses.list_configuration_sets().send().await.unwrap();
    assert_eq!(set(configuration_sets.configuration_sets().iter().cloned()), set(t.configuration_sets.iter().cloned()));

    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let groups = scheduler.list_schedule_groups().send().await.unwrap();
    let groups =
        set(groups.schedule_groups().iter().filter_map(|g| g.name().map(str::to_owned)).filter(|n| n != "default"));
    assert_eq!(groups, set(t.schedule_groups.iter().cloned()));

    let secrets = aws_sdk_secretsmanager::Client::new(&sdk).list_secrets().send().await.unwrap();
    let secrets = set(secrets.secret_list().iter().filter_map(|s| s.name().map(str::to_owned)));
    assert_eq!(secrets, set(t.secrets.iter().map(|id| format!("actiongate/local/{id}"))));

    // What the local stack plays instead: every function binary and route comes from the template.
    assert_eq!(
        set(t.functions.iter().map(|f| f.binary.clone())),
        set(["approval", "executor", "intake", "mcp", "rollback", "sweep"])
    );
    assert!(t.functions.iter().all(|f| provisioned.roles.contains_key(f.role.as_deref().unwrap())));
}
