//! Role deletions: a profile row due by itself ("Manage Role"), and a pending request that
//! deletes one role only (`delete_user = FALSE`).
//!
//! One attempt locks the profile (or request) rows and their users (for profiles, in one
//! statement), then in the next statement deletes the profiles still due, removes the role
//! from `users.roles` (whatever its type), fixes `active_role`, writes the audit rows and,
//! for requests, marks them completed. The profile, the user update and the audit row commit
//! together or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use postgres::Client;
use postgres::types::Type;

use super::cursor::DueIds;
use super::drain::Work;
use super::locks::{
    busy_among, by_ids, by_ids_and, lock_users, sorted_ids, wait_for_rows, wait_for_user,
};
use super::statements as sql;
use crate::report::{Deletion, Report};
use crate::schema::{ProfileTable, Schema};

/// Profiles of one role table that are due by themselves.
pub struct ProfileWork<'a> {
    profile: &'a ProfileTable,
    due: String,
    lock: String,
    still_due: String,
    delete: String,
}

impl<'a> ProfileWork<'a> {
    pub fn new(schema: &'a Schema, profile: &'a ProfileTable, audit: bool) -> ProfileWork<'a> {
        ProfileWork {
            profile,
            due: sql::due_profiles(profile),
            lock: sql::lock_profiles(profile),
            still_due: sql::still_due_profiles(profile),
            delete: sql::delete_profiles(schema, profile, audit),
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

    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error> {
        DueIds::declare(client, &self.due, &[])
    }

    fn attempt(
        &self,
        client: &mut Client,
        wanted: &[i64],
        report: &mut Report,
    ) -> Result<Vec<i64>, postgres::Error> {
        let mut transaction = client.transaction()?;
        // (profile id, whether its user is locked or gone)
        let locked: Vec<(i64, bool)> = by_ids(&mut transaction, &self.lock, wanted)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let locked_ids: BTreeSet<i64> = locked.iter().map(|(id, _)| *id).collect();
        let mut busy = busy_among(&mut transaction, wanted, &locked_ids, &self.still_due)?;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            locked.into_iter().partition(|(_, user_ready)| *user_ready);
        busy.extend(waiting.into_iter().map(|(id, _)| id));
        let ready: Vec<i64> = ready.into_iter().map(|(id, _)| id).collect();
        let deleted = if ready.is_empty() {
            Vec::new()
        } else {
            let role = &self.profile.role;
            by_ids_and(&mut transaction, &self.delete, &ready, role, Type::TEXT)?
        };
        transaction.commit()?;
        report_roles(report, &self.profile.role, &deleted);
        Ok(busy)
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
        if !wait_for_rows(
            client,
            &sql::wait_for_profile(self.profile),
            &[&id],
            deadline,
        )? {
            return Ok(false);
        }
        let user: Option<i64> = client
            .query_opt(
                &format!(
                    "SELECT user_id::bigint FROM {} WHERE id = $1::bigint",
                    self.profile.table.quoted()
                ),
                &[&id],
            )?
            .and_then(|row| row.get(0));
        wait_for_user(client, user, deadline)
    }
}

/// Reports a row of (profile id, user id, email) as a role deletion.
pub(super) fn report_role(report: &mut Report, role: &str, row: &postgres::Row) {
    let email: Option<String> = row.get(2);
    report.deleted(&Deletion::Role {
        role,
        profile_id: row.get(0),
        user_id: row.get(1),
        email: email.as_deref(),
    });
}

fn report_roles(report: &mut Report, role: &str, rows: &[postgres::Row]) {
    for row in rows {
        report_role(report, role, row);
    }
}

/// Pending requests that delete one role (`delete_user = FALSE`), for every role with a
/// profile table.
pub struct RoleRequestWork {
    roles: Vec<String>,
    lock_profiles: BTreeMap<String, String>,
    wait_profiles: BTreeMap<String, String>,
    delete: BTreeMap<String, String>,
}

impl RoleRequestWork {
    pub fn new(schema: &Schema, audit: bool) -> RoleRequestWork {
        let by_role = |build: &dyn Fn(&ProfileTable) -> String| {
            schema
                .profiles
                .iter()
                .map(|profile| (profile.role.clone(), build(profile)))
                .collect()
        };
        RoleRequestWork {
            roles: schema.profiles.iter().map(|p| p.role.clone()).collect(),
            lock_profiles: by_role(&sql::lock_profiles_of_users),
            wait_profiles: by_role(&sql::wait_for_requested_profile),
            delete: by_role(&|profile| sql::delete_requested_profiles(schema, profile, audit)),
        }
    }

    /// Reports due role-only requests whose role has no profile table: nothing can be done.
    pub fn report_unknown_roles(
        &self,
        client: &mut Client,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let rows = client
            .query_typed(
                sql::UNKNOWN_ROLE_REQUESTS,
                &[(&self.roles, Type::TEXT_ARRAY)],
            )
            .context("cannot read account_deletion_requests")?;
        for row in rows {
            let (id, user, role): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
            report.failed(
                &format!("request {id} of user {user}"),
                &format!("role '{role}' has no profile table (see --role); request left pending"),
            );
        }
        Ok(())
    }

    /// Locks the profiles each role's requests touch; returns the users whose profile
    /// another transaction holds.
    fn busy_profile_users(
        &self,
        transaction: &mut postgres::Transaction,
        by_role: &BTreeMap<String, Vec<(i64, i64)>>,
    ) -> Result<BTreeSet<(String, i64)>, postgres::Error> {
        let mut busy = BTreeSet::new();
        for (role, requests) in by_role {
            let users: Vec<i64> = requests.iter().map(|(_, user)| *user).collect();
            for row in by_ids(transaction, &self.lock_profiles[role], &users)? {
                if !row.get::<_, bool>(1) {
                    busy.insert((role.clone(), row.get::<_, i64>(0)));
                }
            }
        }
        Ok(busy)
    }
}

impl Work for RoleRequestWork {
    fn name(&self) -> String {
        "account_deletion_requests (role only)".to_owned()
    }

    fn describe(&self, id: i64) -> String {
        format!("role requested by account_deletion_requests {id}")
    }

    fn declare_due(&self, client: &mut Client) -> Result<DueIds, postgres::Error> {
        DueIds::declare(
            client,
            sql::DUE_ROLE_REQUESTS,
            &[(&self.roles, Type::TEXT_ARRAY)],
        )
    }

    fn attempt(
        &self,
        client: &mut Client,
        wanted: &[i64],
        report: &mut Report,
    ) -> Result<Vec<i64>, postgres::Error> {
        let mut transaction = client.transaction()?;
        let locked: Vec<(i64, i64, String)> =
            by_ids(&mut transaction, sql::LOCK_ROLE_REQUESTS, wanted)?
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .filter(|(_, _, role): &(i64, i64, String)| self.delete.contains_key(role))
                .collect();
        let locked_ids: BTreeSet<i64> = locked.iter().map(|(id, _, _)| *id).collect();
        let mut busy = busy_among(
            &mut transaction,
            wanted,
            &locked_ids,
            sql::STILL_DUE_ROLE_REQUESTS,
        )?;
        let users: BTreeSet<i64> = locked.iter().map(|(_, user, _)| *user).collect();
        let user_locks = lock_users(&mut transaction, &users)?;
        let mut by_role: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for (id, user, role) in locked {
            if user_locks.ready(Some(user)) {
                by_role.entry(role).or_default().push((id, user));
            } else {
                busy.push(id);
            }
        }
        let busy_profiles = self.busy_profile_users(&mut transaction, &by_role)?;
        let mut deleted = Vec::new();
        for (role, requests) in &by_role {
            let (ready, waiting): (Vec<_>, Vec<_>) = requests
                .iter()
                .partition(|(_, user)| !busy_profiles.contains(&(role.clone(), *user)));
            busy.extend(waiting.into_iter().map(|&(id, _)| id));
            let ready: Vec<i64> = ready.into_iter().map(|&(id, _)| id).collect();
            if !ready.is_empty() {
                deleted.push((
                    role,
                    by_ids_and(
                        &mut transaction,
                        &self.delete[role],
                        &ready,
                        role,
                        Type::TEXT,
                    )?,
                ));
            }
        }
        transaction.commit()?;
        for (role, rows) in &deleted {
            report_roles(report, role, rows);
        }
        Ok(busy)
    }

    fn still_due(&self, client: &mut Client, wanted: &[i64]) -> Result<Vec<i64>, postgres::Error> {
        sorted_ids(client, sql::STILL_DUE_ROLE_REQUESTS, wanted)
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
        let Some(request) = client.query_opt(
            "SELECT user_id::bigint, role::text, profile_id::bigint \
             FROM account_deletion_requests WHERE id = $1::bigint",
            &[&id],
        )?
        else {
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
