//! What a deleting run did, as plain values: how many roles and accounts it deleted, failed,
//! held and blocked, how long its transactions held their locks, and how it ended.
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

/// What became of the rows a run looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
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
}

/// The counts and the ending of one run of the purge (or of `approve`).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub dry_run: bool,
    /// Over both databases.
    pub counts: Counts,
    /// Those of the advertiser database, once an outcome there was counted.
    pub advertiser: Option<Counts>,
    /// How long each of our transactions that held row locks took.
    pub transactions: TransactionTimes,
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
            self.counts.roles + self.counts.accounts
        }
    }

    /// Whether something needs an operator: a failure, a blocked deletion, a broken-off run.
    pub fn has_trouble(&self) -> bool {
        self.counts.failed > 0
            || self.counts.blocked > 0
            || matches!(self.ending, Ending::BrokeOff(_))
    }

    /// The report's last line, also the alert's subject and the journal summary's message:
    /// "COMPLETED: 3 roles and 1 accounts deleted, 2 failed".
    pub fn headline(&self) -> String {
        let counts = if self.dry_run {
            format!(
                "{} roles and {} accounts would be deleted (dry run: nothing was deleted)",
                self.counts.roles, self.counts.accounts
            )
        } else {
            format!(
                "{} roles and {} accounts deleted",
                self.counts.roles, self.counts.accounts
            )
        };
        let mut tail = String::new();
        for (count, what) in [
            (self.counts.held, "held"),
            (self.counts.blocked, "blocked"),
            (self.counts.failed, "failed"),
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

/// The distribution of our locking transactions' durations, to the millisecond: what the
/// promise "the app never waits on us for long" is checked against. A histogram rather than
/// a list, so a run of a million one-row transactions costs no more memory than one batch.
#[derive(Clone, Debug, Default)]
pub struct TransactionTimes {
    /// `counts[ms]`: how many took `ms` milliseconds (rounded down); the last bucket holds
    /// everything from [`LONGEST_BUCKET_MS`] up.
    counts: Vec<u64>,
    total: u64,
    longest: Duration,
}

/// Past a second, the percentiles need no millisecond precision.
const LONGEST_BUCKET_MS: usize = 1000;

impl TransactionTimes {
    pub fn record(&mut self, elapsed: Duration) {
        if self.counts.is_empty() {
            self.counts = vec![0; LONGEST_BUCKET_MS + 1];
        }
        let bucket = (elapsed.as_millis() as usize).min(LONGEST_BUCKET_MS);
        self.counts[bucket] += 1;
        self.total += 1;
        self.longest = self.longest.max(elapsed);
    }

    /// How many transactions were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn longest(&self) -> Duration {
        self.longest
    }

    /// The duration `percent` of the transactions did not exceed (in whole milliseconds,
    /// rounded up; at most the longest); zero when there were none.
    pub fn percentile(&self, percent: u64) -> Duration {
        let wanted = (self.total * percent).div_ceil(100).max(1);
        let mut seen = 0;
        for (ms, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Duration::from_millis(ms as u64 + 1).min(self.longest);
            }
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_names_every_count_that_is_not_zero() {
        let mut summary = Summary::new(false);
        summary.counts.roles = 3;
        summary.counts.accounts = 1;
        assert_eq!(
            summary.headline(),
            "COMPLETED: 3 roles and 1 accounts deleted"
        );
        summary.counts.held = 1;
        summary.counts.blocked = 2;
        summary.counts.failed = 4;
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

    #[test]
    fn the_p95_is_the_time_95_percent_of_transactions_stayed_within() {
        let mut times = TransactionTimes::default();
        assert_eq!(times.percentile(95), Duration::ZERO, "none yet");
        for ms in 1..=100 {
            times.record(Duration::from_micros(ms * 1000 - 500));
        }
        assert_eq!(times.count(), 100);
        assert_eq!(times.percentile(95), Duration::from_millis(95));
        assert_eq!(times.percentile(100), Duration::from_micros(99_500));
        times.record(Duration::from_secs(5));
        assert_eq!(times.longest(), Duration::from_secs(5));
        assert_eq!(times.percentile(95), Duration::from_millis(96));
        for _ in 0..10 {
            times.record(Duration::from_secs(3));
        }
        assert_eq!(
            times.percentile(95),
            Duration::from_millis(1001),
            "past a second, the bucket's bound"
        );
    }
}
