//! What operators configure: clique types and constraints, environment configurations (with
//! write-only secrets) and users. Changes to clique rules and environments go through the
//! committer, so the cliques they change are stored and streamed like any other change.

use std::collections::BTreeMap;

use calipso_proto::ObjectType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Principal, Service, ServiceError};
use crate::cliques::{CliqueConstraint, CliqueType, EnvironmentConfig};
use crate::ingest::AdminChange;
use crate::secrets::is_secret;
use crate::store::{Grants, Store, UserRecord};

pub const MECHANISM_DRIVERS: &[&str] = &["OVS", "VPP", "LXB", "Arista", "Nexus"];
pub const TYPE_DRIVERS: &[&str] = &["local", "vlan", "vxlan", "gre", "flat", "geneve"];
pub const ENVIRONMENT_TYPES: &[&str] = &["OpenStack", "Kubernetes", "VMware", "Bare-metal"];
pub const CONFIGURATION_TARGETS: &[&str] = &[
    "OpenStack",
    "mysql",
    "CLI",
    "AMQP",
    "Monitoring",
    "ACI",
    "Kubernetes",
    "NFV_provider",
];

/// An environment's configuration as the API returns it: secrets are listed by name only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnvironmentView {
    pub name: String,
    pub environment_type: String,
    pub distribution: Option<String>,
    pub distribution_version: Option<String>,
    pub mechanism_drivers: Vec<String>,
    pub type_drivers: Vec<String>,
    /// Settings by target, without secret values.
    pub configuration: BTreeMap<String, BTreeMap<String, String>>,
    /// `target.key` of every secret that is set.
    pub secrets_set: Vec<String>,
}

/// An environment configuration as written (POST, PUT) or merged (PATCH: absent fields stay).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentInput {
    pub name: Option<String>,
    pub environment_type: Option<String>,
    pub distribution: Option<String>,
    pub distribution_version: Option<String>,
    pub mechanism_drivers: Option<Vec<String>>,
    pub type_drivers: Option<Vec<String>>,
    /// Settings by target; a secret left out keeps its stored value.
    pub configuration: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub username: String,
    #[schema(value_type = Object)]
    pub grants: Grants,
    pub has_password: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Omit to keep the current password, or for a user who logs in through LDAP.
    pub password: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub grants: Grants,
}

pub fn environment_view(config: &EnvironmentConfig) -> EnvironmentView {
    let mut secrets_set = Vec::new();
    let configuration = config
        .configuration
        .iter()
        .map(|(target, settings)| {
            let visible = settings
                .iter()
                .filter(|(key, _)| {
                    let secret = is_secret(key);
                    if secret {
                        secrets_set.push(format!("{target}.{key}"));
                    }
                    !secret
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (target.clone(), visible)
        })
        .collect();
    EnvironmentView {
        name: config.name.clone(),
        environment_type: config
            .environment_type
            .clone()
            .unwrap_or_else(|| "OpenStack".into()),
        distribution: config.distribution.clone(),
        distribution_version: config.distribution_version.clone(),
        mechanism_drivers: config.mechanism_drivers.clone(),
        type_drivers: config.type_drivers.clone(),
        configuration,
        secrets_set,
    }
}

pub fn validate_name(what: &str, name: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "{what} `{name}` must be 1 to 64 of A-Z a-z 0-9 . _ -"
        )))
    }
}

fn check_all_in(field: &str, values: &[String], allowed: &[&str]) -> Result<(), ServiceError> {
    match values.iter().find(|v| !allowed.contains(&v.as_str())) {
        Some(bad) => Err(ServiceError::BadRequest(format!(
            "{field}: `{bad}` is not one of {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Applies `input` over `base` (a PATCH, or a PUT/POST over an empty or the stored config).
fn merge_environment(
    mut base: EnvironmentConfig,
    stored_secrets: &EnvironmentConfig,
    input: EnvironmentInput,
) -> Result<EnvironmentConfig, ServiceError> {
    if let Some(name) = input.name.filter(|n| *n != base.name) {
        return Err(ServiceError::BadRequest(format!(
            "name `{name}` differs from the environment `{}` addressed",
            base.name
        )));
    }
    if let Some(kind) = input.environment_type {
        check_all_in(
            "environment_type",
            std::slice::from_ref(&kind),
            ENVIRONMENT_TYPES,
        )?;
        base.environment_type = Some(kind);
    }
    if let Some(distribution) = input.distribution {
        base.distribution = Some(distribution).filter(|d| !d.is_empty());
    }
    if let Some(version) = input.distribution_version {
        base.distribution_version = Some(version).filter(|v| !v.is_empty());
    }
    if let Some(drivers) = input.mechanism_drivers {
        check_all_in("mechanism_drivers", &drivers, MECHANISM_DRIVERS)?;
        base.mechanism_drivers = drivers;
    }
    if let Some(drivers) = input.type_drivers {
        check_all_in("type_drivers", &drivers, TYPE_DRIVERS)?;
        base.type_drivers = drivers;
    }
    if let Some(mut configuration) = input.configuration {
        let targets: Vec<String> = configuration.keys().cloned().collect();
        check_all_in("configuration", &targets, CONFIGURATION_TARGETS)?;
        for (target, settings) in &mut configuration {
            let Some(stored) = stored_secrets.configuration.get(target) else {
                continue;
            };
            for (key, value) in stored.iter().filter(|(k, _)| is_secret(k)) {
                settings.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        base.configuration = configuration;
    }
    if base.distribution_version.is_some() && base.distribution.is_none() {
        return Err(ServiceError::BadRequest(
            "distribution_version needs a distribution".into(),
        ));
    }
    // The OpenStack adapter's settings and the agents' health settings are checked here, so a
    // mistake is a 400 naming the key rather than an adapter that never starts or agents that
    // never hear of it.
    crate::openstack::OpenStackSettings::of(&base)
        .map_err(|error| ServiceError::BadRequest(error.to_string()))?;
    crate::monitoring::health_overrides(&base).map_err(ServiceError::BadRequest)?;
    Ok(base)
}

impl Service {
    async fn clique_rules_change(
        &self,
        change: impl FnOnce(
            &mut Vec<CliqueType>,
            &mut Vec<CliqueConstraint>,
        ) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        let _serial = self.inner_settings_lock().await;
        let (mut types, mut constraints) = {
            let engine = self.sink().engine();
            (
                engine.clique_types().to_vec(),
                engine.clique_constraints().to_vec(),
            )
        };
        change(&mut types, &mut constraints)?;
        self.sink()
            .admin(AdminChange::CliqueRules(types, constraints))
            .await?
            .map_err(ServiceError::Conflict)?;
        Ok(())
    }

    pub fn clique_types(&self) -> Vec<CliqueType> {
        self.sink().engine().clique_types().to_vec()
    }

    pub fn clique_type(&self, name: &str) -> Result<CliqueType, ServiceError> {
        self.clique_types()
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("no clique type `{name}`")))
    }

    /// Creates (`replace` false: 409 if the name is taken) or replaces a clique type.
    pub async fn put_clique_type(
        &self,
        who: &Principal,
        clique_type: CliqueType,
        replace: bool,
    ) -> Result<(), ServiceError> {
        who.require_admin()?;
        validate_name("clique type", &clique_type.name)?;
        clique_type
            .validate()
            .map_err(|err| ServiceError::BadRequest(err.to_string()))?;
        self.clique_rules_change(|types, _| {
            let existing = types.iter().position(|t| t.name == clique_type.name);
            match (existing, replace) {
                (Some(_), false) => Err(ServiceError::Conflict(format!(
                    "clique type `{}` exists; PUT /clique_types/{} replaces it",
                    clique_type.name, clique_type.name
                ))),
                (None, true) => Err(ServiceError::NotFound(format!(
                    "no clique type `{}`",
                    clique_type.name
                ))),
                (Some(index), true) => {
                    types[index] = clique_type;
                    Ok(())
                }
                (None, false) => {
                    types.push(clique_type);
                    Ok(())
                }
            }
        })
        .await
    }

    pub async fn delete_clique_type(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(), ServiceError> {
        who.require_admin()?;
        self.clique_rules_change(|types, _| {
            let before = types.len();
            types.retain(|t| t.name != name);
            if types.len() == before {
                Err(ServiceError::NotFound(format!("no clique type `{name}`")))
            } else {
                Ok(())
            }
        })
        .await
    }

    pub fn clique_constraints(&self) -> Vec<CliqueConstraint> {
        self.sink().engine().clique_constraints().to_vec()
    }

    /// Creates or replaces the constraint of a focal point type (in one environment or all).
    pub async fn put_clique_constraint(
        &self,
        who: &Principal,
        constraint: CliqueConstraint,
    ) -> Result<(), ServiceError> {
        who.require_admin()?;
        if constraint.constraints.is_empty()
            || constraint
                .constraints
                .iter()
                .any(|c| c.is_empty() || c.len() > 64)
        {
            return Err(ServiceError::BadRequest(
                "constraints must list 1 or more attribute names of 1 to 64 characters".into(),
            ));
        }
        if let Some(environment) = &constraint.environment {
            validate_name("environment", environment)?;
        }
        self.clique_rules_change(|_, constraints| {
            constraints.retain(|c| {
                c.focal_point_type != constraint.focal_point_type
                    || c.environment != constraint.environment
            });
            constraints.push(constraint);
            Ok(())
        })
        .await
    }

    pub async fn delete_clique_constraint(
        &self,
        who: &Principal,
        focal_point_type: ObjectType,
        environment: Option<&str>,
    ) -> Result<(), ServiceError> {
        who.require_admin()?;
        self.clique_rules_change(|_, constraints| {
            let before = constraints.len();
            constraints.retain(|c| {
                c.focal_point_type != focal_point_type || c.environment.as_deref() != environment
            });
            if constraints.len() == before {
                Err(ServiceError::NotFound(format!(
                    "no constraint for `{focal_point_type}`{}",
                    environment
                        .map(|e| format!(" in `{e}`"))
                        .unwrap_or_default()
                )))
            } else {
                Ok(())
            }
        })
        .await
    }

    fn environment_config(&self, name: &str) -> Option<EnvironmentConfig> {
        self.sink()
            .engine()
            .environment(name)
            .map(|env| env.config.clone())
    }

    pub fn environment_configs(&self, who: &Principal) -> Vec<EnvironmentView> {
        self.sink()
            .engine()
            .environments()
            .filter(|env| who.grants.can_view(&env.config.name))
            .map(|env| environment_view(&env.config))
            .collect()
    }

    pub fn environment(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<EnvironmentView, ServiceError> {
        who.require_view(name)?;
        self.environment_config(name)
            .map(|c| environment_view(&c))
            .ok_or_else(|| ServiceError::NotFound(format!("no environment `{name}`")))
    }

    /// POST (create: admin, 409 if it exists), PUT (replace: edit-env), PATCH (merge: edit-env).
    pub async fn write_environment(
        &self,
        who: &Principal,
        name: &str,
        input: EnvironmentInput,
        mode: WriteMode,
    ) -> Result<EnvironmentView, ServiceError> {
        validate_name("environment", name)?;
        let _serial = self.inner_settings_lock().await;
        let stored = self.environment_config(name);
        let config = match (mode, stored) {
            (WriteMode::Create, Some(_)) => {
                who.require_admin()?;
                return Err(ServiceError::Conflict(format!(
                    "environment `{name}` exists; PUT or PATCH /environment_configs/{name} changes it"
                )));
            }
            (WriteMode::Create, None) => {
                who.require_admin()?;
                let empty = EnvironmentConfig::named(name);
                merge_environment(empty.clone(), &empty, input)?
            }
            (_, None) => {
                who.require_edit(name)?;
                return Err(ServiceError::NotFound(format!("no environment `{name}`")));
            }
            (WriteMode::Replace, Some(stored)) => {
                who.require_edit(name)?;
                merge_environment(EnvironmentConfig::named(name), &stored, input)?
            }
            (WriteMode::Merge, Some(stored)) => {
                who.require_edit(name)?;
                merge_environment(stored.clone(), &stored, input)?
            }
        };
        let view = environment_view(&config);
        let health =
            crate::monitoring::health_overrides(&config).map_err(ServiceError::BadRequest)?;
        self.sink()
            .admin(AdminChange::Environment(config))
            .await?
            .map_err(ServiceError::Conflict)?;
        // The agents connected now take the environment's health settings at once; those that
        // connect later get them with their welcome.
        if let Some(ingest) = &self.inner.ingest {
            ingest.configure(name, &health);
        }
        Ok(view)
    }

    pub async fn delete_environment(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(), ServiceError> {
        who.require_admin()?;
        let _serial = self.inner_settings_lock().await;
        if self.environment_config(name).is_none() {
            return Err(ServiceError::NotFound(format!("no environment `{name}`")));
        }
        self.sink()
            .admin(AdminChange::RemoveEnvironment(name.to_owned()))
            .await?
            .map_err(ServiceError::Conflict)?;
        self.store().delete_environment(name).await?;
        Ok(())
    }

    pub async fn users(&self, who: &Principal) -> Result<Vec<UserView>, ServiceError> {
        who.require_admin()?;
        Ok(self.store().users().await?.iter().map(user_view).collect())
    }

    pub async fn user(&self, who: &Principal, username: &str) -> Result<UserView, ServiceError> {
        who.require_admin()?;
        self.store()
            .user(username)
            .await?
            .map(|u| user_view(&u))
            .ok_or_else(|| ServiceError::NotFound(format!("no user `{username}`")))
    }

    pub async fn put_user(
        &self,
        who: &Principal,
        username: &str,
        input: UserInput,
    ) -> Result<UserView, ServiceError> {
        who.require_admin()?;
        for environment in input.grants.view_env.iter().chain(&input.grants.edit_env) {
            validate_name("environment", environment)?;
        }
        let user = self
            .auth()
            .put_user(username, input.password.as_deref(), input.grants)
            .await?;
        Ok(user_view(&user))
    }

    pub async fn delete_user(&self, who: &Principal, username: &str) -> Result<(), ServiceError> {
        who.require_admin()?;
        if who.username == username {
            return Err(ServiceError::Conflict(
                "you cannot delete the account you are logged in with".into(),
            ));
        }
        self.auth().delete_user(username).await
    }
}

/// How an environment write treats what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Create,
    Replace,
    Merge,
}

fn user_view(user: &UserRecord) -> UserView {
    UserView {
        username: user.username.clone(),
        grants: user.grants.clone(),
        has_password: user.password_hash.is_some(),
        created_at: user.created_at.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> EnvironmentConfig {
        let mut config = EnvironmentConfig::named("lab");
        config.configuration.insert(
            "AMQP".into(),
            BTreeMap::from([
                ("host".into(), "10.0.0.1".into()),
                ("pwd".into(), "s3cret".into()),
            ]),
        );
        config
    }

    #[test]
    fn secrets_are_never_shown() {
        let view = environment_view(&stored());
        assert_eq!(view.secrets_set, vec!["AMQP.pwd".to_owned()]);
        let json = serde_json::to_string(&view).expect("serializes");
        assert!(!json.contains("s3cret"), "{json}");
    }

    #[test]
    fn a_secret_left_out_keeps_its_value() {
        let input = EnvironmentInput {
            configuration: Some(BTreeMap::from([(
                "AMQP".into(),
                BTreeMap::from([("host".into(), "10.0.0.2".into())]),
            )])),
            ..EnvironmentInput::default()
        };
        let merged = merge_environment(stored(), &stored(), input).expect("valid");
        let amqp = &merged.configuration["AMQP"];
        assert_eq!(amqp["host"], "10.0.0.2");
        assert_eq!(amqp["pwd"], "s3cret");
    }

    #[test]
    fn unknown_drivers_and_targets_are_refused_by_name() {
        let cases = [
            EnvironmentInput {
                mechanism_drivers: Some(vec!["OVN-ish".into()]),
                ..EnvironmentInput::default()
            },
            EnvironmentInput {
                configuration: Some(BTreeMap::from([("Sensu2".into(), BTreeMap::new())])),
                ..EnvironmentInput::default()
            },
            EnvironmentInput {
                distribution_version: Some("10".into()),
                ..EnvironmentInput::default()
            },
        ];
        for input in cases {
            let err = merge_environment(stored(), &stored(), input).expect_err("invalid");
            assert!(matches!(err, ServiceError::BadRequest(_)), "{err}");
        }
    }
}
