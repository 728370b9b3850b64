//! Deletion plans on a database with the production traits (`tests/fixtures/production.sql`):
//! what blocks under `--foreign-keys block`, and, under `delete` and `nullify`, the end state
//! compared table by table with an oracle: the same database whose blocking keys were altered
//! to CASCADE / SET NULL, deleted from plainly. The dry run's lines equal the run's.

mod common;

use std::collections::BTreeMap;

use common::astegni::Astegni;

const PRODUCTION: &str = include_str!("fixtures/production.sql");

/// The users and rows of the scene.
struct Scene {
    /// Due, with every trait hanging off the account.
    leaver: i64,
    /// Due by a "Leave Astegni" request, referenced by nothing that blocks.
    plain_leaver: i64,
    /// Not due; replies to the leaver's messages, and (in some tests) points its own
    /// `kyc_verification_id` at the leaver's verification.
    bystander: i64,
    /// Due, but has earnings (money).
    earner: i64,
    /// Not due; its tutor role is due ("Manage Role").
    tutor: i64,
    tutor_profile: i64,
    /// The leaver's verification.
    verification: i64,
}

/// The Astegni fixture with the production traits, filled with the scene.
fn production(prefix: &str) -> (Astegni, Scene) {
    let astegni = Astegni::new(prefix);
    astegni.db.exec(PRODUCTION);
    let leaver = astegni.user(
        "leaver@example.com",
        Some(&["user", "tutor", "student"]),
        "tutor",
    );
    let leaver_tutor = astegni.profile("tutor", leaver, None);
    astegni.profile("student", leaver, None);
    astegni.leave(leaver, -1);
    let bystander = astegni.user("bystander@example.com", Some(&["user"]), "user");
    let plain_leaver = astegni.user("plain@example.com", Some(&["user"]), "user");
    astegni.db.exec(&format!(
        "INSERT INTO account_deletion_requests (user_id, status, scheduled_deletion_at, role, \
         profile_id, delete_user) VALUES ({plain_leaver}, 'pending', now() - interval '1 day', \
         NULL, NULL, FALSE)"
    ));
    let earner = astegni.user("earner@example.com", Some(&["user"]), "user");
    astegni.leave(earner, -1);
    let tutor = astegni.user("tutor@example.com", Some(&["user", "tutor"]), "tutor");
    let tutor_profile = astegni.profile("tutor", tutor, Some(-1));
    let verification = astegni.db.scalar_i64(&format!(
        "INSERT INTO kyc_verifications (user_id, status) VALUES ({leaver}, 'ok') \
         RETURNING id::bigint"
    ));
    astegni.db.exec(&format!(
        "UPDATE users SET kyc_verification_id = {verification} WHERE id = {leaver};
         INSERT INTO refresh_tokens (user_id, token) VALUES ({leaver}, 'a'), ({leaver}, 'b'),
             ({bystander}, 'c');
         INSERT INTO otps (user_id, code) VALUES ({leaver}, '123456');
         INSERT INTO favorite_tutors (user_id, tutor_profile_id)
             VALUES ({leaver}, {leaver_tutor}), ({bystander}, {leaver_tutor});
         WITH p AS (INSERT INTO playlists (user_id, title) VALUES ({leaver}, 'math') RETURNING id)
         INSERT INTO playlist_videos (playlist_id, url) SELECT id, u FROM p, (VALUES ('v1'), ('v2')) v(u);
         INSERT INTO session_notes (author_user_id, body) VALUES ({leaver}, 'note'),
             ({bystander}, 'kept');
         INSERT INTO message_read_receipts (user_id) VALUES ({leaver}), ({leaver}), ({bystander});
         WITH m1 AS (INSERT INTO chat_messages (sender_user_id, body) VALUES ({leaver}, 'hi')
                     RETURNING id),
              m2 AS (INSERT INTO chat_messages (sender_user_id, reply_to_id, body)
                     SELECT {bystander}, id, 'hello' FROM m1 RETURNING id)
         INSERT INTO chat_messages (sender_user_id, reply_to_id, body)
             SELECT {leaver}, id, 'bye' FROM m2;
         INSERT INTO chat_messages (sender_user_id, body) VALUES ({bystander}, 'alone');
         WITH b AS (INSERT INTO shared_boards (owner_user_id, title) VALUES ({leaver}, 'board')
                    RETURNING id, owner_user_id)
         INSERT INTO board_members (board_id, board_owner_id, member_name)
             SELECT id, owner_user_id, n FROM b, (VALUES ('a'), ('b')) v(n);
         INSERT INTO tutoring_earnings (student_user_id, amount) VALUES ({earner}, 100);"
    ));
    for (profile, name) in [(leaver_tutor, "leaver"), (tutor_profile, "tutor")] {
        astegni.db.exec(&format!(
            "WITH p AS (INSERT INTO tutor_packages (tutor_id, name) VALUES ({profile}, '{name}')
                        RETURNING id)
             INSERT INTO enrolled_students (tutor_id, package_id, student_name)
                 SELECT {profile}, id, 'Almaz' FROM p;
             WITH r AS (INSERT INTO video_reels (tutor_profile_id, title) VALUES ({profile}, 'r')
                        RETURNING id)
             INSERT INTO video_chapters (reel_id, title) SELECT id, c FROM r,
                 (VALUES ('one'), ('two')) v(c);"
        ));
    }
    let scene = Scene {
        leaver,
        plain_leaver,
        bystander,
        earner,
        tutor,
        tutor_profile,
        verification,
    };
    (astegni, scene)
}

fn content(astegni: &Astegni) -> BTreeMap<String, String> {
    astegni.content_without_times()
}

/// Alters the foreign keys `cascade` to ON DELETE CASCADE and `set_null` to SET NULL.
fn alter_keys(astegni: &Astegni, cascade: &[&str], set_null: &[&str]) {
    let mut client = astegni.db.client();
    for (names, action) in [(cascade, "CASCADE"), (set_null, "SET NULL")] {
        for name in names {
            let definition: String = client
                .query_one(
                    "SELECT conrelid::regclass::text || '|' || pg_get_constraintdef(oid) \
                     FROM pg_constraint WHERE conname = $1",
                    &[name],
                )
                .unwrap_or_else(|error| panic!("constraint {name}: {error}"))
                .get(0);
            let (table, definition) = definition.split_once('|').expect("table|definition");
            let definition = definition
                .replace(" ON DELETE RESTRICT", "")
                .replace(" ON DELETE SET NULL", "");
            let (head, tail) = match definition.split_once(" DEFERRABLE") {
                Some((head, tail)) => (head.to_owned(), format!(" DEFERRABLE{tail}")),
                None => (definition.clone(), String::new()),
            };
            astegni.db.exec(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT {name}, \
                 ADD CONSTRAINT {name} {head} ON DELETE {action}{tail}"
            ));
        }
    }
}

/// The report lines that name a deletion or a blocked one, without their time stamps, the
/// dry run's verb turned into the run's.
fn outcome_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once("] ").map(|(_, text)| text.trim()))
        .filter(|text| {
            text.starts_with("[DELETED]")
                || text.starts_with("[WOULD DELETE]")
                || text.starts_with("[BLOCKED]")
        })
        .map(|text| text.replace("[WOULD DELETE]", "[DELETED]"))
        .collect()
}

/// Runs a dry run, then the run, with `args`; the dry run must predict the run's lines and
/// exit code, and change nothing. Returns the run's exit code and output.
fn dry_run_then_run(astegni: &Astegni, args: &[&str]) -> (i32, String, String) {
    let before = content(astegni);
    let (dry_code, dry_out, dry_err) = astegni.run(&[args, &["--dry-run"]].concat());
    assert_eq!(content(astegni), before, "the dry run changed something");
    let (code, stdout, stderr) = astegni.run(args);
    assert_eq!(
        outcome_lines(&dry_out),
        outcome_lines(&stdout),
        "the dry run did not predict the run:\n{dry_out}\n{dry_err}\n---\n{stdout}"
    );
    assert_eq!(dry_code, code, "{dry_out}\n{stdout}\n{stderr}");
    (code, stdout, stderr)
}

fn line_of<'a>(stdout: &'a str, start: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.contains(start))
        .unwrap_or_else(|| panic!("no line with {start:?} in:\n{stdout}"))
}

#[test]
fn under_block_every_key_that_blocks_is_named_and_nothing_of_it_changes() {
    let (astegni, scene) = production("planblock");
    astegni.db.exec(&format!(
        "UPDATE users SET kyc_verification_id = {} WHERE id = {}",
        scene.verification, scene.bystander
    ));
    let before = content(&astegni);
    let (code, stdout, stderr) = dry_run_then_run(&astegni, &[]);
    assert_eq!(
        code, 1,
        "blocked deletions fail the run: {stdout}\n{stderr}"
    );
    let leaver = line_of(
        &stdout,
        &format!(
            "[BLOCKED] account of user {} <leaver@example.com>: ",
            scene.leaver
        ),
    );
    for blocker in [
        "chat_messages_sender_user_id_fkey (chat_messages: 2 rows)",
        "favorite_tutors_user_id_fkey (favorite_tutors: 1 row)",
        "otps_user_id_fkey (otps: 1 row)",
        "playlists_user_id_fkey (playlists: 1 row)",
        "refresh_tokens_user_id_fkey (refresh_tokens: 2 rows)",
        "session_notes_author_user_id_fkey (session_notes: 1 row)",
        "shared_boards_owner_user_id_fkey (shared_boards: 1 row)",
        "student_profiles_user_id_fkey (student_profiles: 1 row)",
        "tutor_profiles_user_id_fkey (tutor_profiles: 1 row)",
        "users_kyc_verification_id_fkey (users: 1 row)",
    ] {
        assert!(leaver.contains(blocker), "{blocker} missing: {leaver}");
    }
    assert!(
        leaver.contains("--foreign-key users.users_kyc_verification_id_fkey=nullify"),
        "{leaver}"
    );
    assert!(
        !leaver.contains("message_read_receipts"),
        "SET NULL on a nullable column does not block: {leaver}"
    );
    let earner = line_of(&stdout, &format!("account of user {} ", scene.earner));
    assert!(
        earner.contains("tutoring_earnings_student_user_id_fkey (tutoring_earnings: 1 row)"),
        "{earner}"
    );
    let tutor = line_of(
        &stdout,
        &format!(
            "role 'tutor' (profile {}) of user {}",
            scene.tutor_profile, scene.tutor
        ),
    );
    assert!(
        tutor.contains("[BLOCKED]")
            && tutor.contains("video_chapters_reel_id_fkey (video_chapters: 2 rows)"),
        "a key two levels down blocks: {tutor}"
    );
    assert!(
        !tutor.contains("enrolled_students"),
        "a SET NULL on a NOT NULL column that a sibling cascade rescues does not block: {tutor}"
    );
    assert!(
        stdout.contains(&format!(
            "[DELETED] account of user {} <plain@example.com>",
            scene.plain_leaver
        )),
        "{stdout}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with("COMPLETED: 0 roles and 1 accounts deleted, 3 blocked"),
        "{stdout}"
    );
    assert!(
        stderr.contains("BLOCKED") || stderr.contains("Blocked"),
        "{stderr}"
    );
    let after = content(&astegni);
    for (table, was) in &before {
        if !matches!(table.as_str(), "users" | "account_deletion_requests") {
            assert_eq!(
                Some(was),
                after.get(table),
                "a blocked deletion changed {table}"
            );
        }
    }
    assert!(astegni.exists("users", scene.leaver) && astegni.exists("users", scene.earner));
    assert_eq!(
        astegni.roles_of(scene.tutor),
        Some(vec!["user".into(), "tutor".into()])
    );
}

/// The keys the scene's `delete` run deletes through, and the one it nullifies.
const DELETED_THROUGH: [&str; 13] = [
    "refresh_tokens_user_id_fkey",
    "otps_user_id_fkey",
    "favorite_tutors_user_id_fkey",
    "playlists_user_id_fkey",
    "playlist_videos_playlist_id_fkey",
    "session_notes_author_user_id_fkey",
    "chat_messages_sender_user_id_fkey",
    "chat_messages_reply_to_id_fkey",
    "shared_boards_owner_user_id_fkey",
    "board_members_board_id_board_owner_id_fkey",
    "tutor_profiles_user_id_fkey",
    "student_profiles_user_id_fkey",
    "video_chapters_reel_id_fkey",
];

#[test]
fn delete_and_nullify_end_like_cascades_and_set_null() {
    let args = [
        "--foreign-keys",
        "delete",
        "--foreign-key",
        "users.users_kyc_verification_id_fkey=nullify",
        "--foreign-key",
        "tutoring_earnings_student_user_id_fkey=block",
    ];
    let (astegni, scene) = production("plandelete");
    let (oracle, _) = production("planoracle");
    for db in [&astegni, &oracle] {
        db.db.exec(&format!(
            "UPDATE users SET kyc_verification_id = {} WHERE id = {}",
            scene.verification, scene.bystander
        ));
    }
    assert_eq!(content(&astegni), content(&oracle), "the two scenes differ");
    alter_keys(
        &oracle,
        &[&DELETED_THROUGH[..], &["enrolled_students_package_id_fkey"]].concat(),
        &["users_kyc_verification_id_fkey"],
    );
    let (code, stdout, stderr) = dry_run_then_run(&astegni, &args);
    assert_eq!(code, 1, "the earner stays blocked: {stdout}\n{stderr}");
    let (oracle_code, oracle_out, oracle_err) = oracle.run(&[]);
    assert_eq!(oracle_code, 1, "{oracle_out}\n{oracle_err}");
    let (ours, theirs) = (content(&astegni), content(&oracle));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (table, mine) in &ours {
        assert_eq!(
            Some(mine),
            theirs.get(table),
            "{table} differs from the oracle's\n{stdout}"
        );
    }
    assert!(!astegni.exists("users", scene.leaver));
    assert!(astegni.exists("users", scene.bystander));
    assert_eq!(
        astegni.db.scalar_i64("SELECT count(*) FROM chat_messages"),
        1,
        "replies to the leaver's messages go too, to any depth: only 'alone' is left"
    );
    let leaver = line_of(
        &stdout,
        &format!("[DELETED] account of user {} ", scene.leaver),
    );
    assert!(leaver.contains("dependent rows"), "{leaver}");
    assert!(
        line_of(
            &stdout,
            &format!("role 'tutor' (profile {})", scene.tutor_profile)
        )
        .contains("[DELETED]"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, &format!("account of user {} ", scene.earner)).contains("[BLOCKED]"),
        "{stdout}"
    );
    assert!(
        stderr.contains("DEPENDENTS") || stdout.contains("dependent rows"),
        "{stderr}"
    );
}

#[test]
fn another_users_row_is_never_deleted_and_blocks_even_under_delete() {
    let (astegni, scene) = production("planotheruser");
    astegni.db.exec(&format!(
        "UPDATE users SET kyc_verification_id = {} WHERE id = {}",
        scene.verification, scene.bystander
    ));
    let (code, stdout, stderr) = dry_run_then_run(&astegni, &["--foreign-keys", "delete"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let leaver = line_of(&stdout, &format!("account of user {} ", scene.leaver));
    assert!(
        leaver.contains("[BLOCKED]")
            && leaver.contains("users_kyc_verification_id_fkey (users: 1 row)")
            && leaver.contains("=nullify"),
        "{leaver}"
    );
    assert!(astegni.exists("users", scene.leaver) && astegni.exists("users", scene.bystander));
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM refresh_tokens WHERE user_id = {}",
            scene.leaver
        )),
        2,
        "nothing of a blocked unit is deleted"
    );
}

#[test]
fn bad_foreign_key_rules_are_configuration_errors_and_change_nothing() {
    let (astegni, _) = production("planrules");
    let before = content(&astegni);
    for (rule, expected) in [
        ("no_such_fkey=delete", "no such foreign key"),
        ("refresh_tokens_user_id_fkey=drop", "unknown action"),
        (
            "refresh_tokens_user_id_fkey=nullify",
            "column refresh_tokens.user_id is NOT NULL",
        ),
        (
            "other_table.refresh_tokens_user_id_fkey=delete",
            "no such foreign key",
        ),
    ] {
        let (code, stdout, stderr) = astegni.run(&["--foreign-key", rule]);
        assert_eq!(code, 2, "{rule}: {stdout}\n{stderr}");
        assert!(stderr.contains(expected), "{rule}: {stderr}");
    }
    let (code, _, stderr) = astegni.run(&["--foreign-keys", "cascade"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected block, delete"), "{stderr}");
    assert_eq!(content(&astegni), before, "a refused run changed something");
}

#[test]
fn check_names_blocking_and_unindexed_keys_and_draws_the_plan() {
    let (astegni, _) = production("plancheck");
    let (code, stdout, stderr) = astegni.run(&["check"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let blocking = line_of(&stdout, "BLOCKS refresh_tokens_user_id_fkey");
    assert!(
        blocking.contains("refresh_tokens (user_id) -> users, ON DELETE NO ACTION")
            && blocking.contains("blocks 1 of the deletions due now"),
        "{blocking}"
    );
    assert!(
        stdout.contains(
            "ALTER TABLE \"public\".\"refresh_tokens\" DROP CONSTRAINT \
             \"refresh_tokens_user_id_fkey\", ADD CONSTRAINT \"refresh_tokens_user_id_fkey\" \
             FOREIGN KEY (\"user_id\") REFERENCES \"public\".\"users\" (\"id\") ON DELETE CASCADE;"
        ),
        "{stdout}"
    );
    let unindexed = line_of(
        &stdout,
        "CREATE INDEX CONCURRENTLY ON \"public\".\"refresh_tokens\"",
    );
    assert!(
        unindexed.contains("refresh_tokens (user_id) -> users"),
        "{unindexed}"
    );
    assert!(
        !stdout.contains("CREATE INDEX CONCURRENTLY ON \"public\".\"otps\""),
        "otps.user_id has an index: {stdout}"
    );
    let (code, dot, stderr) = astegni.run(&["check", "--graph"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(dot.starts_with("digraph deletion_plan {"), "{dot}");
    assert!(
        dot.contains("\"users\" -> \"refresh_tokens\" [label=\"refresh_tokens_user_id_fkey\\nNO ACTION (blocks)\", color=red"),
        "{dot}"
    );
    let svg = draw(&dot);
    assert!(svg.contains("<svg"), "dot did not draw it: {svg}");
}

/// Graphviz's `dot -Tsvg` on `graph` (the `graphviz` package; `.ci/run` installs it).
fn draw(graph: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("graphviz's dot (apt install graphviz)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(graph.as_bytes())
        .expect("write the graph");
    let output = child.wait_with_output().expect("dot runs");
    assert!(output.status.success(), "dot failed on:\n{graph}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn a_run_slowed_by_unindexed_keys_says_so_once() {
    let astegni = Astegni::new("planslow");
    astegni.db.exec(PRODUCTION);
    for n in 0..2 {
        let user = astegni.user(&format!("slow{n}@example.com"), Some(&["user"]), "user");
        astegni.leave(user, -1);
        astegni.db.exec(&format!(
            "INSERT INTO refresh_tokens (user_id, token) VALUES ({user}, 't')"
        ));
    }
    // A deletion that takes its time, as one that scans a large table per deleted row does.
    astegni.db.exec(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.6); RETURN OLD; END $$;
         CREATE TRIGGER users_slow BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION slow();",
    );
    let (code, stdout, stderr) = astegni.run(&["--foreign-keys", "delete"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("have no index"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(
        warnings[0].contains("[WARNING] 11 foreign keys on the deletion path have no index")
            && warnings[0].contains("astegni-delete-expired check"),
        "{stdout}"
    );
    let (code, stdout, _) = astegni.run(&["--foreign-keys", "delete"]);
    assert_eq!(code, 0);
    assert!(
        !stdout.contains("have no index"),
        "nothing deleted, no warning: {stdout}"
    );
}

#[test]
fn a_missing_privilege_on_a_dependent_table_is_a_configuration_error() {
    let (astegni, _) = production("planprivilege");
    let role = common::TestRole::create("planprivilege", "secret");
    astegni.db.exec(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{0}\";
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO \"{0}\";
         GRANT CREATE ON SCHEMA public TO \"{0}\";
         REVOKE DELETE ON refresh_tokens FROM \"{0}\";",
        role.name
    ));
    let before = content(&astegni);
    let url = common::tcp_conninfo(&role.name, "secret", &astegni.db.name).expect("tcp");
    let (code, stdout, stderr) = common::run_job(
        &[
            "--database-url",
            &url,
            "--foreign-keys",
            "delete",
            "--connect-timeout",
            "5",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("lacks the DELETE privilege on table public.refresh_tokens"),
        "{stderr}"
    );
    assert_eq!(content(&astegni), before);
}

/// The plan's changes and the unit's own statement touch the same rows when the requests'
/// key to `users` does not cascade, and role-only requests are marked completed: those run
/// as two statements in one transaction. Requests go with their user under `delete`.
#[test]
fn requests_behind_a_key_that_does_not_cascade_and_role_requests_under_a_plan() {
    let (astegni, scene) = production("planrequests");
    astegni.db.exec(
        "ALTER TABLE account_deletion_requests
             DROP CONSTRAINT account_deletion_requests_user_id_fkey,
             ADD CONSTRAINT account_deletion_requests_user_id_fkey FOREIGN KEY (user_id)
             REFERENCES users (id)",
    );
    let request = astegni.request(scene.tutor, -1, Some("student"));
    let student = astegni.profile("student", scene.tutor, None);
    astegni.db.exec(&format!(
        "UPDATE users SET roles = '[\"user\",\"tutor\",\"student\"]' WHERE id = {}",
        scene.tutor
    ));
    let (code, stdout, stderr) = astegni.run(&["--dry-run"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        line_of(&stdout, &format!("account of user {} ", scene.plain_leaver))
            .contains("account_deletion_requests_user_id_fkey (account_deletion_requests: 1 row)"),
        "{stdout}"
    );
    let args = [
        "--foreign-keys",
        "delete",
        "--foreign-key",
        "users.users_kyc_verification_id_fkey=nullify",
    ];
    let (code, stdout, stderr) = dry_run_then_run(&astegni, &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!astegni.exists("users", scene.plain_leaver), "{stdout}");
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM account_deletion_requests WHERE user_id = {}",
            scene.plain_leaver
        )),
        0,
        "its request went with it"
    );
    assert!(!astegni.exists("student_profiles", student), "{stdout}");
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM account_deletion_requests WHERE id = {request} \
             AND status = 'completed'"
        )),
        1
    );
    assert_eq!(astegni.roles_of(scene.tutor), Some(vec!["user".into()]));
}

/// A trigger that keeps a user (a "soft delete") makes the unit's DELETE leave it out: the
/// plan's work for it must not stay either.
#[test]
fn a_unit_its_delete_leaves_out_keeps_its_dependents() {
    let (astegni, scene) = production("planskip");
    astegni.db.exec(&format!(
        "CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF OLD.id = {} THEN RETURN NULL; END IF; RETURN OLD; END $$;
         CREATE TRIGGER users_keep BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION keep();",
        scene.leaver
    ));
    let (code, stdout, stderr) = astegni.run(&[
        "--foreign-keys",
        "delete",
        "--foreign-key",
        "users.users_kyc_verification_id_fkey=nullify",
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(astegni.exists("users", scene.leaver));
    assert!(
        line_of(&stdout, &format!("account of user {}", scene.leaver)).contains("[FAILED]"),
        "{stdout}"
    );
    assert_eq!(
        astegni.db.scalar_i64(&format!(
            "SELECT count(*) FROM refresh_tokens WHERE user_id = {}",
            scene.leaver
        )),
        2,
        "the leaver's tokens are still there"
    );
    assert!(
        !astegni.exists("users", scene.plain_leaver),
        "the others go: {stdout}"
    );
}
