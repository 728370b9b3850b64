//! Role deletions: a profile row due by itself ("Manage Role"), and a pending request that
//! deletes one role only (`delete_user = FALSE`).
//!
//! One attempt is one statement per profile table (see `statements`): it locks the profile
//! (or request) rows and their users, deletes the profiles still due, removes the role from
//! `users.roles` (whatever its type), fixes `active_role`, writes the audit rows and, for
//! requests, marks them completed. The profile, the user update and the audit row commit
//! together or not at all. Under a deletion plan with work to do, the plan's own deletions
//! come first, in the same transaction (see `planned`).

use std::collections::BTreeMap;
use std::time::Instant;

use postgres::Client;
use postgres::types::Type;

use super::attempt::{self, Attempting, Units};
use super::cursor::DueIds;
use super::drain::Work;
use super::locks::{sorted_ids, wait_for_profile, wait_for_rows, wait_for_user};
use super::planned::PlannedRows;
use super::record::Recorder;
use super::statements as sql;
use crate::schema::{ProfileTable, Schema};

/// Profiles of one role table that are due by themselves.
pub struct ProfileWork<'a> {
    profile: &'a ProfileTable,
    due: String,
    attempt: Attempting<'a>,
    still_due: String,
}

impl<'a> ProfileWork<'a> {
    pub fn new(schema: &'a Schema, profile: &'a ProfileTable, audit: bool) -> ProfileWork<'a> {
        let attempt = sql::attempt_profiles(schema, profile, audit);
        ProfileWork {
            profile,
            due: sql::due_profiles(profile),
            attempt: Attempting::new(&profile.plan, &attempt, false),
            still_due: sql::still_due_profiles(profile),
        }
    }
}

impl Work for ProfileWork<'_> {
    fn name(&self) -> String {
        self.profile.table.to_string()
    }

    fn describe(&self, id: i64) -> String {
        format!(
            "role '{}' (profile {id} in {})",
            self.profile.role, self.profile.table
        )
    }

    fn first_batch(&self) -> usize {
        self.attempt.first_batch()
    }

    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error> {
        DueIds::declare(client, &self.due, &[])
    }

    fn attempt(
        &self,
        client: &mut Client,
        wanted: &[i64],
        recorder: &mut Recorder,
    ) -> Result<Vec<i64>, postgres::Error> {
        let role = &self.profile.role;
        let attempted = self.attempt.run(client, wanted, Some(role), recorder)?;
        Ok(report_roles(recorder, role, attempted))
    }

    fn still_due(&self, client: &mut Client, wanted: &[i64]) -> Result<Vec<i64>, postgres::Error> {
        sorted_ids(client, &self.still_due, wanted)
    }

    fn wait_until_free(
        &self,
        client: &mut Client,
        id: i64,
        deadline: Option<Instant>,
    ) -> Result<bool, postgres::Error> {
        match wait_for_profile(client, self.profile, id, deadline)? {
            Some(user) => wait_for_user(client, user, deadline),
            None => Ok(false),
        }
    }
}

/// Reports the outcomes of a role attempt; returns the ids it left for the sweep.
fn report_roles(recorder: &mut Recorder, role: &str, attempted: PlannedRows) -> Vec<i64> {
    attempt::report(recorder, Units::Role(role), attempted)
}

/// Pending requests that delete one role (`delete_user = FALSE`), for every role with a
/// profile table.
pub struct RoleRequestWork<'a> {
    roles: Vec<String>,
    /// Per role: the attempt statements of its profile table.
    attempts: BTreeMap<String, Attempting<'a>>,
    wait_profiles: BTreeMap<String, String>,
}

impl<'a> RoleRequestWork<'a> {
    pub fn new(schema: &'a Schema, audit: bool) -> RoleRequestWork<'a> {
        let attempts = schema
            .profiles
            .iter()
            .map(|profile| {
                let attempt = sql::attempt_requested_profiles(schema, profile, audit);
                let attempting = Attempting::new(&profile.plan, &attempt, true);
                (profile.role.clone(), attempting)
            })
            .collect();
        RoleRequestWork {
            roles: schema.profiles.iter().map(|p| p.role.clone()).collect(),
            attempts,
            wait_profiles: schema
                .profiles
                .iter()
                .map(|profile| {
                    (
                        profile.role.clone(),
                        sql::wait_for_requested_profile(profile),
                    )
                })
                .collect(),
        }
    }

    /// Reports due role-only requests whose role has no profile table: nothing can be done.
    pub fn report_unknown_roles(
        &self,
        client: &mut Client,
        recorder: &mut Recorder,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let rows = client
            .query_typed(
                &sql::unknown_role_requests(),
                &[(&self.roles, Type::TEXT_ARRAY)],
            )
            .context("cannot read account_deletion_requests")?;
        for row in rows {
            let (id, user, role): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
            recorder.failed(
                &format!("request {id} of user {user}"),
                &format!("role '{role}' has no profile table (see --role); request left pending"),
            );
        }
        Ok(())
    }
}

impl Work for RoleRequestWork<'_> {
    fn name(&self) -> String {
        "account_deletion_requests (role only)".to_owned()
    }

    fn describe(&self, id: i64) -> String {
        format!("role requested by account_deletion_requests {id}")
    }

    fn first_batch(&self) -> usize {
        self.attempts
            .values()
            .map(Attempting::first_batch)
            .min()
            .unwrap_or(super::drain::FIRST_BATCH)
    }

    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error> {
        DueIds::declare(
            client,
            &sql::due_role_requests(),
            &[(&self.roles, Type::TEXT_ARRAY)],
        )
    }

    /// One statement per role, each its own transaction: a role's deletions are reported as
    /// soon as they are committed, before the next role's statement can fail.
    fn attempt(
        &self,
        client: &mut Client,
        wanted: &[i64],
        recorder: &mut Recorder,
    ) -> Result<Vec<i64>, postgres::Error> {
        let mut busy = Vec::new();
        for (role, attempt) in &self.attempts {
            let attempted = attempt.run(client, wanted, Some(role), recorder)?;
            busy.extend(report_roles(recorder, role, attempted));
        }
        Ok(busy)
    }

    fn still_due(&self, client: &mut Client, wanted: &[i64]) -> Result<Vec<i64>, postgres::Error> {
        sorted_ids(client, &sql::still_due_role_requests(), wanted)
    }

    fn wait_until_free(
        &self,
        client: &mut Client,
        id: i64,
        deadline: Option<Instant>,
    ) -> Result<bool, postgres::Error> {
        if !wait_for_rows(client, sql::WAIT_FOR_REQUEST, &[&id], deadline)? {
            return Ok(false);
        }
        let Some(request) = client.query_opt(sql::ROLE_REQUEST_TARGET, &[&id])? else {
            return Ok(true);
        };
        let (user, role, profile): (Option<i64>, Option<String>, Option<i64>) =
            (request.get(0), request.get(1), request.get(2));
        if !wait_for_user(client, user, deadline)? {
            return Ok(false);
        }
        match role.and_then(|role| self.wait_profiles.get(&role)) {
            Some(wait) => wait_for_rows(client, wait, &[&user, &profile], deadline),
            None => Ok(true),
        }
    }
}
