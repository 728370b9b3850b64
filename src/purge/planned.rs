//! An attempt at a batch under a deletion plan: two statements in one transaction (see
//! `statements`), the first deciding and doing the plan's work, the second deleting the
//! units. The batch commits only if the second deleted every unit the first cleared;
//! otherwise both are rolled back and the batch goes to the sweep, so that no dependent row
//! is ever deleted for a unit that stays.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use postgres::types::Type;
use postgres::{Client, Row};

use super::locks::AttemptRows;
use super::record::Recorder;
use super::statements::Attempt;
use crate::plan::Plan;
use crate::report::{Blocker, Dependents};

/// The two statements of an attempt under a plan.
pub struct Planned<'p> {
    plan: &'p Plan,
    first: String,
    second: String,
    /// The second statement takes request ids (role requests), not the units.
    by_request: bool,
}

/// A unit the first statement found blocked.
pub struct BlockedUnit {
    pub id: i64,
    pub user_id: Option<i64>,
    pub email: Option<String>,
    pub blockers: Vec<Blocker>,
}

/// What an attempt under a plan did.
#[derive(Default)]
pub struct PlannedRows {
    /// The deleted rows, in the shape of the single statement.
    pub deleted: Vec<Row>,
    /// Per deleted unit, the rows the plan deleted or nullified first.
    pub dependents: BTreeMap<i64, Vec<Dependents>>,
    pub blocked: Vec<BlockedUnit>,
    /// Ids left for the sweep.
    pub busy: Vec<i64>,
}

impl<'p> Planned<'p> {
    pub fn new(plan: &'p Plan, attempt: &Attempt, by_request: bool) -> Planned<'p> {
        Planned {
            plan,
            first: attempt.plan_statement(plan),
            second: attempt.statement(),
            by_request,
        }
    }

    /// Runs the attempt at `ids` (with `role` as `$2` for role work).
    pub fn run(
        &self,
        client: &mut Client,
        ids: &[i64],
        role: Option<&str>,
        recorder: &mut Recorder,
    ) -> Result<PlannedRows, postgres::Error> {
        let started = Instant::now();
        let result = self.run_transaction(client, ids, role);
        recorder.transaction_took(started.elapsed());
        result
    }

    fn run_transaction(
        &self,
        client: &mut Client,
        ids: &[i64],
        role: Option<&str>,
    ) -> Result<PlannedRows, postgres::Error> {
        let mut transaction = client.transaction()?;
        let first = query(&mut transaction, &self.first, ids, role)?;
        let decided = self.read_first(&first);
        let mut rows = PlannedRows {
            busy: decided.busy,
            blocked: decided.blocked,
            dependents: decided.dependents,
            deleted: Vec::new(),
        };
        let second_ids = if self.by_request {
            &decided.requests
        } else {
            &decided.cleared
        };
        if !second_ids.is_empty() {
            let second = query(&mut transaction, &self.second, second_ids, role)?;
            let attempted = AttemptRows::split(second);
            let deleted: BTreeSet<i64> = attempted.deleted.iter().map(|row| row.get(0)).collect();
            let cleared: BTreeSet<i64> = decided.cleared.iter().copied().collect();
            if deleted != cleared || !attempted.busy.is_empty() {
                // Dropping the transaction rolls the plan's work back with it.
                drop(transaction);
                return Ok(PlannedRows {
                    busy: ids.to_vec(),
                    ..PlannedRows::default()
                });
            }
            rows.deleted = attempted.deleted;
        }
        transaction.commit()?;
        rows.dependents
            .retain(|unit, _| rows.deleted.iter().any(|row| row.get::<_, i64>(0) == *unit));
        Ok(rows)
    }

    /// Reads the first statement's rows (see `Attempt::plan_statement`).
    fn read_first(&self, rows: &[Row]) -> Decided {
        let mut decided = Decided::default();
        for row in rows {
            let kind: &str = row.get(0);
            let id: i64 = row.get(1);
            match kind {
                "busy" => decided.busy.push(id),
                "cleared" => decided.cleared.push(id),
                "request" => decided.requests.push(id),
                _ => {
                    let outcome = read_outcome(self.plan, row);
                    if outcome.blockers.is_empty() {
                        decided.dependents.insert(id, outcome.dependents);
                    } else {
                        decided.blocked.push(outcome.into_blocked());
                    }
                }
            }
        }
        decided.blocked.sort_by_key(|unit| unit.id);
        decided
    }
}

/// What the first statement decided.
#[derive(Default)]
struct Decided {
    busy: Vec<i64>,
    cleared: Vec<i64>,
    requests: Vec<i64>,
    blocked: Vec<BlockedUnit>,
    dependents: BTreeMap<i64, Vec<Dependents>>,
}

/// One unit's row of `render::outcomes`, with names for the plan's indexes.
pub struct Outcome {
    pub id: i64,
    pub user_id: Option<i64>,
    pub email: Option<String>,
    pub blockers: Vec<Blocker>,
    pub dependents: Vec<Dependents>,
}

impl Outcome {
    pub fn into_blocked(self) -> BlockedUnit {
        BlockedUnit {
            id: self.id,
            user_id: self.user_id,
            email: self.email,
            blockers: self.blockers,
        }
    }
}

/// Reads a row of `render::outcomes` (kind, id, user id, email, edges, counts, tabs,
/// counts).
pub fn read_outcome(plan: &Plan, row: &Row) -> Outcome {
    let edges: Option<Vec<i32>> = row.get(4);
    let edge_counts: Option<Vec<i64>> = row.get(5);
    let tabs: Option<Vec<i32>> = row.get(6);
    let tab_counts: Option<Vec<i64>> = row.get(7);
    let blockers = edges
        .unwrap_or_default()
        .into_iter()
        .zip(edge_counts.unwrap_or_default())
        .filter_map(|(e, rows)| {
            let edge = plan.edges.get(usize::try_from(e).ok()?)?;
            Some(Blocker {
                key: edge.key.name.as_str().to_owned(),
                table: edge.key.child.display(),
                rows,
                unblock: edge.unblock(),
            })
        })
        .collect();
    let dependents = tabs
        .unwrap_or_default()
        .into_iter()
        .zip(tab_counts.unwrap_or_default())
        .filter_map(|(t, rows)| {
            let table = plan.tables.get(usize::try_from(t).ok()?)?;
            Some(Dependents {
                table: table.display(),
                rows,
            })
        })
        .collect();
    Outcome {
        id: row.get(1),
        user_id: row.get(2),
        email: row.get(3),
        blockers,
        dependents,
    }
}

/// Runs `sql` with the ids as `$1` and, for role work, the role as `$2`.
fn query(
    transaction: &mut postgres::Transaction,
    sql: &str,
    ids: &[i64],
    role: Option<&str>,
) -> Result<Vec<Row>, postgres::Error> {
    match role {
        Some(role) => {
            transaction.query_typed(sql, &[(&ids, Type::INT8_ARRAY), (&role, Type::TEXT)])
        }
        None => transaction.query_typed(sql, &[(&ids, Type::INT8_ARRAY)]),
    }
}
