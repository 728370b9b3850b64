//! How one kind of work attempts a batch: one statement when its deletion plan has nothing
//! to do, two in a transaction when it has (see `planned`); and how the outcomes are
//! reported, in the order of the units' ids.

use postgres::Client;

use super::drain::{FIRST_BATCH, FIRST_PLANNED_BATCH};
use super::locks::AttemptRows;
use super::planned::{Planned, PlannedRows, Unit};
use super::record::Recorder;
use super::statements::Attempt;
use super::statements::Shape;
use crate::plan::Plan;
use crate::report::Deletion;

/// The statements of one kind of work.
pub enum Attempting<'p> {
    Plain(String, Shape),
    Planned(Planned<'p>),
}

impl<'p> Attempting<'p> {
    /// `attempt` under `plan`; `by_request` when the attempt takes role requests' ids.
    pub fn new(plan: &'p Plan, attempt: &Attempt, by_request: bool) -> Attempting<'p> {
        if plan.is_plain() {
            Attempting::Plain(attempt.statement(), attempt.shape)
        } else {
            Attempting::Planned(Planned::new(plan, attempt, by_request))
        }
    }

    /// The size of the first batch: smaller under a plan with work to do.
    pub fn first_batch(&self) -> usize {
        match self {
            Attempting::Plain(..) => FIRST_BATCH,
            Attempting::Planned(_) => FIRST_PLANNED_BATCH,
        }
    }

    /// Attempts `ids` (with `role` as `$2` for role work).
    pub fn run(
        &self,
        client: &mut Client,
        ids: &[i64],
        role: Option<&str>,
        recorder: &mut Recorder,
    ) -> Result<PlannedRows, postgres::Error> {
        match self {
            Attempting::Plain(sql, shape) => {
                let attempted = AttemptRows::run(client, sql, ids, role, recorder)?;
                Ok(PlannedRows {
                    deleted: attempted
                        .deleted
                        .iter()
                        .map(|row| Unit::of_deleted_row(*shape, row))
                        .collect(),
                    busy: attempted.busy,
                    ..PlannedRows::default()
                })
            }
            Attempting::Planned(planned) => planned.run(client, ids, role, recorder),
        }
    }
}

/// What the units of a kind of work are, to describe them in the report.
#[derive(Clone, Copy)]
pub enum Units<'a> {
    /// Profiles of this role.
    Role(&'a str),
    Account,
}

impl<'a> Units<'a> {
    /// The columns of the units' deleted rows.
    pub fn shape(self) -> Shape {
        match self {
            Units::Role(_) => Shape::Role,
            Units::Account => Shape::Account,
        }
    }

    /// A unit known by its id, user and email.
    pub fn unit(self, id: i64, user_id: Option<i64>, email: Option<&'a str>) -> Deletion<'a> {
        match self {
            Units::Role(role) => Deletion::Role {
                role,
                profile_id: id,
                user_id,
                email,
                user_missing: false,
            },
            Units::Account => Deletion::Account { user_id: id, email },
        }
    }
}

/// Reports what an attempt did, deletions and blocked units merged in the order of their
/// ids; returns the ids left for the sweep.
pub fn report(recorder: &mut Recorder, units: Units, attempted: PlannedRows) -> Vec<i64> {
    let PlannedRows {
        deleted,
        dependents,
        blocked,
        busy,
    } = attempted;
    let mut rows = deleted.iter().peekable();
    let mut blocked = blocked.iter().peekable();
    loop {
        let next_row = rows.peek().map(|unit| unit.id);
        let next_blocked = blocked.peek().map(|unit| unit.id);
        let row_first = match (next_row, next_blocked) {
            (None, None) => break,
            (Some(row), Some(unit)) => row < unit,
            (row, _) => row.is_some(),
        };
        if row_first {
            if let Some(unit) = rows.next() {
                let shown = dependents.get(&unit.id).map_or(&[][..], Vec::as_slice);
                let deletion = units.unit(unit.id, unit.user_id, unit.email.as_deref());
                recorder.deleted(&deletion, shown);
            }
        } else if let Some(unit) = blocked.next() {
            let deletion = units.unit(unit.id, unit.user_id, unit.email.as_deref());
            recorder.blocked(&deletion, &unit.blockers);
        }
    }
    busy
}
