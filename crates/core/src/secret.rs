//! Secrets in configuration: given as a literal, read from an environment variable or from a file, and never printed.
//!
//! In TOML a secret is any of
//!
//! ```toml
//! password = "literal"                          # only for local runs
//! password = { env = "KAFKA_SASL_PASSWORD" }    # an environment variable
//! password = { file = "/run/secrets/kafka" }    # a file (Kubernetes, Docker secrets)
//! ```
//!
//! The value is read while the configuration is loaded, so a missing
//! variable or an unreadable file stops the start (and `--check-config`) with
//! the key named. A file's surrounding white space (the trailing newline most
//! editors add) is dropped. [`Secret`] prints as `***` through both `Debug`
//! and `Display`, so a configuration struct that holds one can be logged
//! whole; the value is reached only through [`Secret::expose`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::CoreError;

/// A credential: a password, an API key, an HMAC key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value already in hand.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it (a bind, a SASL
    /// handshake, a signature check). Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from the environment variable `name`; `key` names the
    /// configuration key in the error.
    pub fn from_env(key: &str, name: &str) -> Result<Self, CoreError> {
        match std::env::var(name) {
            Ok(value) => Ok(Self(value)),
            Err(std::env::VarError::NotPresent) => Err(CoreError::Config {
                key: key.into(),
                message: format!("environment variable {name} is not set; expected the secret"),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(CoreError::Config {
                key: key.into(),
                message: format!("environment variable {name} is not valid UTF-8"),
            }),
        }
    }

    /// Reads a secret from the file at `path`, dropping surrounding white
    /// space; `key` names the configuration key in the error.
    pub fn from_file(key: &str, path: &Path) -> Result<Self, CoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::Config {
            key: key.into(),
            message: format!("cannot read secret file {}: {e}", path.display()),
        })?;
        Ok(Self(text.trim().to_string()))
    }
}

/// For command-line flags and their environment variables (clap).
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret is written in the configuration.
#[derive(Deserialize)]
#[serde(untagged)]
enum Source {
    Literal(String),
    Reference(Reference),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;

        let source = Source::deserialize(deserializer).map_err(|_| {
            D::Error::custom(
                "expected a secret: a string, { env = \"VARIABLE\" } or { file = \"/path\" }",
            )
        })?;
        let reference = match source {
            Source::Literal(value) => return Ok(Self(value)),
            Source::Reference(reference) => reference,
        };
        // The key path is added by the loader; these messages say the rest.
        let resolved = match (reference.env, reference.file) {
            (Some(name), None) => Self::from_env("", &name),
            (None, Some(path)) => Self::from_file("", &path),
            _ => {
                return Err(D::Error::custom(
                    "expected exactly one of env or file in a secret reference",
                ))
            }
        };
        resolved.map_err(|e| match e {
            CoreError::Config { message, .. } => D::Error::custom(message),
            other => D::Error::custom(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        password: Secret,
    }

    fn parse(text: &str) -> Result<Holder, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn prints_as_stars_in_debug_and_display() {
        let holder = parse("password = \"hunter2\"").unwrap();
        assert_eq!(holder.password.expose(), "hunter2");
        assert_eq!(format!("{:?}", holder), "Holder { password: *** }");
        assert_eq!(holder.password.to_string(), "***");
        assert!(!format!("{:#?}", holder).contains("hunter2"));
    }

    #[test]
    fn reads_a_file_without_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("sms-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let holder = parse(&format!("password = {{ file = {:?} }}", file)).unwrap();
        assert_eq!(holder.password.expose(), "from-a-file");

        let err = parse(&format!(
            "password = {{ file = {:?} }}",
            dir.join("missing")
        ))
        .unwrap_err();
        assert!(err.message().contains("cannot read secret file"), "{err}");
    }

    #[test]
    fn reads_an_environment_variable() {
        let name = format!("SMS_SECRET_TEST_{}", std::process::id());
        std::env::set_var(&name, "from-the-environment");
        let holder = parse(&format!("password = {{ env = \"{name}\" }}")).unwrap();
        assert_eq!(holder.password.expose(), "from-the-environment");

        let err = parse("password = { env = \"SMS_SECRET_TEST_NEVER_SET\" }").unwrap_err();
        assert!(
            err.message()
                .contains("SMS_SECRET_TEST_NEVER_SET is not set"),
            "{err}"
        );
    }

    #[test]
    fn refuses_ambiguous_or_malformed_references() {
        let err = parse("password = { env = \"A\", file = \"/b\" }").unwrap_err();
        assert!(
            err.message().contains("exactly one of env or file"),
            "{err}"
        );
        let err = parse("password = 42").unwrap_err();
        assert!(err.message().contains("expected a secret"), "{err}");
        let err = parse("password = { path = \"/b\" }").unwrap_err();
        assert!(err.message().contains("expected a secret"), "{err}");
    }
}
