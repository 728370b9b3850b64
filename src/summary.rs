//! What a deleting run did, as plain values: how many roles and accounts it deleted, failed,
//! held and blocked, its longest transaction, and how it ended.
//!
//! The purge fills one [`Summary`] as it goes and returns it; the report's last line, the
//! journal's summary entry, the alert and the exit code are all computed from it, never
//! from text the report already wrote.

use std::time::Duration;

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ending {
    /// Every phase ran (single rows may have failed or been blocked).
    #[default]
    Completed,
    /// More accounts were due than `--max-accounts`; no account was deleted.
    Capped,
    /// The run broke off with this error (connection lost, permission denied...).
    BrokeOff(String),
}

/// The counts and the ending of one run of the purge (or of `approve`).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub dry_run: bool,
    /// Roles deleted (or, in a dry run, that would be).
    pub roles: u64,
    /// Accounts deleted (or, in a dry run, that would be).
    pub accounts: u64,
    /// Rows whose deletion failed.
    pub failed: u64,
    /// Due accounts held for manual review by `--hold-where`.
    pub held: u64,
    /// Deletions a foreign key blocked.
    pub blocked: u64,
    /// The longest of our transactions that held row locks.
    pub longest_transaction: Duration,
    /// How long the run took.
    pub duration: Duration,
    pub ending: Ending,
    /// Dry run only: the backup interlock would refuse the real run.
    pub backup_missing: bool,
}

impl Summary {
    pub fn new(dry_run: bool) -> Summary {
        Summary {
            dry_run,
            ..Summary::default()
        }
    }

    /// Rows really deleted: none in a dry run.
    pub fn deleted(&self) -> u64 {
        if self.dry_run {
            0
        } else {
            self.roles + self.accounts
        }
    }

    /// Whether something needs an operator: a failure, a blocked deletion, a broken-off run.
    pub fn has_trouble(&self) -> bool {
        self.failed > 0 || self.blocked > 0 || matches!(self.ending, Ending::BrokeOff(_))
    }

    /// The report's last line, also the alert's subject and the journal summary's message:
    /// "COMPLETED: 3 roles and 1 accounts deleted, 2 failed".
    pub fn headline(&self) -> String {
        let counts = if self.dry_run {
            format!(
                "{} roles and {} accounts would be deleted (dry run: nothing was deleted)",
                self.roles, self.accounts
            )
        } else {
            format!(
                "{} roles and {} accounts deleted",
                self.roles, self.accounts
            )
        };
        let mut tail = String::new();
        for (count, what) in [
            (self.held, "held"),
            (self.blocked, "blocked"),
            (self.failed, "failed"),
        ] {
            if count > 0 {
                tail.push_str(&format!(", {count} {what}"));
            }
        }
        if self.backup_missing {
            tail.push_str(", but no recent backup: a run would delete nothing");
        }
        match &self.ending {
            Ending::Completed | Ending::Capped => format!("COMPLETED: {counts}{tail}"),
            Ending::BrokeOff(error) => {
                format!("FAILED: run broke off after {counts}{tail}: {error}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_names_every_count_that_is_not_zero() {
        let mut summary = Summary::new(false);
        summary.roles = 3;
        summary.accounts = 1;
        assert_eq!(
            summary.headline(),
            "COMPLETED: 3 roles and 1 accounts deleted"
        );
        summary.held = 1;
        summary.blocked = 2;
        summary.failed = 4;
        assert_eq!(
            summary.headline(),
            "COMPLETED: 3 roles and 1 accounts deleted, 1 held, 2 blocked, 4 failed"
        );
        summary.ending = Ending::BrokeOff("connection lost".to_owned());
        assert_eq!(
            summary.headline(),
            "FAILED: run broke off after 3 roles and 1 accounts deleted, 1 held, 2 blocked, \
             4 failed: connection lost"
        );
        let dry = Summary::new(true);
        assert_eq!(
            dry.headline(),
            "COMPLETED: 0 roles and 0 accounts would be deleted (dry run: nothing was deleted)"
        );
        assert_eq!(dry.deleted(), 0);
    }
}
