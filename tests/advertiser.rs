//! The advertiser database: advertiser roles deleted where their profiles live, the role
//! removed and audited in the user database, across interrupted runs, restores and locks.

mod common;

use common::TestDb;
use common::astegni::Astegni;

/// The advertiser database's schema: profiles whose `user_id` names a user of the other
/// database without a foreign key, and companion tables with the usual kinds of keys (one
/// that does not cascade, one level down).
const ADVERTISER_SCHEMA: &str = "
    CREATE TABLE advertiser_profiles (
        id serial PRIMARY KEY,
        user_id integer,
        company_name text,
        is_active boolean DEFAULT TRUE,
        scheduled_deletion_at timestamp
    );
    CREATE TABLE campaign_profile (
        id serial PRIMARY KEY,
        advertiser_profile_id integer NOT NULL REFERENCES advertiser_profiles (id)
            ON DELETE CASCADE,
        name text
    );
    CREATE INDEX ON campaign_profile (advertiser_profile_id);
    CREATE TABLE campaign_invoices (
        id serial PRIMARY KEY,
        campaign_id integer NOT NULL REFERENCES campaign_profile (id),
        amount numeric(10, 2)
    );
    CREATE INDEX ON campaign_invoices (campaign_id);";

/// The two databases.
struct Split {
    users: Astegni,
    advertisers: TestDb,
}

impl Split {
    fn new(prefix: &str) -> Split {
        let users = Astegni::new(prefix);
        let advertisers = TestDb::create(&format!("{prefix}_adv"));
        advertisers.exec(ADVERTISER_SCHEMA);
        Split { users, advertisers }
    }

    /// An advertiser profile of `user`; `due_in_hours` None keeps it active, Some(h)
    /// schedules its deletion h hours from now, in naive UTC as "Manage Role" writes it.
    fn profile(&self, user: Option<i64>, due_in_hours: Option<i64>) -> i64 {
        let user = user.map_or("NULL".to_owned(), |id| id.to_string());
        let (active, scheduled) = match due_in_hours {
            None => ("TRUE", "NULL".to_owned()),
            Some(hours) => (
                "FALSE",
                format!("(now() AT TIME ZONE 'UTC') + interval '{hours} hours'"),
            ),
        };
        self.advertisers.scalar_i64(&format!(
            "INSERT INTO advertiser_profiles (user_id, company_name, is_active, \
             scheduled_deletion_at) VALUES ({user}, 'Acme', {active}, {scheduled}) \
             RETURNING id::bigint"
        ))
    }

    fn profile_exists(&self, id: i64) -> bool {
        self.advertisers.scalar_i64(&format!(
            "SELECT count(*) FROM advertiser_profiles WHERE id = {id}"
        )) == 1
    }

    /// The intents in the user database (none when the table does not exist).
    fn intents(&self) -> i64 {
        let exists = self.users.db.scalar_i64(
            "SELECT count(*) FROM pg_class WHERE oid = to_regclass('advertiser_deletion_intents')",
        ) == 1;
        if exists {
            self.users
                .db
                .scalar_i64("SELECT count(*) FROM advertiser_deletion_intents")
        } else {
            0
        }
    }

    /// Runs the job with both databases, role deadlines read in UTC.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec![
            "--advertiser-database-url",
            &self.advertisers.url,
            "--role-timezone",
            "UTC",
            "--timezone",
            "Africa/Addis_Ababa",
        ];
        all.extend_from_slice(args);
        self.users.run(&all)
    }
}

fn advertiser_audit(split: &Split) -> Vec<(Option<i64>, Option<String>)> {
    split
        .users
        .db
        .client()
        .query(
            "SELECT user_id::bigint, user_email::text FROM deletion_audit_log \
             WHERE role_name = 'advertiser' ORDER BY user_id NULLS FIRST",
            &[],
        )
        .expect("audit")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[test]
fn a_due_advertiser_profile_is_deleted_there_and_its_role_removed_here() {
    let split = Split::new("advsplit");
    let user = split.users.user(
        "ads@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    let kept_user = split.users.user(
        "kept@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    let due = split.profile(Some(user), Some(-1));
    split.advertisers.exec(&format!(
        "WITH c AS (INSERT INTO campaign_profile (advertiser_profile_id, name) \
         VALUES ({due}, 'spring') RETURNING id) \
         INSERT INTO campaign_invoices (campaign_id, amount) SELECT id, 10 FROM c"
    ));
    let orphan = split.profile(None, Some(-1));
    let dangling = split.profile(Some(9999), Some(-1));
    let later = split.profile(Some(kept_user), Some(3));
    // Between the two phases of the split the user database still has the table: the copy
    // there is not the one that counts.
    let stale = split.users.profile("advertiser", user, Some(-1));

    let (code, stdout, stderr) = split.run(&["--dry-run"]);
    assert_eq!(
        code, 1,
        "the invoice blocks the profile: {stdout}\n{stderr}"
    );
    assert!(split.profile_exists(due));

    let (code, stdout, stderr) = split.run(&["--foreign-keys", "delete"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!split.profile_exists(due) && !split.profile_exists(orphan));
    assert!(!split.profile_exists(dangling));
    assert!(split.profile_exists(later), "not due yet (UTC)");
    assert_eq!(
        split
            .advertisers
            .scalar_i64("SELECT count(*) FROM campaign_invoices"),
        0
    );
    assert!(split.users.exists("advertiser_profiles", stale), "{stdout}");
    assert_eq!(split.users.roles_of(user), Some(vec!["user".into()]));
    assert_eq!(split.users.active_role(user), "user");
    assert_eq!(
        split.users.roles_of(kept_user),
        Some(vec!["user".into(), "advertiser".into()])
    );
    assert_eq!(
        advertiser_audit(&split),
        vec![
            (None, None),
            (Some(user), Some("ads@example.com".into())),
            (Some(9999), None)
        ]
    );
    assert_eq!(split.intents(), 0, "no intent left behind");
    assert!(
        stdout.contains(&format!(
            "[DELETED] role 'advertiser' (profile {due}) of user {user} <ads@example.com> \
             and 1 dependent row"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "[DELETED] role 'advertiser' (profile {dangling}) of user 9999, who is not in the \
             user database"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "[DELETED] role 'advertiser' (profile {orphan}) of no user"
        )),
        "{stdout}"
    );
    let (code, stdout, _) = split.run(&[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("COMPLETED: 0 roles and 0 accounts deleted"),
        "{stdout}"
    );
}

#[test]
fn the_dry_run_predicts_the_run_and_changes_nothing() {
    let split = Split::new("advdry");
    let user = split.users.user(
        "ads@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    split.profile(Some(user), Some(-2));
    split.profile(None, Some(-2));
    let lines = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|line| {
                line.split_once("] ")
                    .map(|(_, text)| text.trim().to_owned())
            })
            .filter(|text| text.starts_with("[DELETED]") || text.starts_with("[WOULD DELETE]"))
            .map(|text| text.replace("[WOULD DELETE]", "[DELETED]"))
            .collect()
    };
    let (code, dry, stderr) = split.run(&["--dry-run"]);
    assert_eq!(code, 0, "{dry}\n{stderr}");
    assert_eq!(split.intents(), 0);
    assert_eq!(split.users.roles_of(user).map(|r| r.len()), Some(2));
    let (code, run, stderr) = split.run(&[]);
    assert_eq!(code, 0, "{run}\n{stderr}");
    assert_eq!(lines(&dry), lines(&run));
    assert_eq!(lines(&run).len(), 2, "{run}");
}

#[test]
fn an_interrupted_run_is_completed_by_the_next_once_and_restores_win() {
    let split = Split::new("advreplay");
    let gone_user = split.users.user(
        "gone@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    let due_user = split
        .users
        .user("due@example.com", Some(&["user", "advertiser"]), "user");
    let restored_user = split
        .users
        .user("back@example.com", Some(&["user", "advertiser"]), "user");
    let due = split.profile(Some(due_user), Some(-1));
    let restored = split.profile(Some(restored_user), None);
    // What an interrupted run leaves: intents for a profile it deleted (not completed), for
    // one it had not deleted yet, and for one the user restored before it could.
    split.users.db.exec(&format!(
        "CREATE TABLE advertiser_deletion_intents (profile_id bigint PRIMARY KEY, \
         user_id bigint, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO advertiser_deletion_intents (profile_id, user_id)
         VALUES (424242, {gone_user}), ({due}, {due_user}), ({restored}, {restored_user});"
    ));
    let (code, stdout, stderr) = split.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(split.users.roles_of(gone_user), Some(vec!["user".into()]));
    assert_eq!(split.users.roles_of(due_user), Some(vec!["user".into()]));
    assert_eq!(
        split.users.roles_of(restored_user),
        Some(vec!["user".into(), "advertiser".into()]),
        "a restored profile keeps its role"
    );
    assert!(!split.profile_exists(due) && split.profile_exists(restored));
    assert_eq!(
        advertiser_audit(&split)
            .iter()
            .map(|(user, _)| user.unwrap_or_default())
            .collect::<Vec<_>>(),
        {
            let mut expected = vec![gone_user, due_user];
            expected.sort_unstable();
            expected
        },
        "exactly one audit row per completed deletion"
    );
    assert_eq!(split.intents(), 0);
    let (code, _, _) = split.run(&[]);
    assert_eq!(code, 0);
    assert_eq!(advertiser_audit(&split).len(), 2, "not audited twice");
}

#[test]
fn a_profile_the_app_holds_is_left_for_the_next_run() {
    let split = Split::new("advlock");
    let user = split.users.user(
        "ads@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    let due = split.profile(Some(user), Some(-1));
    let mut app = split.advertisers.client();
    let mut transaction = app.transaction().expect("begin");
    transaction
        .execute(
            &format!("SELECT 1 FROM advertiser_profiles WHERE id = {due} FOR UPDATE"),
            &[],
        )
        .expect("lock");
    let (code, stdout, stderr) = split.run(&["--lock-timeout", "1"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("locked by another transaction"), "{stdout}");
    assert!(split.profile_exists(due));
    assert_eq!(split.users.roles_of(user).map(|r| r.len()), Some(2));
    assert!(advertiser_audit(&split).is_empty());
    assert_eq!(split.intents(), 0);
    transaction.rollback().expect("rollback");
    let (code, stdout, stderr) = split.run(&[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!split.profile_exists(due));
    assert_eq!(split.users.roles_of(user), Some(vec!["user".into()]));
}

#[test]
fn an_unreachable_advertiser_database_fails_only_its_part() {
    let astegni = Astegni::new("advdown");
    let leaver = astegni.user("leaver@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("postgresql://nobody:secret-pw@127.0.0.1:{port}/astegni_advertiser_db");
    let (code, stdout, stderr) = astegni.run(&["--advertiser-database-url", &url]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        !astegni.exists("users", leaver),
        "the user database's work ran"
    );
    assert!(
        stdout.contains(
            "[FAILED] the advertiser roles of the advertiser database: the advertiser database: \
             database unreachable after"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("secret-pw") && !stderr.contains("secret-pw"));
    let (code, _, stderr) = astegni.run(&[
        "--advertiser-database-url",
        "postgresql://u:secret-pw@h:port/db",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the advertiser database: --advertiser-database-url: invalid database URL")
            && !stderr.contains("secret-pw"),
        "{stderr}"
    );
}

#[test]
fn the_advertiser_database_url_comes_from_the_env_file() {
    let split = Split::new("advenv");
    let user = split.users.user(
        "ads@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    let due = split.profile(Some(user), Some(-1));
    let env_file = std::env::temp_dir().join(format!("astegni-adv-{}.env", std::process::id()));
    std::fs::write(
        &env_file,
        format!(
            "DATABASE_URL='{}'\nADVERTISER_DATABASE_URL='{}'\nASTEGNI_ROLE_TIMEZONE=UTC\n",
            split.users.db.url, split.advertisers.url
        ),
    )
    .expect("env file");
    let (code, stdout, stderr) =
        common::run_job(&["--env-file", env_file.to_str().expect("utf-8")], &[]);
    std::fs::remove_file(&env_file).expect("cleanup");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!split.profile_exists(due));
    let (code, check, stderr) = split.run(&["check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        check.contains("advertiser database: connected")
            && check.contains(
                "advertiser_profiles (role advertiser) in the user database: present, not used"
            ),
        "{check}"
    );
}

#[test]
fn the_metrics_count_each_database_apart() {
    let split = Split::new("advmetrics");
    let advertiser = split.users.user(
        "ads@example.com",
        Some(&["user", "advertiser"]),
        "advertiser",
    );
    split.profile(Some(advertiser), Some(-1));
    let tutor = split
        .users
        .user("tutor@example.com", Some(&["user", "tutor"]), "tutor");
    split.users.profile("tutor", tutor, Some(-1));
    let leaver = split
        .users
        .user("leaver@example.com", Some(&["user"]), "user");
    split.users.leave(leaver, -1);
    let path = std::env::temp_dir().join(format!("astegni-advmetrics-{}.prom", std::process::id()));

    let (code, stdout, stderr) = split.run(&["--metrics-file", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let metrics = std::fs::read_to_string(&path).expect("metrics written");
    std::fs::remove_file(&path).expect("cleanup");
    for line in [
        "astegni_delete_expired_last_run_deleted{database=\"user\",kind=\"role\"} 1",
        "astegni_delete_expired_last_run_deleted{database=\"user\",kind=\"account\"} 1",
        "astegni_delete_expired_last_run_deleted{database=\"advertiser\",kind=\"role\"} 1",
        "astegni_delete_expired_last_run_deleted{database=\"advertiser\",kind=\"account\"} 0",
        "astegni_delete_expired_last_run_failed{database=\"advertiser\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}
