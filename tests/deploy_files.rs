//! Every configuration file under `deploy/config/` is one its service accepts,
//! and the compose file parses: what `make run` and operators start from
//! cannot rot unnoticed.

use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn every_service_accepts_its_example_configuration() {
    let status = status::config::Config::load(Some(&deploy("config/status.toml")), no_env())
        .expect("status.toml");
    assert_eq!(status.receiver.listen.port(), 8802);
    let ingest =
        ingest::Config::load(Some(&deploy("config/ingest.toml")), no_env()).expect("ingest.toml");
    assert_eq!(ingest.clients.len(), 1);
    let dispatcher =
        dispatcher::config::Config::load(Some(&deploy("config/dispatcher.toml")), no_env())
            .expect("dispatcher.toml");
    assert_eq!(dispatcher.gateway.sp_number, "121231100");
    let path = deploy("config/analytics.toml");
    let analytics = analytics::config::AnalyticsConfig::load(Some(&path.to_string_lossy()))
        .expect("analytics.toml");
    assert!(analytics.ttl_months >= 6);
    let text = std::fs::read_to_string(deploy("config/smsc-sim.toml")).expect("smsc-sim.toml");
    let sim: smsc_sim::SimConfig = toml::from_str(&text).expect("smsc-sim.toml parses");
    sim.validate().expect("smsc-sim.toml is valid");
}

#[test]
fn the_simulator_and_the_services_agree_on_addresses_and_credentials() {
    let status = status::config::Config::load(Some(&deploy("config/status.toml")), no_env())
        .expect("status.toml");
    let dispatcher =
        dispatcher::config::Config::load(Some(&deploy("config/dispatcher.toml")), no_env())
            .expect("dispatcher.toml");
    let sim: smsc_sim::SimConfig =
        toml::from_str(&std::fs::read_to_string(deploy("config/smsc-sim.toml")).expect("read"))
            .expect("parses");
    let sp = sim.sp.expect("the simulator reports to the status service");
    assert_eq!(sp.addr, status.receiver.listen.to_string());
    assert_eq!(sp.login_name, status.receiver.login_name);
    assert_eq!(dispatcher.gateway.addr, sim.submit_addr.to_string());
    assert_eq!(dispatcher.gateway.login_name, sim.account.login_name);
}
