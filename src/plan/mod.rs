//! The deletion plan: every foreign key that deleting a unit of work (a user, a role profile)
//! reaches, directly or through the rows that cascades and the plan itself delete in turn, and
//! what the job does about each key.
//!
//! PostgreSQL handles a key whose `ON DELETE` is CASCADE (it deletes the referencing rows) or
//! SET NULL / SET DEFAULT on columns that accept it (it changes them). Any other key
//! **blocks** when a referencing row exists that the deletion does not remove anyway: NO
//! ACTION, RESTRICT, SET NULL on a NOT NULL column, SET DEFAULT. What the job does with a
//! blocking key is the operator's policy (`--foreign-keys`, `--foreign-key`):
//!
//! - `block`: the unit is not deleted, and reported with every key that blocks it;
//! - `delete`: the referencing rows are deleted first, as `ON DELETE CASCADE` would, and the
//!   keys of the tables they are in are followed in turn;
//! - `nullify`: the referencing columns are set to NULL first.
//!
//! Whatever the policy, the plan never deletes a `users` row that is not the unit itself: a
//! key from `users` that a deletion would cascade into blocks, unless it is set to `nullify`.
//! Nor does it delete or change `account_deletion_requests` rows before the unit's own
//! statement, which judges the unit by them: in an account plan the requests' key to `users`
//! is carried out by that statement (see `purge::statements`), any other key into the
//! requests table blocks.
//!
//! The plan is built once per run from the catalog ([`catalog`]) and rendered as SQL by
//! [`render`]: the set of rows each unit's deletion reaches, table by table, and from it the
//! keys that block, the rows to delete or nullify first, and their counts.

pub mod catalog;
pub mod dot;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use anyhow::bail;

use crate::sql::Ident;
use catalog::{ForeignKey, OnDelete, Table};

/// What to do with every blocking key (`--foreign-keys`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyPolicy {
    /// Report the unit as blocked; change nothing of it.
    #[default]
    Block,
    /// Delete the referencing rows first, as a cascade would.
    Delete,
}

impl FromStr for KeyPolicy {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<KeyPolicy, &'static str> {
        match text {
            "block" => Ok(KeyPolicy::Block),
            "delete" => Ok(KeyPolicy::Delete),
            _ => Err("block, delete"),
        }
    }
}

/// What to do with one key (`--foreign-key [TABLE.]CONSTRAINT=ACTION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Block,
    Delete,
    Nullify,
}

impl FromStr for RuleAction {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<RuleAction, &'static str> {
        match text {
            "block" => Ok(RuleAction::Block),
            "delete" => Ok(RuleAction::Delete),
            "nullify" => Ok(RuleAction::Nullify),
            _ => Err("block, delete, nullify"),
        }
    }
}

/// One `--foreign-key` rule, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRule {
    /// The referencing table, if given: `name` or `schema.name`.
    pub table: Option<String>,
    pub constraint: String,
    pub action: RuleAction,
}

impl FromStr for KeyRule {
    type Err = String;

    fn from_str(text: &str) -> Result<KeyRule, String> {
        let (name, action) = text
            .rsplit_once('=')
            .ok_or("expected [TABLE.]CONSTRAINT=block|delete|nullify")?;
        let action = action
            .trim()
            .parse()
            .map_err(|expected| format!("unknown action {action:?} (expected {expected})"))?;
        let name = name.trim();
        let (table, constraint) = match name.rsplit_once('.') {
            Some((table, constraint)) => (Some(table.to_owned()), constraint),
            None => (None, name),
        };
        if constraint.is_empty() || table.as_deref() == Some("") {
            return Err("expected [TABLE.]CONSTRAINT=block|delete|nullify".to_owned());
        }
        Ok(KeyRule {
            table,
            constraint: constraint.to_owned(),
            action,
        })
    }
}

/// The operator's policy for blocking keys: the default, and the rules per key.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub default: KeyPolicy,
    pub rules: Vec<KeyRule>,
}

/// Why a key blocks, which also says what would unblock it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocks {
    /// A blocking key under `--foreign-keys block`.
    Policy,
    /// A `--foreign-key ...=block` rule.
    Rule,
    /// Following it would delete another user's row.
    OtherUser,
    /// Following it would delete or change deletion requests before the unit is judged.
    Requests,
}

/// What the deletion does about one key on its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// PostgreSQL deletes the referencing rows (`ON DELETE CASCADE`).
    Cascade,
    /// PostgreSQL sets the referencing columns to NULL or their default, which the key accepts.
    Changed,
    /// The plan deletes the referencing rows first.
    Delete,
    /// The plan sets the referencing columns to NULL first.
    Nullify,
    /// Referencing rows the deletion does not remove block the unit.
    Block(Blocks),
}

impl Treatment {
    /// Whether the referencing rows are deleted along with the unit.
    pub fn deletes(self) -> bool {
        matches!(self, Treatment::Cascade | Treatment::Delete)
    }
}

/// A key on the deletion path, between two tables of the plan (indexes into
/// [`Plan::tables`]).
#[derive(Clone, Debug)]
pub struct Edge {
    pub key: ForeignKey,
    pub parent: usize,
    pub child: usize,
    pub treatment: Treatment,
}

impl Edge {
    /// `table.constraint`, as `--foreign-key` takes it.
    pub fn rule_name(&self) -> String {
        format!("{}.{}", self.key.child.display(), self.key.name.as_str())
    }

    /// What would unblock a unit this edge blocks.
    pub fn unblock(&self) -> String {
        let rule = self.rule_name();
        match self.treatment {
            Treatment::Block(Blocks::Policy) => {
                format!("--foreign-keys delete (or --foreign-key {rule}=delete or =nullify)")
            }
            Treatment::Block(Blocks::Rule) => {
                format!("--foreign-key {rule}=delete or =nullify (now =block)")
            }
            Treatment::Block(Blocks::OtherUser) => format!(
                "--foreign-key {rule}=nullify (following it would delete another user's row)"
            ),
            Treatment::Block(Blocks::Requests) => format!(
                "ALTER TABLE {} ... ON DELETE CASCADE for {} (the job changes no deletion \
                 request before the unit is judged)",
                self.key.child.display(),
                self.key.name.as_str()
            ),
            _ => String::new(),
        }
    }
}

/// The deletion plan of one kind of unit: rooted at the table whose rows are the units.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The tables the deletion reaches; `tables[0]` is the root.
    pub tables: Vec<Table>,
    /// Every key whose referenced table the deletion removes rows from.
    pub edges: Vec<Edge>,
    /// The tables whose rows the deletion removes (the root, and the children of deleting
    /// keys).
    pub deleted_from: BTreeSet<usize>,
    /// The tables whose reached rows the SQL must compute, in dependency order: groups of
    /// tables that reach each other (a self-reference, a cycle) form one component.
    pub components: Vec<Vec<usize>>,
    /// The index of `account_deletion_requests`, for an account plan whose units' requests
    /// the unit's own statement deletes or nullifies (see `purge::statements`).
    pub requests_edge: Option<usize>,
    /// The `users` table's oid.
    users_oid: u32,
}

/// The tables the plan is built around.
pub struct Roots<'a> {
    /// The units' table: `users` for accounts, a profile table for roles.
    pub root: &'a Table,
    pub users_oid: u32,
    /// `account_deletion_requests`, if it exists.
    pub requests_oid: Option<u32>,
}

impl Plan {
    /// The plan for deleting rows of `roots.root`, with `keys` the database's foreign keys.
    pub fn build(keys: &[ForeignKey], roots: &Roots, policy: &Policy) -> anyhow::Result<Plan> {
        let rules = resolve_rules(keys, &policy.rules)?;
        let mut plan = Plan {
            tables: vec![roots.root.clone()],
            edges: Vec::new(),
            deleted_from: BTreeSet::from([0]),
            components: Vec::new(),
            requests_edge: None,
            users_oid: roots.users_oid,
        };
        let mut queue = vec![0usize];
        while let Some(parent) = queue.pop() {
            let parent_oid = plan.tables[parent].oid;
            for (index, key) in keys.iter().enumerate() {
                if key.parent.oid != parent_oid {
                    continue;
                }
                let child = plan.table_index(&key.child);
                let treatment = treat(
                    key,
                    rules.get(&index).copied(),
                    policy.default,
                    roots,
                    parent,
                );
                if treatment.deletes() && plan.deleted_from.insert(child) {
                    queue.push(child);
                }
                let is_requests_edge = roots.root.oid == roots.users_oid
                    && parent == 0
                    && Some(key.child.oid) == roots.requests_oid;
                if is_requests_edge && matches!(treatment, Treatment::Delete | Treatment::Nullify) {
                    plan.requests_edge = Some(plan.edges.len());
                }
                plan.edges.push(Edge {
                    key: key.clone(),
                    parent,
                    child,
                    treatment,
                });
            }
        }
        plan.components = plan.order_needed();
        Ok(plan)
    }

    fn table_index(&mut self, table: &Table) -> usize {
        match self.tables.iter().position(|known| known.oid == table.oid) {
            Some(index) => index,
            None => {
                self.tables.push(table.clone());
                self.tables.len() - 1
            }
        }
    }

    /// Whether the deletion needs nothing beyond a plain DELETE: no key blocks, none is
    /// carried out by the plan, and no row is reached both by a cascade and by a key
    /// PostgreSQL would check (whose order among the triggers is not ours to choose).
    pub fn is_plain(&self) -> bool {
        self.components.is_empty()
    }

    /// Whether the plan's own changes and the units' deletion can share one statement: no
    /// row is changed by both (two changes of one row in one statement keep only one). The
    /// units' statement marks requests completed, and role work removes the role from
    /// `users`: a plan that changes requests (the account's own key) or, for roles,
    /// nullifies `users` rows, needs a statement of its own first.
    pub fn fits_one_statement(&self, role_work: bool) -> bool {
        let nullifies_users = self.edges.iter().any(|edge| {
            edge.treatment == Treatment::Nullify && edge.key.child.oid == self.users_oid
        });
        self.requests_edge.is_none() && !(role_work && nullifies_users)
    }

    /// The edges whose referencing rows the SQL must look at: those that block, and those the
    /// plan carries out.
    pub fn acting_edges(&self) -> impl Iterator<Item = (usize, &Edge)> {
        self.edges.iter().enumerate().filter(|(_, edge)| {
            matches!(
                edge.treatment,
                Treatment::Block(_) | Treatment::Delete | Treatment::Nullify
            )
        })
    }

    /// The edges that block.
    pub fn blocking_edges(&self) -> impl Iterator<Item = (usize, &Edge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(|(_, edge)| matches!(edge.treatment, Treatment::Block(_)))
    }

    /// The deleting edges into `table` (how its rows join the deletion).
    pub fn deleting_edges_into(&self, table: usize) -> impl Iterator<Item = (usize, &Edge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, edge)| edge.child == table && edge.treatment.deletes())
    }

    /// The tables whose reached rows the plan deletes itself, before the unit: the children
    /// of `Delete` keys, and tables a cascade reaches whose rows a blocking key also
    /// references (deleted first so that no check or SET NULL trigger sees them).
    pub fn deleted_first(&self) -> BTreeSet<usize> {
        self.edges
            .iter()
            .filter(|edge| match edge.treatment {
                Treatment::Delete => true,
                Treatment::Block(_) => self.deleted_from.contains(&edge.child),
                _ => false,
            })
            .map(|edge| edge.child)
            .filter(|&table| {
                self.requests_edge
                    .is_none_or(|e| self.edges[e].child != table)
            })
            .collect()
    }

    /// The tables whose reached rows the SQL computes: the parents of acting edges, the
    /// children of acting edges that the deletion removes rows from, and every table on the
    /// way to them; ordered so that a table comes after those its rows are reached through.
    fn order_needed(&self) -> Vec<Vec<usize>> {
        let mut needed = BTreeSet::new();
        for (_, edge) in self.acting_edges() {
            needed.insert(edge.parent);
            if self.deleted_from.contains(&edge.child) {
                needed.insert(edge.child);
            }
        }
        if needed.is_empty() {
            return Vec::new();
        }
        needed.insert(0);
        let mut stack: Vec<usize> = needed.iter().copied().collect();
        while let Some(table) = stack.pop() {
            for (_, edge) in self.deleting_edges_into(table) {
                if needed.insert(edge.parent) {
                    stack.push(edge.parent);
                }
            }
        }
        let successors: BTreeMap<usize, Vec<usize>> = needed
            .iter()
            .map(|&table| {
                let children = self
                    .edges
                    .iter()
                    .filter(|e| e.parent == table && e.treatment.deletes())
                    .map(|e| e.child)
                    .filter(|child| needed.contains(child))
                    .collect();
                (table, children)
            })
            .collect();
        strongly_connected_in_order(&successors)
    }

    /// Whether `table` reaches itself through deleting keys (a self-reference or a cycle).
    pub fn is_recursive(&self, component: &[usize]) -> bool {
        component.len() > 1
            || self.edges.iter().any(|edge| {
                edge.treatment.deletes()
                    && edge.parent == component[0]
                    && edge.child == component[0]
            })
    }

    /// The columns of `table` that keys on the path reference, with their SQL types, in a
    /// fixed order.
    pub fn referenced_columns(&self, table: usize) -> Vec<(Ident, String)> {
        let mut columns: Vec<(Ident, String)> = Vec::new();
        for edge in self.edges.iter().filter(|edge| edge.parent == table) {
            for (name, type_name) in edge.key.parent_columns.iter().zip(&edge.key.parent_types) {
                if !columns.iter().any(|(known, _)| known == name) {
                    columns.push((name.clone(), type_name.clone()));
                }
            }
        }
        columns
    }
}

/// Whether the key's action makes a referencing row block, policies aside.
fn blocking_action(key: &ForeignKey) -> bool {
    match key.on_delete {
        OnDelete::Cascade => false,
        OnDelete::NoAction | OnDelete::Restrict => true,
        OnDelete::SetNull => key.set_null_violates_not_null(),
        OnDelete::SetDefault => !default_keeps_key(key),
    }
}

/// Whether SET DEFAULT leaves a referencing row valid: some changed column becomes NULL (a
/// key with a NULL column references nothing) and accepts it. A non-NULL default would have
/// to name a row that exists, which the job does not evaluate: such a key counts as blocking.
fn default_keeps_key(key: &ForeignKey) -> bool {
    key.columns
        .iter()
        .filter(|column| key.set_columns.contains(&column.name))
        .any(|column| {
            let becomes_null = column
                .default
                .as_deref()
                .is_none_or(|default| default.to_ascii_uppercase().starts_with("NULL"));
            becomes_null && !column.not_null
        })
}

fn treat(
    key: &ForeignKey,
    rule: Option<RuleAction>,
    default: KeyPolicy,
    roots: &Roots,
    parent: usize,
) -> Treatment {
    let treatment = match (rule, key.on_delete, blocking_action(key)) {
        (Some(RuleAction::Block), _, _) => Treatment::Block(Blocks::Rule),
        (Some(RuleAction::Nullify), _, _) => Treatment::Nullify,
        (Some(RuleAction::Delete), OnDelete::Cascade, _) => Treatment::Cascade,
        (Some(RuleAction::Delete), _, _) => Treatment::Delete,
        (None, OnDelete::Cascade, _) => Treatment::Cascade,
        (None, _, false) => Treatment::Changed,
        (None, _, true) if default == KeyPolicy::Delete => Treatment::Delete,
        (None, _, true) => Treatment::Block(Blocks::Policy),
    };
    // Following a key into users deletes another user's row (the unit's own row is deleted
    // anyway, and never counts as blocking): only nullify may go past it.
    let into_users = key.child.oid == roots.users_oid;
    if into_users && (treatment.deletes() || treatment == Treatment::Block(Blocks::Policy)) {
        return Treatment::Block(Blocks::OtherUser);
    }
    let into_requests = Some(key.child.oid) == roots.requests_oid;
    let own_requests = roots.root.oid == roots.users_oid && parent == 0;
    if into_requests && !own_requests && matches!(treatment, Treatment::Delete | Treatment::Nullify)
    {
        return Treatment::Block(Blocks::Requests);
    }
    treatment
}

/// Matches each rule to the one key it names; an unknown or ambiguous name, or `nullify` of
/// a NOT NULL column, is a configuration error. Returns the action per key index.
fn resolve_rules(
    keys: &[ForeignKey],
    rules: &[KeyRule],
) -> anyhow::Result<BTreeMap<usize, RuleAction>> {
    let mut resolved = BTreeMap::new();
    for rule in rules {
        let matches: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.name.as_str() == rule.constraint)
            .filter(|(_, key)| {
                rule.table.as_deref().is_none_or(|table| {
                    table == key.child.name.as_str()
                        || table
                            == format!("{}.{}", key.child.schema.as_str(), key.child.name.as_str())
                })
            })
            .map(|(index, _)| index)
            .collect();
        let shown = match &rule.table {
            Some(table) => format!("{table}.{}", rule.constraint),
            None => rule.constraint.clone(),
        };
        let index = match matches.as_slice() {
            [] => bail!("--foreign-key {shown}: no such foreign key in the database"),
            [index] => *index,
            _ => bail!(
                "--foreign-key {shown}: {} tables have a foreign key of that name; write it \
                 as TABLE.{}",
                matches.len(),
                rule.constraint
            ),
        };
        let key = &keys[index];
        if rule.action == RuleAction::Nullify
            && let Some(column) = key.columns.iter().find(|column| column.not_null)
        {
            bail!(
                "--foreign-key {shown}=nullify: column {}.{} is NOT NULL",
                key.child.display(),
                column.name.as_str()
            );
        }
        if resolved.insert(index, rule.action).is_some() {
            bail!("--foreign-key {shown} given more than once");
        }
    }
    Ok(resolved)
}

/// The strongly connected components of the graph `successors`, each listed after every
/// component with an edge into it (Tarjan's algorithm finds them in reverse order).
fn strongly_connected_in_order(successors: &BTreeMap<usize, Vec<usize>>) -> Vec<Vec<usize>> {
    struct State<'a> {
        successors: &'a BTreeMap<usize, Vec<usize>>,
        index: BTreeMap<usize, usize>,
        low: BTreeMap<usize, usize>,
        stack: Vec<usize>,
        on_stack: BTreeSet<usize>,
        components: Vec<Vec<usize>>,
    }
    fn visit(state: &mut State, node: usize) {
        let number = state.index.len();
        state.index.insert(node, number);
        state.low.insert(node, number);
        state.stack.push(node);
        state.on_stack.insert(node);
        for &next in state.successors.get(&node).into_iter().flatten() {
            if !state.index.contains_key(&next) {
                visit(state, next);
                let low = state.low[&node].min(state.low[&next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(&next) {
                let low = state.low[&node].min(state.index[&next]);
                state.low.insert(node, low);
            }
        }
        if state.low[&node] == state.index[&node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(&member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            component.sort_unstable();
            state.components.push(component);
        }
    }
    let mut state = State {
        successors,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in successors.keys() {
        if !state.index.contains_key(&node) {
            visit(&mut state, node);
        }
    }
    state.components.reverse();
    state.components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_come_after_their_parents() {
        // 0 -> 1 -> 2 -> 1 (a cycle), 0 -> 3, 3 -> 3 (a self-reference), 2 -> 4.
        let successors = BTreeMap::from([
            (0, vec![1, 3]),
            (1, vec![2]),
            (2, vec![1, 4]),
            (3, vec![3]),
            (4, vec![]),
        ]);
        let components = strongly_connected_in_order(&successors);
        let position = |table: usize| {
            components
                .iter()
                .position(|component| component.contains(&table))
                .unwrap()
        };
        assert_eq!(components.len(), 4);
        assert!(components.contains(&vec![1, 2]));
        assert!(position(0) < position(1));
        assert!(position(1) < position(4));
        assert!(position(0) < position(3));
    }

    #[test]
    fn rules_are_read_from_the_command_line_form() {
        let rule: KeyRule = "chat_messages.chat_messages_sender_fkey=nullify"
            .parse()
            .unwrap();
        assert_eq!(rule.table.as_deref(), Some("chat_messages"));
        assert_eq!(rule.constraint, "chat_messages_sender_fkey");
        assert_eq!(rule.action, RuleAction::Nullify);
        let rule: KeyRule = "otps_user_id_fkey=delete".parse().unwrap();
        assert_eq!(rule.table, None);
        assert!("otps_user_id_fkey=drop".parse::<KeyRule>().is_err());
        assert!("otps_user_id_fkey".parse::<KeyRule>().is_err());
        assert!("=delete".parse::<KeyRule>().is_err());
    }
}
