//! Secrets at rest: the passwords and tokens in environment configurations are sealed
//! (ChaCha20-Poly1305) before they reach the store, with a key kept apart from the database.
//!
//! A database dump, a backup or a read-only SQL account then shows no cloud credential; the
//! key lives in a 0600 file (`[store] secret_key_file`, by default `/etc/calipso/secret.key`)
//! or in `$CALIPSO_SECRET_KEY`, both 32 bytes in base64.
//!
//! A sealed value reads `sealed:v1:<key id>:<base64 of nonce and ciphertext>`. The key id (the
//! first four bytes of the key's SHA-256) lets a wrong key be named instead of failing as
//! "corrupt"; the value's place (`environment/target.key`) is authenticated with it, so a
//! sealed value copied into another environment or field does not open.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::cliques::EnvironmentConfig;

/// Configuration keys whose values are secrets: written, sealed at rest, never read back.
pub const SECRET_KEYS: &[&str] = &[
    "pwd",
    "password",
    "token",
    "admin_token",
    "nfv_token",
    "key",
    "rabbitmq_pass",
    "ssh_password",
];

/// The variable that carries the key instead of a file.
pub const KEY_VARIABLE: &str = "CALIPSO_SECRET_KEY";

const PREFIX: &str = "sealed:v1:";
const KEY_LEN: usize = 32;

pub fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} can be read by other users: `chmod 600` it (it opens every stored cloud password)"
    )]
    Exposed(PathBuf),
    #[error("{origin}: a secret key is 32 bytes in base64 (`head -c32 /dev/urandom | base64`)")]
    Malformed { origin: String },
    #[error(
        "environment `{environment}`: {field} was sealed with key {sealed_with}, but the configured key is {configured}: configure the key it was sealed with ([store] secret_key_file or ${KEY_VARIABLE})"
    )]
    WrongKey {
        environment: String,
        field: String,
        sealed_with: String,
        configured: String,
    },
    #[error("environment `{environment}`: {field} is damaged and cannot be opened")]
    Damaged { environment: String, field: String },
}

/// The key that seals environment secrets.
pub struct SecretKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id).finish()
    }
}

/// How the key was found, for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Variable,
    File(PathBuf),
    Created(PathBuf),
}

impl SecretKey {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a 32-byte key fits ChaCha20-Poly1305"));
        SecretKey {
            key: LessSafeKey::new(unbound),
            id,
        }
    }

    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Self {
        Self::from_bytes(&random_key())
    }

    /// Parses a key written as base64 (a key file's text or the variable's value).
    pub fn parse(text: &str, origin: &str) -> Result<Self, SecretError> {
        let bytes = BASE64
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
            .ok_or_else(|| SecretError::Malformed {
                origin: origin.to_owned(),
            })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// `$CALIPSO_SECRET_KEY` when set, else the key in `path`, created (0600, in a directory
    /// made 0700 if missing) on first start.
    pub fn load_or_create(path: &Path) -> Result<(Self, KeyOrigin), SecretError> {
        if let Ok(text) = std::env::var(KEY_VARIABLE) {
            return Ok((
                Self::parse(&text, &format!("${KEY_VARIABLE}"))?,
                KeyOrigin::Variable,
            ));
        }
        let io = |source| SecretError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(SecretError::Exposed(path.to_owned()));
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                let key = Self::parse(&text, &path.display().to_string())?;
                Ok((key, KeyOrigin::File(path.to_owned())))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_key();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|source| SecretError::Io {
                            path: dir.to_owned(),
                            source,
                        })?;
                }
                // create_new: two first starts at once must not each write a different key.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                writeln!(file, "{}", BASE64.encode(bytes))
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok((
                    Self::from_bytes(&bytes),
                    KeyOrigin::Created(path.to_owned()),
                ))
            }
            Err(err) => Err(io(err)),
        }
    }

    /// The key's short public id (names it in errors without revealing it).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn seal(&self, place: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut sealed,
            )
            .unwrap_or_else(|_| unreachable!("a secret is far below ChaCha20's length limit"));
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, BASE64.encode(body))
    }

    /// The clear value of a stored one; `Ok(None)` when it was stored in clear (by a version
    /// that did not seal).
    fn open(
        &self,
        environment: &str,
        field: &str,
        stored: &str,
    ) -> Result<Option<String>, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let damaged = || SecretError::Damaged {
            environment: environment.to_owned(),
            field: field.to_owned(),
        };
        let (key_id, body) = rest.split_once(':').ok_or_else(damaged)?;
        if key_id != self.id {
            return Err(SecretError::WrongKey {
                environment: environment.to_owned(),
                field: field.to_owned(),
                sealed_with: key_id.to_owned(),
                configured: self.id.clone(),
            });
        }
        let body = BASE64.decode(body).map_err(|_| damaged())?;
        if body.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut buffer = ciphertext.to_vec();
        let place = place(environment, field);
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut buffer)
            .map_err(|_| damaged())?;
        String::from_utf8(plain.to_vec())
            .map(Some)
            .map_err(|_| damaged())
    }

    /// Seals one secret kept outside an environment's configuration (an alert rule's webhook
    /// secret), bound to its environment and field like the configuration's own.
    pub fn seal_value(&self, environment: &str, field: &str, plain: &str) -> String {
        self.seal(&place(environment, field), plain)
    }

    /// Opens what [`SecretKey::seal_value`] sealed (a value stored in clear is returned as is).
    pub fn open_value(
        &self,
        environment: &str,
        field: &str,
        stored: &str,
    ) -> Result<String, SecretError> {
        Ok(self
            .open(environment, field, stored)?
            .unwrap_or_else(|| stored.to_owned()))
    }

    /// The configuration as it is stored: every secret sealed.
    pub fn seal_config(&self, config: &EnvironmentConfig) -> EnvironmentConfig {
        let mut sealed = config.clone();
        for (target, settings) in &mut sealed.configuration {
            for (key, value) in settings.iter_mut().filter(|(k, _)| is_secret(k)) {
                let field = format!("{target}.{key}");
                *value = self.seal(&place(&config.name, &field), value);
            }
        }
        sealed
    }

    /// The configuration as the aggregator uses it, every secret opened; the flag tells that
    /// some secret was stored in clear and should be sealed now.
    pub fn open_config(
        &self,
        mut config: EnvironmentConfig,
    ) -> Result<(EnvironmentConfig, bool), SecretError> {
        let mut clear_found = false;
        for (target, settings) in &mut config.configuration {
            for (key, value) in settings.iter_mut().filter(|(k, _)| is_secret(k)) {
                let field = format!("{target}.{key}");
                match self.open(&config.name, &field, value)? {
                    Some(plain) => *value = plain,
                    None => clear_found = true,
                }
            }
        }
        Ok((config, clear_found))
    }
}

fn place(environment: &str, field: &str) -> String {
    format!("{environment}/{field}")
}

fn fill_random(buffer: &mut [u8]) {
    SystemRandom::new()
        .fill(buffer)
        .unwrap_or_else(|_| panic!("the operating system's random source failed"));
}

fn random_key() -> [u8; KEY_LEN] {
    let mut bytes = [0u8; KEY_LEN];
    fill_random(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cloud(name: &str) -> EnvironmentConfig {
        let mut config = EnvironmentConfig::named(name);
        config.configuration.insert(
            "OpenStack".into(),
            BTreeMap::from([
                ("host".into(), "10.0.0.1".into()),
                ("pwd".into(), "s3cret-admin".into()),
            ]),
        );
        config
    }

    #[test]
    fn sealed_secrets_hide_the_password_and_open_again() {
        let key = SecretKey::generate();
        let sealed = key.seal_config(&cloud("lab"));
        let stored = &sealed.configuration["OpenStack"];
        assert_eq!(
            stored["host"], "10.0.0.1",
            "settings that are no secret stay readable"
        );
        assert!(stored["pwd"].starts_with(&format!("sealed:v1:{}:", key.id())));
        assert!(!stored["pwd"].contains("s3cret"));
        let (opened, clear_found) = key.open_config(sealed).expect("opens");
        assert_eq!(opened.configuration["OpenStack"]["pwd"], "s3cret-admin");
        assert!(!clear_found);
    }

    #[test]
    fn a_secret_stored_in_clear_is_read_and_flagged_for_sealing() {
        let (opened, clear_found) = SecretKey::generate()
            .open_config(cloud("lab"))
            .expect("reads");
        assert_eq!(opened.configuration["OpenStack"]["pwd"], "s3cret-admin");
        assert!(clear_found);
    }

    #[test]
    fn another_key_is_named_not_taken_for_damage() {
        let sealed = SecretKey::generate().seal_config(&cloud("lab"));
        let other = SecretKey::generate();
        let err = other.open_config(sealed).expect_err("wrong key");
        let text = err.to_string();
        assert!(matches!(err, SecretError::WrongKey { .. }));
        assert!(
            text.contains("environment `lab`: OpenStack.pwd was sealed with key"),
            "{text}"
        );
        assert!(
            text.contains(&format!("configured key is {}", other.id())),
            "{text}"
        );
    }

    #[test]
    fn a_sealed_value_moved_to_another_environment_does_not_open() {
        let key = SecretKey::generate();
        let mut stolen = cloud("other");
        stolen.configuration = key.seal_config(&cloud("lab")).configuration;
        let err = key.open_config(stolen).expect_err("bound to its place");
        assert_eq!(
            err.to_string(),
            "environment `other`: OpenStack.pwd is damaged and cannot be opened"
        );
    }

    #[test]
    fn key_files_are_created_private_and_refused_when_exposed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("conf").join("secret.key");
        let (created, origin) = SecretKey::load_or_create(&path).expect("created");
        assert_eq!(origin, KeyOrigin::Created(path.clone()));
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        let (again, origin) = SecretKey::load_or_create(&path).expect("read back");
        assert_eq!(origin, KeyOrigin::File(path.clone()));
        assert_eq!(again.id(), created.id(), "the same key on every start");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SecretKey::load_or_create(&path).expect_err("exposed");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let err = SecretKey::parse("c2hvcnQ=", "short").expect_err("too short");
        assert_eq!(
            err.to_string(),
            "short: a secret key is 32 bytes in base64 (`head -c32 /dev/urandom | base64`)"
        );
    }
}
