//! `smsctl topics create|check` against the real local Kafka.

use sms_core::kafka::{create_topics, KafkaSettings};

#[tokio::test]
async fn create_then_check_finds_no_mismatch_and_check_reports_a_missing_topic() {
    let services = sms_harness::services().await.expect("services");
    let mut kafka = KafkaSettings::new(services.kafka_bootstrap.clone());
    kafka.topic_prefix = format!("{}.", sms_harness::unique_name("smsctl_topics"));
    let specs = kafka.topics().specs(3);

    // Before creation every topic is reported missing.
    let problems = smsctl::topics::check(&kafka, &specs)
        .await
        .expect("check runs");
    assert_eq!(problems.len(), specs.len(), "{problems:?}");
    assert!(problems.iter().all(|p| p.contains("does not exist")));

    // Create all but the dead-letter topic, with the wrong partition count for one.
    let admin = kafka.admin().expect("admin");
    let mut partial: Vec<_> = specs
        .iter()
        .filter(|s| s.name != kafka.topics().dlq)
        .cloned()
        .collect();
    partial[0].partitions = 2;
    create_topics(&admin, &partial, 1).await.expect("creates");
    let problems = smsctl::topics::check(&kafka, &specs)
        .await
        .expect("check runs");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.contains(&kafka.topics().dlq) && p.contains("does not exist")));
    assert!(problems
        .iter()
        .any(|p| p.contains("has 2 partitions, expected 3")));

    // Creating again adds only what is missing and is otherwise a no-op.
    let created = create_topics(&admin, &specs, 1).await.expect("creates");
    assert_eq!(created, vec![kafka.topics().dlq.clone()]);
    let problems = smsctl::topics::check(&kafka, &specs)
        .await
        .expect("check runs");
    assert_eq!(
        problems,
        vec![format!("{} has 2 partitions, expected 3", specs[0].name)]
    );
}
