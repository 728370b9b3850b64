//! What the purge tells as it goes: each outcome (a deletion, a failure, a held account) is
//! rendered by the report and the journal and counted in the run's [`Summary`], in one call,
//! so that the two can never disagree.

use std::time::Duration;

use crate::report::{Blocker, Database, Deletion, Dependents, Report};
use crate::summary::{Counts, Summary};

/// The report being written and the summary being counted.
pub struct Recorder<'r> {
    /// For lines that are not outcomes: banners, phase headers, warnings.
    pub report: &'r mut Report,
    pub summary: Summary,
    database: Database,
}

impl<'r> Recorder<'r> {
    pub fn new(report: &'r mut Report, dry_run: bool) -> Recorder<'r> {
        Recorder {
            report,
            summary: Summary::new(dry_run),
            database: Database::User,
        }
    }

    /// The database the following outcomes are about: the journal says so, and the summary
    /// counts those of the advertiser database apart too.
    pub fn set_database(&mut self, database: Database) {
        self.report.set_database(database);
        self.database = database;
    }

    /// Counts an outcome in the totals and, in the advertiser database, apart.
    fn count(&mut self, outcome: impl Fn(&mut Counts)) {
        outcome(&mut self.summary.counts);
        if self.database == Database::Advertiser {
            outcome(self.summary.advertiser.get_or_insert_with(Counts::default));
        }
    }

    /// A role or an account deleted (or, in a dry run, that would be), with the rows the
    /// deletion plan deleted or nullified first.
    pub fn deleted(&mut self, deletion: &Deletion, dependents: &[Dependents]) {
        self.report.deleted(deletion, dependents);
        match deletion {
            Deletion::Role { .. } => self.count(|counts| counts.roles += 1),
            Deletion::Account { .. } => self.count(|counts| counts.accounts += 1),
        }
    }

    /// A row whose deletion failed; the run goes on.
    pub fn failed(&mut self, what: &str, error: &str) {
        self.report.failed(what, error);
        self.count(|counts| counts.failed += 1);
    }

    /// A deletion foreign keys block; nothing of it changed.
    pub fn blocked(&mut self, deletion: &Deletion, blockers: &[Blocker]) {
        self.report.blocked(deletion, blockers);
        self.count(|counts| counts.blocked += 1);
    }

    /// A due account held for manual review by `--hold-where`.
    pub fn held(&mut self, user_id: i64, email: Option<&str>) {
        self.report.held(user_id, email);
        self.count(|counts| counts.held += 1);
    }

    /// How long one of our transactions held its locks.
    pub fn transaction_took(&mut self, elapsed: Duration) {
        self.summary.transactions.record(elapsed);
    }
}
