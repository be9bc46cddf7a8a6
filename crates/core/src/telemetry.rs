//! Logging set-up and the masking every log line applies to personal data.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber for a service: `RUST_LOG` filters
/// (default `info`), `LOG_FORMAT=json` switches to one JSON object per line.
pub fn init(service: &str) {
    init_with(service, "info");
}

/// As [`init`], with another default filter (command-line tools use `warn`).
pub fn init_with(service: &str, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}

/// Completes when the process is asked to stop: SIGTERM or Ctrl-C.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested");
}

/// Masks a phone number for logs: the first three and last four digits of the
/// national number stay, the middle is starred (`8618612341234` → `86186****1234`).
/// Anything too short to mask meaningfully is starred entirely.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().collect();
    let (prefix, national) = match phone.strip_prefix("86") {
        Some(rest) if rest.len() == 11 => ("86", rest.chars().collect::<Vec<_>>()),
        _ => ("", digits),
    };
    if national.len() < 8 {
        return "*".repeat(national.len().max(4));
    }
    let head: String = national[..3].iter().collect();
    let tail: String = national[national.len() - 4..].iter().collect();
    format!("{prefix}{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::mask_phone;

    #[test]
    fn masks_the_middle_of_national_numbers() {
        assert_eq!(mask_phone("8618612341234"), "86186****1234");
        assert_eq!(mask_phone("18612341234"), "186****1234");
        assert_eq!(mask_phone("123"), "****");
        assert!(!mask_phone("8613012345678").contains("12345"));
    }
}
