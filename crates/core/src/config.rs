//! Service configuration: a TOML file, overridden key by key by environment variables, deserialised into the service's own struct.
//!
//! An override is `{PREFIX}{SECTION}__{KEY}...=value`, e.g.
//! `STATUS_KAFKA__BOOTSTRAP=broker:9092` or `STATUS_VALIDITY_MS=3000`. The
//! value is read as a TOML scalar when it parses as one (numbers, booleans,
//! quoted strings, arrays) and as a plain string otherwise. Only variables
//! whose first segment is one of the struct's top-level keys count, so
//! secrets can live in other `{PREFIX}…` variables without clashing; any
//! other `{PREFIX}…` variable is ignored (and logged at debug level).
//!
//! A value the struct refuses is reported with its key path, the value (and
//! the variable it came from, for an override) and what was expected, e.g.
//! `invalid configuration: limits.max_batch = "many" (from
//! INGEST_LIMITS__MAX_BATCH): invalid type: string "many", expected usize`.
//! Sections and keys that hold secrets (see [`crate::secret`]) are never
//! echoed.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::CoreError;

/// Reads `path` (or nothing), applies the overrides found in `env` under
/// `prefix` for the top-level `keys`, and deserialises the result. Unknown
/// keys and bad values are refused by the struct's own serde rules, with the
/// key named in the error.
pub fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    prefix: &str,
    keys: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, CoreError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|e| CoreError::Config {
            key: "--config".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?,
        None => String::new(),
    };
    from_str(&text, prefix, keys, env)
}

/// As [`load`], from TOML text already read.
pub fn from_str<T: DeserializeOwned>(
    text: &str,
    prefix: &str,
    keys: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, CoreError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| CoreError::Config {
        key: "--config".into(),
        message: e.to_string(),
    })?;
    let mut overridden: Vec<(Vec<String>, String)> = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if !keys.contains(&path[0].as_str()) {
            // Secrets share the prefix (e.g. STATUS_GATEWAY_PASSWORD); a
            // typo is reported, not applied.
            tracing::debug!(variable = %name, "not a configuration key; ignored");
            continue;
        }
        set(&mut table, &path, scalar(&value), &name)?;
        overridden.push((path, name));
    }
    let root = toml::Value::Table(table);
    serde_path_to_error::deserialize(root.clone()).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().message().to_string();
        CoreError::Config {
            key: describe(&root, &path, &overridden),
            message,
        }
    })
}

/// `key.path = value (from VARIABLE)` for an error at `path`: the value only
/// when it is a plain value whose key does not look like a secret, the
/// variable only when an override set it.
fn describe(root: &toml::Value, path: &[String], overridden: &[(Vec<String>, String)]) -> String {
    if path.is_empty() {
        return "config".into();
    }
    let mut key = path.join(".");
    let secret = path.iter().any(|segment| {
        ["password", "secret", "token"]
            .iter()
            .any(|word| segment.contains(word))
    });
    let value = path.iter().try_fold(root, |value, segment| match value {
        toml::Value::Table(table) => table.get(segment),
        toml::Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    });
    match value {
        Some(toml::Value::Table(_)) | None => {}
        Some(_) if secret => key.push_str(" = ***"),
        Some(value) => {
            key.push_str(" = ");
            key.push_str(&value.to_string());
        }
    }
    // The variable that set this key, or a key inside it (a secret's `file`).
    let set_by = overridden
        .iter()
        .rev()
        .find(|(p, _)| path.starts_with(p) || p.starts_with(path));
    if let Some((_, name)) = set_by {
        key.push_str(&format!(" (from {name})"));
    }
    key
}

fn scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.into()))
}

fn set(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
    name: &str,
) -> Result<(), CoreError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(CoreError::Config {
                    key: name.into(),
                    message: format!("{key} is a value, not a section"),
                })
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default)]
        name: String,
        #[serde(default)]
        limit_ms: u64,
        #[serde(default)]
        kafka: crate::kafka::KafkaSettings,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_nested_keys_and_ignores_others() {
        let config: Example = load(
            None,
            "EX_",
            &["name", "limit_ms", "kafka"],
            env(&[
                ("EX_LIMIT_MS", "250"),
                ("EX_KAFKA__BOOTSTRAP", "broker:9092"),
                ("EX_SECRET_TOKEN", "not a key"),
                ("OTHER_NAME", "x"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.limit_ms, 250);
        assert_eq!(config.kafka.bootstrap, "broker:9092");
        assert_eq!(config.name, "");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = std::env::temp_dir().join(format!("sms-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "nmae = \"typo\"\n").expect("writes");
        let err = load::<Example>(Some(&file), "EX_", &["name"], env(&[])).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
        let err = load::<Example>(None, "EX_", &["limit_ms"], env(&[("EX_LIMIT_MS", "soon")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: limit_ms = \"soon\" (from EX_LIMIT_MS): \
             invalid type: string \"soon\", expected u64"
        );
        std::fs::write(&file, "[kafka]\nbootstrap = 9092\n").expect("writes");
        let err = load::<Example>(Some(&file), "EX_", &["kafka"], env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: kafka.bootstrap = 9092: \
             invalid type: integer `9092`, expected a string"
        );
        let err =
            load::<Example>(Some(&dir.join("missing.toml")), "EX_", &[], env(&[])).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
