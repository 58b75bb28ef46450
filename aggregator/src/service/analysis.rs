//! Analysis for the API: impact, diagnosis and path over the live model (see
//! [`crate::analysis`]), with access control, and for a diagnosis since when each finding has
//! held.

use calipso_proto::{LinkState, ObjectId, StatusLevel, Timestamp};

use super::inventory::environment_of;
use super::{Principal, Service, ServiceError};
use crate::analysis::{self, AnalysisError, Diagnosis, Impact, PathReport};
use crate::store::AgentState;

impl From<AnalysisError> for ServiceError {
    fn from(err: AnalysisError) -> Self {
        match err {
            AnalysisError::UnknownObject(_) | AnalysisError::NoClique(_) => {
                ServiceError::NotFound(err.to_string())
            }
            AnalysisError::Unsupported(_) => ServiceError::BadRequest(err.to_string()),
        }
    }
}

/// The most objects one impact question may name.
pub const MAX_IMPACT_OBJECTS: usize = 1000;

impl Service {
    /// What depends on `objects` (a host stands for everything on it).
    pub fn impact(
        &self,
        who: &Principal,
        environment: &str,
        objects: &[ObjectId],
    ) -> Result<Impact, ServiceError> {
        who.require_view(environment)?;
        if objects.is_empty() {
            return Err(ServiceError::BadRequest(
                "object: name at least one object id".into(),
            ));
        }
        if objects.len() > MAX_IMPACT_OBJECTS {
            return Err(ServiceError::BadRequest(format!(
                "object: at most {MAX_IMPACT_OBJECTS} objects, {} given (name a host for all its objects)",
                objects.len()
            )));
        }
        let engine = self.sink().engine();
        let env = environment_of(&engine, environment)?;
        Ok(analysis::impact(env, objects)?)
    }

    /// What is wrong in the clique of `focal_point`, ranked from the wire upward, each finding
    /// with since when it has held: a stale member since its host's agent disconnected, a
    /// status since its level last changed, a member down since its current version began.
    pub fn diagnosis(
        &self,
        who: &Principal,
        environment: &str,
        focal_point: &ObjectId,
    ) -> Result<Diagnosis, ServiceError> {
        who.require_view(environment)?;
        // The agents are read only if a finding is stale: most diagnoses have none.
        let mut disconnected: Option<Vec<(String, Timestamp)>> = None;
        let engine = self.sink().engine();
        let env = environment_of(&engine, environment)?;
        let mut diagnosis = analysis::diagnose(env, focal_point)?;
        for finding in &mut diagnosis.findings {
            let Some(node) = env.graph.get_by_text(&finding.id) else {
                continue;
            };
            let stale_since = node
                .object
                .host
                .as_deref()
                .filter(|_| node.stale)
                .and_then(|host| {
                    disconnected
                        .get_or_insert_with(|| self.disconnected_agents(environment))
                        .iter()
                        .find(|(h, _)| h == host)
                        .map(|(_, at)| *at)
                });
            let status = &node.object.status;
            let status_since = matches!(status.level, StatusLevel::Warning | StatusLevel::Error)
                .then(|| status.timestamp.unwrap_or(node.last_seen));
            let down_since = (node.object.attributes.link_state == Some(LinkState::Down))
                .then_some(node.last_seen);
            let starts = [stale_since, status_since, down_since];
            finding.since = starts.into_iter().flatten().min().map(|t| t.to_string());
        }
        Ok(diagnosis)
    }

    /// The hosts of an environment whose agents are disconnected, with when they went.
    fn disconnected_agents(&self, environment: &str) -> Vec<(String, Timestamp)> {
        self.sink()
            .agents()
            .into_iter()
            .filter(|a| a.environment == environment && a.state == AgentState::Disconnected)
            .map(|a| (a.host, a.last_seen))
            .collect()
    }

    /// The chain between two endpoints and where it breaks.
    pub fn path(
        &self,
        who: &Principal,
        environment: &str,
        from: &ObjectId,
        to: &ObjectId,
    ) -> Result<PathReport, ServiceError> {
        who.require_view(environment)?;
        if from == to {
            return Err(ServiceError::BadRequest(format!(
                "from and to are both `{from}`: a path needs two endpoints"
            )));
        }
        let engine = self.sink().engine();
        let env = environment_of(&engine, environment)?;
        Ok(analysis::path(env, from, to)?)
    }
}
