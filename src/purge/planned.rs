//! An attempt at a batch under a deletion plan. When the plan's changes and the units'
//! deletion never touch the same row, it is one statement (see `statements`): the plan's
//! work for the units it clears, then their deletion, which fails the statement should it
//! leave out one of them. Otherwise it is two statements in one transaction, the first
//! deciding and doing the plan's work, the second deleting the units; the batch commits only
//! if the second deleted every unit the first cleared, else both are rolled back and the
//! batch goes to the sweep. Either way no dependent row is ever deleted for a unit that
//! stays.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use postgres::types::Type;
use postgres::{Client, GenericClient, Row};

use super::locks::AttemptRows;
use super::record::Recorder;
use super::statements::{Attempt, Shape};
use crate::plan::Plan;
use crate::report::{Blocker, Dependents};

/// The statements of an attempt under a plan.
pub struct Planned<'p> {
    plan: &'p Plan,
    statements: Statements,
    shape: Shape,
}

enum Statements {
    One(String),
    Two {
        first: String,
        second: String,
        /// The second statement takes request ids (role requests), not the units.
        by_request: bool,
    },
}

/// A unit, deleted or blocked: its id, its user and the user's email.
pub struct Unit {
    pub id: i64,
    pub user_id: Option<i64>,
    pub email: Option<String>,
}

/// A unit found blocked.
pub struct BlockedUnit {
    pub id: i64,
    pub user_id: Option<i64>,
    pub email: Option<String>,
    pub blockers: Vec<Blocker>,
}

/// What an attempt did.
#[derive(Default)]
pub struct PlannedRows {
    /// The units deleted.
    pub deleted: Vec<Unit>,
    /// Per deleted unit, the rows the plan deleted or nullified first.
    pub dependents: BTreeMap<i64, Vec<Dependents>>,
    pub blocked: Vec<BlockedUnit>,
    /// Ids left for the sweep.
    pub busy: Vec<i64>,
}

impl<'p> Planned<'p> {
    pub fn new(plan: &'p Plan, attempt: &Attempt, by_request: bool) -> Planned<'p> {
        let role_work = attempt.shape == Shape::Role;
        let statements = if !by_request && plan.fits_one_statement(role_work) {
            Statements::One(attempt.one_plan_statement(plan))
        } else {
            Statements::Two {
                first: attempt.plan_statement(plan),
                second: attempt.statement(),
                by_request,
            }
        };
        Planned {
            plan,
            statements,
            shape: attempt.shape,
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
        let result = match &self.statements {
            Statements::One(sql) => self.run_one(client, sql, ids, role),
            Statements::Two {
                first,
                second,
                by_request,
            } => self.run_two(client, (first, second), *by_request, ids, role),
        };
        recorder.transaction_took(started.elapsed());
        result
    }

    /// The plan's work and the deletion in one statement, its own transaction.
    fn run_one(
        &self,
        client: &mut Client,
        sql: &str,
        ids: &[i64],
        role: Option<&str>,
    ) -> Result<PlannedRows, postgres::Error> {
        let rows = query(client, sql, ids, role)?;
        let decided = self.read_first(&rows);
        let mut planned = PlannedRows {
            busy: decided.busy,
            blocked: decided.blocked,
            dependents: decided.dependents,
            deleted: decided.deleted,
        };
        planned.keep_dependents_of_deleted();
        Ok(planned)
    }

    /// The plan's work, then the deletion, in one transaction.
    fn run_two(
        &self,
        client: &mut Client,
        (first, second): (&str, &str),
        by_request: bool,
        ids: &[i64],
        role: Option<&str>,
    ) -> Result<PlannedRows, postgres::Error> {
        let mut transaction = client.transaction()?;
        let first = query(&mut transaction, first, ids, role)?;
        let decided = self.read_first(&first);
        let mut rows = PlannedRows {
            busy: decided.busy,
            blocked: decided.blocked,
            dependents: decided.dependents,
            deleted: Vec::new(),
        };
        let second_ids = if by_request {
            &decided.requests
        } else {
            &decided.cleared
        };
        if !second_ids.is_empty() {
            let second = query(&mut transaction, second, second_ids, role)?;
            let attempted = AttemptRows::split(second);
            let deleted: Vec<Unit> = attempted
                .deleted
                .iter()
                .map(|row| Unit::of_deleted_row(self.shape, row))
                .collect();
            let deleted_ids: BTreeSet<i64> = deleted.iter().map(|unit| unit.id).collect();
            let cleared: BTreeSet<i64> = decided.cleared.iter().copied().collect();
            if deleted_ids != cleared || !attempted.busy.is_empty() {
                // Dropping the transaction rolls the plan's work back with it.
                drop(transaction);
                return Ok(PlannedRows {
                    busy: ids.to_vec(),
                    ..PlannedRows::default()
                });
            }
            rows.deleted = deleted;
        }
        transaction.commit()?;
        rows.keep_dependents_of_deleted();
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
                "deleted" => decided.deleted.push(Unit {
                    id,
                    user_id: row.get(2),
                    email: row.get(3),
                }),
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
        decided.deleted.sort_by_key(|unit| unit.id);
        decided
    }
}

/// What the first statement decided.
#[derive(Default)]
struct Decided {
    busy: Vec<i64>,
    deleted: Vec<Unit>,
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

impl PlannedRows {
    /// Forgets the dependents of units that were not deleted.
    fn keep_dependents_of_deleted(&mut self) {
        let deleted: BTreeSet<i64> = self.deleted.iter().map(|unit| unit.id).collect();
        self.dependents.retain(|unit, _| deleted.contains(unit));
    }
}

impl Unit {
    /// A row of an attempt's `deleted` CTE: (profile id, user id, email) or (user id, email).
    pub fn of_deleted_row(shape: Shape, row: &Row) -> Unit {
        match shape {
            Shape::Role => Unit {
                id: row.get(0),
                user_id: row.get(1),
                email: row.get(2),
            },
            Shape::Account => Unit {
                id: row.get(0),
                user_id: Some(row.get(0)),
                email: row.get(1),
            },
        }
    }
}

/// Runs `sql` with the ids as `$1` and, for role work, the role as `$2`.
fn query(
    client: &mut impl GenericClient,
    sql: &str,
    ids: &[i64],
    role: Option<&str>,
) -> Result<Vec<Row>, postgres::Error> {
    match role {
        Some(role) => client.query_typed(sql, &[(&ids, Type::INT8_ARRAY), (&role, Type::TEXT)]),
        None => client.query_typed(sql, &[(&ids, Type::INT8_ARRAY)]),
    }
}
