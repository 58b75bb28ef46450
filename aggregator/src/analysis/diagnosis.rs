//! Diagnosis (root cause): the members of a clique that are down, stale, or whose health is
//! warning or error, ranked from the wire upward — the first finding is the likeliest cause of
//! what the focal point suffers, since everything above it depends on it.

use calipso_proto::{LinkState, ObjectId, StatusLevel};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AnalysisError, Hop, chain_in_clique, rank_from_the_wire};
use crate::engine::Environment;
use crate::graph::Node;

/// A member of the clique that is not well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Finding {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    pub name: String,
    /// What is wrong: `stale` (its host's agent is away), `down`, `status warning: …`,
    /// `status error: …`.
    pub problems: Vec<String>,
    /// From this member up to the focal point, over the clique's links.
    pub path: Vec<Hop>,
    /// Since when the member has been in this condition (RFC 3339), from history; absent when
    /// history does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// What is wrong in one clique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Diagnosis {
    pub focal_point: String,
    pub clique_type: String,
    /// One sentence: the first cause, or that nothing is wrong.
    pub summary: String,
    /// Ranked from the wire upward: switch ports, physical NICs, tunnel endpoints, vswitches,
    /// bridges, vNICs, networks, then the focal point itself.
    pub findings: Vec<Finding>,
}

/// Whether a node is wrong, and how.
pub(crate) fn problems_of(node: &Node) -> Vec<String> {
    let mut problems = Vec::new();
    if node.stale {
        problems.push("stale".to_owned());
    }
    if node.object.attributes.link_state == Some(LinkState::Down) {
        problems.push("down".to_owned());
    }
    let status = &node.object.status;
    if matches!(status.level, StatusLevel::Warning | StatusLevel::Error) {
        let text = if status.text.is_empty() {
            String::new()
        } else {
            format!(": {}", status.text)
        };
        problems.push(format!("status {}{text}", status.level.as_str()));
    }
    problems
}

/// What is wrong in the clique of `focal_point`.
pub fn diagnose(env: &Environment, focal_point: &ObjectId) -> Result<Diagnosis, AnalysisError> {
    if !env.graph.contains(focal_point) {
        return Err(AnalysisError::UnknownObject(focal_point.clone()));
    }
    let clique = env
        .cliques
        .get(focal_point)
        .ok_or_else(|| AnalysisError::NoClique(focal_point.clone()))?;
    let mut ranked: Vec<(u8, usize, Finding)> = Vec::new();
    for id in clique.nodes.iter() {
        let Some(node) = env.graph.get(id) else {
            continue;
        };
        let problems = problems_of(node);
        if problems.is_empty() {
            continue;
        }
        let path = chain_in_clique(env, clique, &[id], focal_point).unwrap_or_default();
        let distance = path.len();
        ranked.push((
            rank_from_the_wire(node.object_type()),
            usize::MAX - distance,
            Finding {
                id: id.to_string(),
                object_type: node.object_type().to_string(),
                name: node.object.name.to_string(),
                problems,
                path,
                since: None,
            },
        ));
    }
    ranked.sort_by(|a, b| (a.0, a.1, &a.2.id).cmp(&(b.0, b.1, &b.2.id)));
    let findings: Vec<Finding> = ranked.into_iter().map(|(_, _, f)| f).collect();
    let summary = match findings.first() {
        None => format!(
            "nothing is wrong in the clique of `{focal_point}`: its {} members are up, fresh and healthy",
            clique.nodes.len()
        ),
        Some(first) => format!(
            "{} of {} members are not well; first cause: {} `{}` ({}), {} hops from `{focal_point}`",
            findings.len(),
            clique.nodes.len(),
            first.object_type,
            first.id,
            first.problems.join(", "),
            first.path.len().saturating_sub(1),
        ),
    };
    Ok(Diagnosis {
        focal_point: focal_point.to_string(),
        clique_type: clique.clique_type.clone(),
        summary,
        findings,
    })
}
