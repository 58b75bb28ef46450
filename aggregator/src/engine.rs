//! The engine: per environment, the graph, its links and its cliques, updated together by one
//! batch of object changes, reporting exactly what changed (for the store and the live stream).

use std::collections::BTreeMap;

use calipso_proto::{Object, ObjectId, StatusLevel};

use crate::cliques::{
    CliqueChanges, CliqueConstraint, CliqueSet, CliqueType, EnvironmentConfig, Plan,
};
use crate::graph::{Graph, Node};
use crate::links::{LinkChanges, LinkSet, Touched};

/// One change to an environment's objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Box<Node>),
    Remove(ObjectId),
}

/// An object before and after a change (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDiff {
    pub id: ObjectId,
    pub before: Option<Node>,
    pub after: Option<Node>,
}

/// Everything one batch changed in one environment.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    pub objects: Vec<ObjectDiff>,
    pub links: LinkChanges,
    pub cliques: CliqueChanges,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.links.is_empty() && self.cliques.is_empty()
    }

    /// Clique changes alone (a new plan or a rebuild).
    pub fn cliques_only(cliques: CliqueChanges) -> Self {
        Applied {
            cliques,
            ..Applied::default()
        }
    }

    /// How many object, link and clique versions it makes.
    pub fn change_count(&self) -> usize {
        self.objects.len() + self.links.len() + self.cliques.len()
    }
}

/// One environment's model.
#[derive(Debug)]
pub struct Environment {
    pub config: EnvironmentConfig,
    pub graph: Graph,
    pub links: LinkSet,
    pub cliques: CliqueSet,
}

impl Environment {
    /// Builds links and cliques of a graph from scratch.
    pub fn build(config: EnvironmentConfig, graph: Graph, plan: Plan) -> Self {
        let links = LinkSet::build(&graph);
        let cliques = CliqueSet::build(plan, &graph, &links);
        Environment {
            config,
            graph,
            links,
            cliques,
        }
    }

    /// Applies object changes and brings links and cliques up to date incrementally. A change
    /// of an object's status alone (a health check's verdict) that does not go into or out of
    /// error touches neither: links read a status only as "in error is down", and clique walks
    /// not at all, so most status churn costs the graph update only.
    pub fn apply(&mut self, changes: Vec<Change>) -> Applied {
        let mut touched = Vec::with_capacity(changes.len());
        let mut objects = Vec::with_capacity(changes.len());
        for change in changes {
            let (id, after) = match change {
                Change::Upsert(node) => (node.id().clone(), Some(*node)),
                Change::Remove(id) => (id, None),
            };
            let before = self.graph.get(&id);
            let unchanged = match (before, &after) {
                (Some(b), Some(a)) => b.object == a.object && b.stale == a.stale,
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                continue;
            }
            let status_only = match (before, &after) {
                (Some(b), Some(a)) => {
                    b.stale == a.stale && differs_in_status_only(&b.object, &a.object)
                }
                _ => false,
            };
            if !status_only {
                touched.push(Touched::before(id.clone(), before));
            }
            let before = match &after {
                Some(node) => self.graph.upsert(node.clone()),
                None => self.graph.remove(&id),
            };
            objects.push(ObjectDiff { id, before, after });
        }
        if touched.is_empty() {
            return Applied {
                objects,
                ..Applied::default()
            };
        }
        let links = self.links.update(&self.graph, &touched);
        let ids: Vec<ObjectId> = touched.into_iter().map(|t| t.id).collect();
        let cliques = self.cliques.update(&self.graph, &self.links, &ids, &links);
        Applied {
            objects,
            links,
            cliques,
        }
    }
}

/// Whether two versions of an object differ in their status and nothing else that links or
/// cliques read: a status in error makes the object's links down (`Node::state`), so a change
/// into or out of error is not one of these.
fn differs_in_status_only(before: &Object, after: &Object) -> bool {
    let in_error = |object: &Object| object.status.level == StatusLevel::Error;
    before.status != after.status && in_error(before) == in_error(after) && {
        let mut same_status = before.clone();
        same_status.status = after.status.clone();
        same_status == *after
    }
}

impl Environment {
    /// Rebuilds the cliques from scratch ("cliques only"), returning what differs from the
    /// incrementally maintained ones (nothing, unless something is wrong).
    pub fn rebuild_cliques(&mut self) -> CliqueChanges {
        let plan = self.cliques.plan().clone();
        self.cliques.replan(plan, &self.graph, &self.links)
    }

    /// Rebuilds links and cliques from scratch ("links only" implies the cliques over them),
    /// returning what differs from the incrementally maintained ones.
    pub fn rebuild_links(&mut self) -> Applied {
        let mut links = LinkSet::build(&self.graph);
        std::mem::swap(&mut links, &mut self.links);
        let mut changes = LinkChanges::default();
        for link in self.links.links() {
            changes.record(links.get(&crate::links::LinkKey::of(link)), link);
        }
        for old in links.links() {
            let key = crate::links::LinkKey::of(old);
            if self.links.get(&key).is_none() {
                changes.removed.push(key);
            }
        }
        changes.sort();
        Applied {
            objects: Vec::new(),
            links: changes,
            cliques: self.rebuild_cliques(),
        }
    }
}

/// Every environment, and the clique types and constraints they choose from.
#[derive(Debug, Default)]
pub struct Engine {
    environments: BTreeMap<String, Environment>,
    clique_types: Vec<CliqueType>,
    constraints: Vec<CliqueConstraint>,
}

impl Engine {
    pub fn new(clique_types: Vec<CliqueType>, constraints: Vec<CliqueConstraint>) -> Self {
        Engine {
            environments: BTreeMap::new(),
            clique_types,
            constraints,
        }
    }

    fn plan(&self, config: &EnvironmentConfig) -> Plan {
        Plan::choose(config, &self.clique_types, &self.constraints)
    }

    /// Adds an environment with its objects (as loaded from the store), building links and
    /// cliques from scratch.
    pub fn load(&mut self, config: EnvironmentConfig, nodes: impl IntoIterator<Item = Node>) {
        let mut graph = Graph::new();
        for node in nodes {
            graph.upsert(node);
        }
        let plan = self.plan(&config);
        let name = config.name.clone();
        self.environments
            .insert(name, Environment::build(config, graph, plan));
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }

    pub fn environment_mut(&mut self, name: &str) -> Option<&mut Environment> {
        self.environments.get_mut(name)
    }

    /// Removes an environment; refused while it holds objects (they belong to agents, which
    /// would recreate it with their next delta).
    pub fn remove_environment(&mut self, name: &str) -> Result<(), String> {
        match self.environments.get(name) {
            None => Err(format!("no environment `{name}`")),
            Some(env) if !env.graph.is_empty() => Err(format!(
                "environment `{name}` still holds {} objects; remove or move its hosts first",
                env.graph.len()
            )),
            Some(_) => {
                self.environments.remove(name);
                Ok(())
            }
        }
    }

    pub fn environments(&self) -> impl Iterator<Item = &Environment> {
        self.environments.values()
    }

    pub fn clique_types(&self) -> &[CliqueType] {
        &self.clique_types
    }

    pub fn clique_constraints(&self) -> &[CliqueConstraint] {
        &self.constraints
    }

    /// Whether `name` is new to the engine (its configuration has to be stored).
    pub fn ensure_environment(&mut self, name: &str) -> bool {
        if self.environments.contains_key(name) {
            return false;
        }
        self.load(EnvironmentConfig::named(name), []);
        true
    }

    /// Applies object changes to an environment (created if new).
    pub fn apply(&mut self, environment: &str, changes: Vec<Change>) -> Applied {
        self.ensure_environment(environment);
        match self.environments.get_mut(environment) {
            Some(env) => env.apply(changes),
            None => Applied::default(),
        }
    }

    /// Replaces the clique types and constraints; returns the cliques that changed, per
    /// environment.
    pub fn set_clique_rules(
        &mut self,
        clique_types: Vec<CliqueType>,
        constraints: Vec<CliqueConstraint>,
    ) -> Vec<(String, CliqueChanges)> {
        self.clique_types = clique_types;
        self.constraints = constraints;
        self.replan_all()
    }

    /// Replaces an environment's configuration (which may choose other clique types).
    pub fn set_config(&mut self, config: EnvironmentConfig) -> CliqueChanges {
        self.ensure_environment(&config.name);
        let plan = self.plan(&config);
        match self.environments.get_mut(&config.name) {
            Some(env) => {
                env.config = config;
                env.cliques.replan(plan, &env.graph, &env.links)
            }
            None => CliqueChanges::default(),
        }
    }

    fn replan_all(&mut self) -> Vec<(String, CliqueChanges)> {
        let plans: Vec<(String, Plan)> = self
            .environments
            .iter()
            .map(|(name, env)| (name.clone(), self.plan(&env.config)))
            .collect();
        let mut out = Vec::new();
        for (name, plan) in plans {
            if let Some(env) = self.environments.get_mut(&name) {
                let changes = env.cliques.replan(plan, &env.graph, &env.links);
                out.push((name, changes));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use calipso_proto::{ObjectType, Status, StatusLevel, Timestamp};

    use super::*;
    use crate::cliques::{default_clique_constraints, default_clique_types};
    use crate::synthetic::{Layout, host_objects};

    /// Two synthetic OVS hosts with their VMs, links and cliques.
    fn environment() -> Environment {
        let mut engine = Engine::new(default_clique_types(), default_clique_constraints());
        let layout = Layout::with_objects_per_host(2, 60);
        let objects = (0..2).flat_map(|index| host_objects("lab", index, &layout));
        let at = Timestamp::from_unix_micros(1);
        engine.load(
            EnvironmentConfig::named("lab"),
            objects.map(|object| Node::new(object, at)),
        );
        engine.environments.remove("lab").expect("loaded")
    }

    #[test]
    fn a_status_change_short_of_error_is_an_object_change_and_nothing_else() {
        let mut env = environment();
        let vnic = env
            .graph
            .nodes()
            .find(|n| n.object_type() == ObjectType::Vnic)
            .expect("a vNIC")
            .clone();
        assert!(
            env.cliques.cliques().any(|c| c.nodes.contains(vnic.id())),
            "the vNIC is in some clique"
        );
        let with_status = |level, text: &str| {
            let mut node = vnic.clone();
            node.object.status = Status {
                level,
                text: text.into(),
                ..Status::default()
            };
            Change::Upsert(Box::new(node))
        };
        let applied = env.apply(vec![with_status(StatusLevel::Warning, "3.0 drops/s")]);
        assert_eq!(applied.objects.len(), 1);
        assert!(applied.links.is_empty() && applied.cliques.is_empty());
        assert_eq!(
            env.graph.get(vnic.id()).map(|n| n.object.status.level),
            Some(StatusLevel::Warning)
        );
        // What was skipped is what a full rebuild finds unchanged.
        assert!(env.rebuild_links().is_empty());

        // Into error: the vNIC's links go down (tap to VM, tap to bridge).
        let applied = env.apply(vec![with_status(StatusLevel::Error, "down: no carrier")]);
        assert_eq!(
            applied.links.flipped.len(),
            2,
            "{:?}",
            applied.links.flipped
        );
        assert!(env.rebuild_links().is_empty());
        // Another error text: nothing but the object again.
        let applied = env.apply(vec![with_status(
            StatusLevel::Error,
            "administratively down",
        )]);
        assert!(applied.links.is_empty() && applied.cliques.is_empty());
        assert!(env.rebuild_links().is_empty());
    }
}
