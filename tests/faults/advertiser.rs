//! The advertiser database: the job is killed (`kill -9`) at random moments, while a slow
//! trigger holds it mid-statement in either database, and its backend in either database is
//! terminated. After each trial and a rerun, invariants checked in SQL across both databases:
//! every due advertiser profile deleted once, its role removed, exactly one audit row,
//! nothing else changed; and right after the fault, never a role removed while its profile
//! is still there, nor an audit row for a profile that was not deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use postgres::Client;

use crate::common::TestDb;
use crate::common::astegni::{self, Variant};
use crate::support::job::{self, Finished, Job};
use crate::support::{Rng, TrialResult, poll_until, run_trials};
use crate::trial::RUN_FLAGS;

/// The advertiser database's schema: profiles, and campaigns behind them whose invoices do
/// not cascade (the job runs with `--foreign-keys delete`).
const ADVERTISER_SCHEMA: &str = "
    CREATE TABLE advertiser_profiles (id serial PRIMARY KEY, user_id integer,
        is_active boolean DEFAULT TRUE, scheduled_deletion_at timestamp);
    CREATE TABLE campaign_profile (id serial PRIMARY KEY,
        advertiser_profile_id integer NOT NULL REFERENCES advertiser_profiles (id)
        ON DELETE CASCADE);
    CREATE INDEX ON campaign_profile (advertiser_profile_id);
    CREATE TABLE campaign_invoices (id serial PRIMARY KEY,
        campaign_id integer NOT NULL REFERENCES campaign_profile (id));
    CREATE INDEX ON campaign_invoices (campaign_id);";

/// One due or kept advertiser profile, as it was before the run.
#[derive(Clone, Debug)]
struct Profile {
    id: i64,
    user: Option<i64>,
    due: bool,
    invoices: i64,
}

/// Both databases, filled from a seed.
struct Split {
    users: TestDb,
    advertisers: TestDb,
    profiles: Vec<Profile>,
}

impl Split {
    fn new(seed: u64, count: i64) -> Split {
        let mut rng = Rng::new(seed);
        let users = TestDb::create("fault_adv_users");
        users.exec(&astegni::schema_sql(&Variant::default()));
        let advertisers = TestDb::create("fault_adv");
        advertisers.exec(ADVERTISER_SCHEMA);
        let mut user_sql = String::new();
        let mut profile_sql = String::new();
        let mut profiles = Vec::new();
        for id in 1..=count {
            user_sql.push_str(&format!(
                "INSERT INTO users (id, email, roles, active_role, account_status) VALUES \
                 ({id}, 'u{id}@example.com', '[\"user\",\"advertiser\"]', 'advertiser', \
                 'active');\n"
            ));
            // One profile per user; some with no user, or a user that does not exist.
            let user = match rng.below(20) {
                0 => None,
                1 => Some(100_000 + id),
                _ => Some(id),
            };
            let due = rng.percent(60);
            let schedule = if due {
                "(now() AT TIME ZONE 'UTC') - interval '1 hour'"
            } else if rng.percent(50) {
                "(now() AT TIME ZONE 'UTC') + interval '3 days'"
            } else {
                "NULL"
            };
            let invoices = rng.below(3) as i64;
            profile_sql.push_str(&format!(
                "INSERT INTO advertiser_profiles (id, user_id, is_active, scheduled_deletion_at) \
                 VALUES ({id}, {}, {}, {schedule});\n",
                user.map_or("NULL".to_owned(), |user| user.to_string()),
                if schedule == "NULL" { "TRUE" } else { "FALSE" }
            ));
            if invoices > 0 {
                profile_sql.push_str(&format!(
                    "WITH c AS (INSERT INTO campaign_profile (advertiser_profile_id) \
                     VALUES ({id}) RETURNING id) INSERT INTO campaign_invoices (campaign_id) \
                     SELECT id FROM c, generate_series(1, {invoices});\n"
                ));
            }
            profiles.push(Profile {
                id,
                user,
                due,
                invoices,
            });
        }
        users.exec(&format!(
            "{user_sql} SELECT setval(pg_get_serial_sequence('users', 'id'), {count} + 1, false);"
        ));
        advertisers.exec(&format!(
            "{profile_sql} SELECT setval(pg_get_serial_sequence('advertiser_profiles', 'id'), \
             {count} + 1, false);"
        ));
        Split {
            users,
            advertisers,
            profiles,
        }
    }

    fn flags(&self) -> Vec<&str> {
        let mut flags = vec![
            "--advertiser-database-url",
            &self.advertisers.url,
            "--role-timezone",
            "UTC",
            "--timezone",
            "Africa/Addis_Ababa",
            "--foreign-keys",
            "delete",
        ];
        flags.extend(RUN_FLAGS);
        flags
    }

    fn spawn(&self) -> Job {
        job::spawn(&self.users.url, &self.flags())
    }

    fn due(&self) -> usize {
        self.profiles.iter().filter(|profile| profile.due).count()
    }

    /// Every invariant; `finished` adds "nothing due is left".
    fn check(&self, finished: bool) -> Vec<String> {
        let mut violations = Vec::new();
        let mut advertisers = self.advertisers.client();
        let mut users = self.users.client();
        let existing: BTreeMap<i64, i64> = advertisers
            .query(
                "SELECT p.id::bigint, (SELECT count(*) FROM campaign_invoices i \
                 JOIN campaign_profile c ON c.id = i.campaign_id \
                 WHERE c.advertiser_profile_id = p.id) FROM advertiser_profiles p",
                &[],
            )
            .expect("profiles")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let has_role = roles(&mut users);
        let audits = audit_rows(&mut users);
        let intents: Vec<i64> = intent_rows(&mut users);
        for profile in &self.profiles {
            let exists = existing.get(&profile.id);
            let role_kept = profile
                .user
                .is_none_or(|user| user > 100_000 || has_role.get(&user).copied().unwrap_or(false));
            match (profile.due, exists) {
                (false, None) => {
                    violations.push(format!("profile {} was not due but is gone", profile.id))
                }
                (false, Some(invoices)) => {
                    if *invoices != profile.invoices {
                        violations.push(format!("kept profile {} lost invoices", profile.id));
                    }
                    if !role_kept {
                        violations.push(format!(
                            "user {:?} lost its role but its profile {} was not due",
                            profile.user, profile.id
                        ));
                    }
                }
                (true, Some(_)) => {
                    if !role_kept {
                        violations.push(format!(
                            "user {:?} lost the advertiser role while its due profile {} is \
                             still there",
                            profile.user, profile.id
                        ));
                    }
                    if finished {
                        violations.push(format!("due profile {} is still there", profile.id));
                    }
                }
                (true, None) => {
                    let pending = intents.contains(&profile.id);
                    if finished && (role_kept && profile.user.is_some_and(|u| u <= 100_000)) {
                        violations.push(format!(
                            "profile {} is gone but user {:?} kept the role",
                            profile.id, profile.user
                        ));
                    }
                    if !pending && profile.user.is_some_and(|u| u <= 100_000) && role_kept {
                        violations.push(format!(
                            "profile {} is gone, user {:?} kept the role, and no intent \
                             remains to complete it",
                            profile.id, profile.user
                        ));
                    }
                }
            }
        }
        // Audit rows: per user, at most the number of that user's due profiles gone; after
        // the rerun exactly that many; NULL users counted together.
        let mut gone_per_user: BTreeMap<Option<i64>, i64> = BTreeMap::new();
        for profile in self
            .profiles
            .iter()
            .filter(|p| p.due && !existing.contains_key(&p.id))
        {
            *gone_per_user.entry(profile.user).or_default() += 1;
        }
        for (user, rows) in &audits {
            let gone = gone_per_user.get(user).copied().unwrap_or(0);
            if *rows > gone {
                violations.push(format!(
                    "user {user:?} has {rows} advertiser audit rows for {gone} profiles gone"
                ));
            }
        }
        if finished {
            for (user, gone) in &gone_per_user {
                let rows = audits.get(user).copied().unwrap_or(0);
                if rows != *gone {
                    violations.push(format!(
                        "user {user:?}: {gone} profiles deleted, {rows} audit rows (want equal)"
                    ));
                }
            }
            if !intents.is_empty() {
                violations.push(format!("{} intents left after the rerun", intents.len()));
            }
        }
        violations
    }
}

/// Whether each user still has the advertiser role.
fn roles(users: &mut Client) -> BTreeMap<i64, bool> {
    users
        .query(
            "SELECT id::bigint, roles::text LIKE '%\"advertiser\"%' FROM users",
            &[],
        )
        .expect("roles")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Advertiser audit rows per user id (NULL together).
fn audit_rows(users: &mut Client) -> BTreeMap<Option<i64>, i64> {
    if job::audit_rows(users) == 0 {
        return BTreeMap::new();
    }
    users
        .query(
            "SELECT user_id::bigint, count(*) FROM deletion_audit_log \
             WHERE role_name = 'advertiser' GROUP BY 1",
            &[],
        )
        .expect("audit")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn intent_rows(users: &mut Client) -> Vec<i64> {
    let exists: bool = users
        .query_one(
            "SELECT to_regclass('advertiser_deletion_intents') IS NOT NULL",
            &[],
        )
        .expect("to_regclass")
        .get(0);
    if !exists {
        return Vec::new();
    }
    users
        .query("SELECT profile_id FROM advertiser_deletion_intents", &[])
        .expect("intents")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Where a trial's fault lands.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `kill -9` at a random moment.
    Kill,
    /// `kill -9` while a slow trigger in the advertiser database holds a DELETE.
    KillInAdvertiserStatement,
    /// `kill -9` while a slow trigger in the user database holds the completing statement.
    KillInUserStatement,
    /// The job's backend in the advertiser database is terminated.
    TerminateAdvertiserBackend,
    /// The job's backend in the user database is terminated.
    TerminateUserBackend,
}

const SLOW: &str = "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.02); RETURN coalesce(NEW, OLD); END $$;";

fn trial(seed: u64, fault: Fault) -> TrialResult {
    let mut rng = Rng::new(seed);
    let split = Split::new(seed, 300);
    let mut result = TrialResult::default();
    match fault {
        Fault::KillInAdvertiserStatement | Fault::TerminateAdvertiserBackend => {
            split.advertisers.exec(&format!(
                "{SLOW} CREATE TRIGGER slow BEFORE DELETE ON advertiser_profiles \
                 FOR EACH ROW EXECUTE FUNCTION slow();"
            ))
        }
        Fault::KillInUserStatement | Fault::TerminateUserBackend => split.users.exec(&format!(
            "{SLOW} CREATE TRIGGER slow BEFORE UPDATE ON users \
             FOR EACH ROW EXECUTE FUNCTION slow();"
        )),
        Fault::Kill => {}
    }
    let mut job = split.spawn();
    let (mut users, mut advertisers) = (split.users.client(), split.advertisers.client());
    let moment = match fault {
        Fault::Kill => {
            let target = rng.below(split.due() as u64) as i64;
            job::wait_for_progress(&mut job, &mut users, target);
            format!("at >= {target} audit rows")
        }
        Fault::KillInAdvertiserStatement | Fault::TerminateAdvertiserBackend => {
            wait_in_statement(&mut job, &mut advertisers, &mut rng, "DELETE")
                .unwrap_or_else(|| missed(&mut result))
        }
        Fault::KillInUserStatement | Fault::TerminateUserBackend => {
            wait_in_statement(&mut job, &mut users, &mut rng, "UPDATE")
                .unwrap_or_else(|| missed(&mut result))
        }
    };
    let was_running = job.running();
    match fault {
        Fault::TerminateAdvertiserBackend => terminate(&mut advertisers),
        Fault::TerminateUserBackend => terminate(&mut users),
        _ => job.kill9(),
    }
    let first = job.wait(job::HANG_LIMIT);
    // A job held in the slow trigger is still running when the fault lands; one killed at a
    // random moment may have finished an instant before.
    let expected: &[i32] = match fault {
        Fault::Kill => &[0, 137],
        _ if !was_running => &[0],
        Fault::TerminateAdvertiserBackend | Fault::TerminateUserBackend => &[1],
        Fault::KillInAdvertiserStatement | Fault::KillInUserStatement => &[137],
    };
    if !expected.contains(&first.code) {
        result.fail(format!(
            "the run hit by the fault should exit {expected:?}: {}",
            first.describe()
        ));
    }
    result.violations.extend(split.check(false));
    let rerun: Finished = job::run(&split.users.url, &split.flags());
    if rerun.code != 0 {
        result.fail(format!("the rerun did not exit 0: {}", rerun.describe()));
    }
    result.violations.extend(split.check(true));
    result.count("trials", 1);
    if was_running {
        result.count("hit_a_running_job", 1);
    }
    result.note = format!(
        "{fault:?} {moment}: {} due of {}; exit {}",
        split.due(),
        split.profiles.len(),
        first.code
    );
    result
}

/// Waits until the job's backend in `client`'s database sleeps in the slow trigger, then a
/// random few milliseconds more; returns the moment as text, or None when the job ended
/// first. The trigger's sleep, not the query text, says the job is mid-statement:
/// `pg_stat_activity.query` stops at `track_activity_query_size` bytes, before the DELETE of
/// a planned statement.
fn wait_in_statement(
    job: &mut Job,
    client: &mut Client,
    rng: &mut Rng,
    verb: &str,
) -> Option<String> {
    let sleeping = |client: &mut Client| {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = \
                 'astegni-delete-expired' AND datname = current_database() \
                 AND state = 'active' AND wait_event = 'PgSleep'",
                &[],
            )
            .is_ok_and(|row| row.get::<_, i64>(0) > 0)
    };
    poll_until(job::HANG_LIMIT, || !job.running() || sleeping(client));
    let delay = rng.below(30);
    std::thread::sleep(Duration::from_millis(delay));
    job.running()
        .then(|| format!("in the slow trigger of an {verb} + {delay} ms"))
}

/// A trial whose fault could not land: the job ended before it was seen mid-statement.
fn missed(result: &mut TrialResult) -> String {
    result.fail("the job ended before it was seen in the slow trigger".to_owned());
    "never".to_owned()
}

fn terminate(client: &mut Client) {
    if let Some(pid) = job::backend_pid(client) {
        let _ = client.execute("SELECT pg_terminate_backend($1)", &[&pid]);
    }
}

fn run(name: &str, fault: Fault) {
    run_trials(name, 3, 20, |seed| trial(seed, fault));
}

#[test]
fn kill_9_at_random_moments() {
    run("advertiser_kill_9", Fault::Kill);
}

#[test]
fn kill_9_mid_statement_in_the_advertiser_database() {
    run(
        "advertiser_kill_9_in_advertiser_db",
        Fault::KillInAdvertiserStatement,
    );
}

#[test]
fn kill_9_mid_statement_in_the_user_database() {
    run("advertiser_kill_9_in_user_db", Fault::KillInUserStatement);
}

#[test]
fn advertiser_backend_terminated() {
    run(
        "advertiser_backend_terminated",
        Fault::TerminateAdvertiserBackend,
    );
}

#[test]
fn user_backend_terminated() {
    run(
        "advertiser_user_backend_terminated",
        Fault::TerminateUserBackend,
    );
}
