//! Who is calling, and what they may do: local accounts (argon2id hashes in the store), optional
//! LDAP bind authentication, opaque tokens with expiry (stored as SHA-256 only), and the
//! original's roles — `admin`, and per environment `view-env` / `edit-env`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use calipso_proto::Timestamp;
use ring::rand::SecureRandom;
use serde::Deserialize;

use super::ServiceError;
use crate::store::{AnyStore, AuthMethod, Grants, Store, TokenRecord, UserRecord};

/// The LDAP directory that checks passwords, and how its groups map to grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// The DN a user binds as; `{username}` is replaced by the escaped user name.
    pub user_dn: String,
    /// Where groups are searched (with the user's own bind).
    #[serde(default)]
    pub group_base: Option<String>,
    /// Filter selecting the user's groups; `{dn}` is the user's DN, `{username}` the name.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// Grants per group CN (for example `calipso-admins = { admin = true }`).
    #[serde(default)]
    pub groups: BTreeMap<String, Grants>,
    #[serde(default = "default_ldap_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_group_filter() -> String {
    "(&(objectClass=groupOfNames)(member={dn}))".into()
}

fn default_ldap_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The caller of a request, once its token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
    pub grants: Grants,
    token_hash: String,
}

impl Principal {
    /// What identifies the token the principal came with (its hash), for per-token limits.
    pub(crate) fn token_key(&self) -> &str {
        &self.token_hash
    }

    pub fn require_admin(&self) -> Result<(), ServiceError> {
        if self.grants.admin {
            Ok(())
        } else {
            Err(ServiceError::Forbidden("this needs the admin role".into()))
        }
    }

    pub fn require_view(&self, environment: &str) -> Result<(), ServiceError> {
        if self.grants.can_view(environment) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "you have no view-env grant on environment `{environment}`"
            )))
        }
    }

    pub fn require_edit(&self, environment: &str) -> Result<(), ServiceError> {
        if self.grants.can_edit(environment) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "you have no edit-env grant on environment `{environment}`"
            )))
        }
    }
}

/// A freshly issued token: the secret is shown to the caller once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub record: TokenRecord,
}

/// Authentication and token bookkeeping.
#[derive(Debug)]
pub struct Auth {
    store: AnyStore,
    ldap: Option<LdapSettings>,
    token_lifetime: Duration,
    /// Tokens seen recently, by hash, so that a request costs no store read; revocation and
    /// user removal go through this process, which drops the entries.
    cache: Mutex<HashMap<String, TokenRecord>>,
    gate: LoginGate,
    failures: Mutex<HashMap<FailureKey, Failures>>,
}

/// Password checks in flight. An argon2 check holds 19 MiB and a core for ~20 ms: one runs per
/// core, a bounded number waits behind them, and past that a login is answered 503 at once —
/// a flood of logins costs neither gigabytes nor the API's other answers.
#[derive(Debug)]
struct LoginGate {
    running: tokio::sync::Semaphore,
    admitted: std::sync::atomic::AtomicUsize,
    max_admitted: usize,
}

/// Logins that wait for a password check, per core.
const WAITING_PER_CORE: usize = 8;

impl LoginGate {
    fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        LoginGate {
            running: tokio::sync::Semaphore::new(cores),
            admitted: std::sync::atomic::AtomicUsize::new(0),
            max_admitted: cores * (1 + WAITING_PER_CORE),
        }
    }

    /// Runs one password check when a core is free, or refuses at once when too many wait.
    async fn check(&self, password: String, hash: String) -> Result<bool, ServiceError> {
        use std::sync::atomic::Ordering;
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let _leave = scopeguard(|| {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
        });
        if admitted >= self.max_admitted {
            return Err(ServiceError::Unavailable(
                "too many logins in progress; retry in a moment".into(),
            ));
        }
        let _core = self
            .running
            .acquire()
            .await
            .map_err(|err| ServiceError::Internal(format!("password check: {err}")))?;
        tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|err| ServiceError::Internal(format!("password check: {err}")))
    }
}

/// Runs `leave` when dropped (on every way out of a scope, cancellation included).
fn scopeguard(leave: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(leave) = self.0.take() {
                leave();
            }
        }
    }
    Guard(Some(leave))
}

/// Whose failed logins are counted: a user name (whether or not it exists, so that a lock
/// tells nothing), or a client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    User(String),
    Client(std::net::IpAddr),
}

impl FailureKey {
    /// Failures allowed before each further one locks the key.
    fn free(&self) -> u32 {
        match self {
            FailureKey::User(_) => 5,
            FailureKey::Client(_) => 20,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: std::time::Instant,
    locked_until: Option<std::time::Instant>,
}

/// The longest lock, and how long failures are remembered without a new one.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
const FORGET_FAILURES: Duration = Duration::from_secs(3600);

/// Passwords longer than this are refused before hashing (argon2 would accept megabytes).
const MAX_PASSWORD: usize = 1024;
const TOKEN_PREFIX: &str = "cal_";

impl Auth {
    pub fn new(store: AnyStore, ldap: Option<LdapSettings>, token_lifetime: Duration) -> Self {
        Auth {
            store,
            ldap,
            token_lifetime,
            cache: Mutex::new(HashMap::new()),
            gate: LoginGate::new(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<FailureKey, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses a login while its user or its client is locked by earlier failures.
    fn check_locks(&self, keys: &[FailureKey]) -> Result<(), ServiceError> {
        let now = std::time::Instant::now();
        let failures = self.failures();
        for key in keys {
            let Some(until) = failures.get(key).and_then(|f| f.locked_until) else {
                continue;
            };
            if until > now {
                let seconds = (until - now).as_secs().max(1);
                let whose = match key {
                    FailureKey::User(name) => format!("user `{name}`"),
                    FailureKey::Client(ip) => format!("client {ip}"),
                };
                return Err(ServiceError::TooManyRequests {
                    message: format!("too many failed logins for {whose}; retry in {seconds} s"),
                    retry_after: seconds,
                });
            }
        }
        Ok(())
    }

    /// Counts a failed login; past the free ones, each locks for twice as long as the last
    /// (1 s, 2 s, 4 s … 15 min).
    fn record_failure(&self, keys: &[FailureKey]) {
        let now = std::time::Instant::now();
        let mut failures = self.failures();
        if failures.len() > 10_000 {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_FAILURES);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            if now.duration_since(entry.last) >= FORGET_FAILURES {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if let Some(over) = entry.count.checked_sub(key.free()).filter(|&n| n > 0) {
                let lock = Duration::from_secs(1u64 << (over - 1).min(20)).min(MAX_LOCK);
                if entry.locked_until.is_none() {
                    tracing::warn!(
                        ?key,
                        failures = entry.count,
                        "failed logins: locking further attempts"
                    );
                }
                entry.locked_until = Some(now + lock);
            }
        }
    }

    fn forget_failures(&self, keys: &[FailureKey]) {
        let mut failures = self.failures();
        for key in keys {
            failures.remove(key);
        }
    }

    /// On first start (no user at all), creates `admin` with the given password, or a generated
    /// one that is returned so it can be printed once. Never a fixed default.
    pub async fn ensure_admin(
        &self,
        password: Option<&str>,
    ) -> Result<Option<(String, String)>, ServiceError> {
        if !self.store.users().await?.is_empty() {
            return Ok(None);
        }
        let password = match password {
            Some(password) => password.to_owned(),
            None => random_hex(16)?,
        };
        let user = UserRecord {
            username: "admin".into(),
            password_hash: Some(hash_password(&password)?),
            grants: Grants {
                admin: true,
                ..Grants::default()
            },
            created_at: Timestamp::now(),
        };
        self.store.put_user(&user).await?;
        Ok(Some((user.username, password)))
    }

    /// Checks a user name and password (locally, then against LDAP when configured) and issues
    /// a token.
    ///
    /// Failed logins are counted per user name and per client address: past 5 for a user (20
    /// for an address), each further one locks it for twice as long as the last, up to 15
    /// minutes (429 with `Retry-After`, also for the right password). An unknown user costs
    /// the same password check as a known one, so answers do not tell which names exist.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<IssuedToken, ServiceError> {
        let refused = || ServiceError::Unauthorized("wrong user name or password".into());
        if username.is_empty() || password.is_empty() || password.len() > MAX_PASSWORD {
            return Err(refused());
        }
        let mut keys = vec![FailureKey::User(username.to_owned())];
        keys.extend(client.map(FailureKey::Client));
        self.check_locks(&keys)?;
        let local = self.store.user(username).await?;
        let checked = match local.as_ref().and_then(|u| u.password_hash.as_deref()) {
            Some(hash) => {
                let verified = self
                    .gate
                    .check(password.to_owned(), hash.to_owned())
                    .await?;
                verified.then(|| {
                    (
                        AuthMethod::Password,
                        local.map(|u| u.grants).unwrap_or_default(),
                    )
                })
            }
            None => match &self.ldap {
                None => {
                    self.gate
                        .check(password.to_owned(), dummy_hash()?.to_owned())
                        .await?;
                    None
                }
                Some(ldap) => {
                    ldap_authenticate(ldap, username, password)
                        .await?
                        .map(|mut grants| {
                            if let Some(user) = local {
                                grants.merge(&user.grants);
                            }
                            (AuthMethod::Ldap, grants)
                        })
                }
            },
        };
        let Some((method, grants)) = checked else {
            self.record_failure(&keys);
            return Err(refused());
        };
        self.forget_failures(&keys);
        let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let issued_at = Timestamp::now();
        let lifetime = i64::try_from(self.token_lifetime.as_micros()).unwrap_or(i64::MAX);
        let record = TokenRecord {
            token_hash: token_hash(&token),
            username: username.to_owned(),
            method,
            grants,
            issued_at,
            expires_at: Timestamp::from_unix_micros(
                issued_at.unix_micros().saturating_add(lifetime),
            ),
            revoked: false,
        };
        self.store.put_token(&record).await?;
        Ok(IssuedToken { token, record })
    }

    /// The principal a bearer token stands for.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ServiceError> {
        let missing = || ServiceError::Unauthorized("unknown, expired or revoked token".into());
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(missing());
        }
        self.authenticate_hash(token_hash(token)).await
    }

    /// Whether a principal's token still stands for it — not expired, not revoked, the same
    /// grants: what a long-lived stream checks as it goes.
    pub async fn still_valid(&self, who: &Principal) -> bool {
        self.authenticate_hash(who.token_hash.clone())
            .await
            .is_ok_and(|now| now.username == who.username && now.grants == who.grants)
    }

    async fn authenticate_hash(&self, hash: String) -> Result<Principal, ServiceError> {
        let missing = || ServiceError::Unauthorized("unknown, expired or revoked token".into());
        let cached = self.cache().get(&hash).cloned();
        let record = match cached {
            Some(record) => record,
            None => {
                let record = self.store.token(&hash).await?.ok_or_else(missing)?;
                let now = Timestamp::now();
                let mut cache = self.cache();
                // Each token is inserted once per process; expired ones go at the same time,
                // so the cache holds no more than the live tokens.
                cache.retain(|_, r| r.expires_at > now);
                cache.insert(hash.clone(), record.clone());
                record
            }
        };
        if record.revoked || record.expires_at <= Timestamp::now() {
            self.cache().remove(&hash);
            return Err(missing());
        }
        Ok(Principal {
            username: record.username,
            grants: record.grants,
            token_hash: hash,
        })
    }

    /// Revokes the caller's token.
    pub async fn revoke(&self, principal: &Principal) -> Result<(), ServiceError> {
        let mut record = self
            .store
            .token(&principal.token_hash)
            .await?
            .ok_or_else(|| ServiceError::NotFound("the token is gone already".into()))?;
        record.revoked = true;
        self.store.put_token(&record).await?;
        self.cache().remove(&principal.token_hash);
        Ok(())
    }

    /// Creates or replaces a local user; `password` `None` keeps the current one (or leaves
    /// an LDAP user without one).
    pub async fn put_user(
        &self,
        username: &str,
        password: Option<&str>,
        grants: Grants,
    ) -> Result<UserRecord, ServiceError> {
        validate_username(username)?;
        let existing = self.store.user(username).await?;
        let password_hash = match password {
            Some(p) if p.len() < 8 || p.len() > MAX_PASSWORD => {
                return Err(ServiceError::BadRequest(
                    "password must be 8 to 1024 characters".into(),
                ));
            }
            Some(p) => Some(hash_password(p)?),
            None => existing.as_ref().and_then(|u| u.password_hash.clone()),
        };
        // Tokens carry the grants of their issue: when the grants or the password change,
        // the user's tokens go, so a withdrawn grant does not outlive the change.
        let revoke = existing
            .as_ref()
            .is_some_and(|u| u.grants != grants || password.is_some());
        let user = UserRecord {
            username: username.to_owned(),
            password_hash,
            grants,
            created_at: existing.map_or_else(Timestamp::now, |u| u.created_at),
        };
        self.store.put_user(&user).await?;
        if revoke {
            self.store.delete_tokens(username).await?;
            self.forget_user(username);
        }
        Ok(user)
    }

    pub async fn delete_user(&self, username: &str) -> Result<(), ServiceError> {
        if !self.store.delete_user(username).await? {
            return Err(ServiceError::NotFound(format!("no user `{username}`")));
        }
        self.forget_user(username);
        Ok(())
    }

    fn forget_user(&self, username: &str) {
        self.cache().retain(|_, record| record.username != username);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenRecord>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn validate_username(username: &str) -> Result<(), ServiceError> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "user name `{username}` must be 1 to 64 of A-Z a-z 0-9 . _ - @"
        )))
    }
}

fn hash_password(password: &str) -> Result<String, ServiceError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| ServiceError::Internal(format!("cannot hash a password: {err}")))
}

/// A hash to check unknown users' passwords against, made once: a login for a name that does
/// not exist takes as long as one with a wrong password.
fn dummy_hash() -> Result<&'static str, ServiceError> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_password(&random_hex(16)?)?;
    Ok(DUMMY.get_or_init(|| hash))
}

fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

pub(super) fn random_hex(bytes: usize) -> Result<String, ServiceError> {
    let mut buffer = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| ServiceError::Internal("the system random source failed".into()))?;
    Ok(hex(&buffer))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Binds as the user; on success, their grants from group membership. `None`: the directory
/// refused the password (or does not know the user).
async fn ldap_authenticate(
    settings: &LdapSettings,
    username: &str,
    password: &str,
) -> Result<Option<Grants>, ServiceError> {
    use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
    let unavailable = |err: ldap3::LdapError| {
        ServiceError::Unavailable(format!("the LDAP directory at {}: {err}", settings.url))
    };
    let dn = settings
        .user_dn
        .replace("{username}", &ldap3::dn_escape(username));
    let connection = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(settings.starttls);
    let (conn, mut ldap) = LdapConnAsync::with_settings(connection, &settings.url)
        .await
        .map_err(unavailable)?;
    ldap3::drive!(conn);
    ldap.with_timeout(settings.timeout);
    let bound = ldap.simple_bind(&dn, password).await.map_err(unavailable)?;
    // 49: invalidCredentials; 32: noSuchObject. Anything else is the directory's problem.
    match bound.rc {
        0 => {}
        49 | 32 => return Ok(None),
        rc => {
            return Err(ServiceError::Unavailable(format!(
                "the LDAP directory refused the bind with code {rc}: {}",
                bound.text
            )));
        }
    }
    let mut grants = Grants::default();
    if let Some(base) = &settings.group_base {
        let filter = settings
            .group_filter
            .replace("{dn}", &ldap3::ldap_escape(&dn))
            .replace("{username}", &ldap3::ldap_escape(username));
        ldap.with_timeout(settings.timeout);
        let (entries, _) = ldap
            .search(base, Scope::Subtree, &filter, vec!["cn"])
            .await
            .and_then(|result| result.success())
            .map_err(unavailable)?;
        for entry in entries {
            let entry = SearchEntry::construct(entry);
            for cn in entry.attrs.get("cn").into_iter().flatten() {
                if let Some(granted) = settings.groups.get(cn) {
                    grants.merge(granted);
                }
            }
        }
    }
    let _ = ldap.unbind().await;
    Ok(Some(grants))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn tokens_are_hashed_and_random() {
        let a = random_hex(32).expect("random");
        let b = random_hex(32).expect("random");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(token_hash("cal_x").len(), 64);
        assert_ne!(token_hash("cal_x"), "cal_x");
    }

    #[test]
    fn user_names_are_restricted() {
        assert!(validate_username("ops.team-1@example").is_ok());
        for bad in ["", "a b", "x(y)", &"a".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn edit_implies_view_and_admin_implies_all() {
        let mut grants = Grants::default();
        grants.edit_env.insert("a".into());
        assert!(grants.can_view("a") && grants.can_edit("a"));
        assert!(!grants.can_view("b"));
        grants.admin = true;
        assert!(grants.can_edit("b"));
    }
}
