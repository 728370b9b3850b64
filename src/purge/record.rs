//! What the purge tells as it goes: each outcome (a deletion, a failure, a held account) is
//! rendered by the report and the journal and counted in the run's [`Summary`], in one call,
//! so that the two can never disagree.

use std::time::Duration;

use crate::report::{Blocker, Deletion, Dependents, Report};
use crate::summary::Summary;

/// The report being written and the summary being counted.
pub struct Recorder<'r> {
    /// For lines that are not outcomes: banners, phase headers, warnings.
    pub report: &'r mut Report,
    pub summary: Summary,
}

impl<'r> Recorder<'r> {
    pub fn new(report: &'r mut Report, dry_run: bool) -> Recorder<'r> {
        Recorder {
            report,
            summary: Summary::new(dry_run),
        }
    }

    /// A role or an account deleted (or, in a dry run, that would be), with the rows the
    /// deletion plan deleted or nullified first.
    pub fn deleted(&mut self, deletion: &Deletion, dependents: &[Dependents]) {
        self.report.deleted(deletion, dependents);
        match deletion {
            Deletion::Role { .. } => self.summary.roles += 1,
            Deletion::Account { .. } => self.summary.accounts += 1,
        }
    }

    /// A row whose deletion failed; the run goes on.
    pub fn failed(&mut self, what: &str, error: &str) {
        self.report.failed(what, error);
        self.summary.failed += 1;
    }

    /// A deletion foreign keys block; nothing of it changed.
    pub fn blocked(&mut self, deletion: &Deletion, blockers: &[Blocker]) {
        self.report.blocked(deletion, blockers);
        self.summary.blocked += 1;
    }

    /// A due account held for manual review by `--hold-where`.
    pub fn held(&mut self, user_id: i64, email: Option<&str>) {
        self.report.held(user_id, email);
        self.summary.held += 1;
    }

    /// How long one of our transactions held its locks.
    pub fn transaction_took(&mut self, elapsed: Duration) {
        let longest = &mut self.summary.longest_transaction;
        *longest = (*longest).max(elapsed);
    }
}
