//! `smsctl topics create|check` against the real local Kafka.

use std::time::{Duration, Instant};

use sms_core::kafka::{create_topics, KafkaSettings, TopicSpec};

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
    let problems = settled(&kafka, &specs, |p| {
        p.len() == 2 && p.iter().any(|p| p.contains("partitions"))
    })
    .await;
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
    let expected = vec![format!("{} has 2 partitions, expected 3", specs[0].name)];
    let problems = settled(&kafka, &specs, |p| p == expected.as_slice()).await;
    assert_eq!(problems, expected);
}

/// Checks until `done` holds or 15 s have passed, and returns the last
/// answer: new topics reach the brokers' metadata shortly after creation.
async fn settled(
    kafka: &KafkaSettings,
    specs: &[TopicSpec],
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let problems = smsctl::topics::check(kafka, specs)
            .await
            .expect("check runs");
        if done(&problems) || Instant::now() > deadline {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
