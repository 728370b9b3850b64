//! Bad input: malformed URLs, wrong password, unknown host, TLS refused, missing tables,
//! unexpected column types, hostile identifiers, bad flags, bad env files. Each case must give
//! one clear error line (plus the usage hint for usage errors, or "retrying" warnings while a
//! server is unreachable), the documented exit code, no secret anywhere in the output, no
//! report on stdout, and no change to the database.

mod common;
#[path = "faults/support/mod.rs"]
mod fault_support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use common::astegni::{Astegni, Variant};
use common::{
    TcpAccess, TestDb, TestRole, is_throwaway_cluster, tcp_conninfo, tcp_port, tls_ca_file,
};
use fault_support::job;

/// The password of the test role; must never appear in any output.
const SECRET: &str = "Fault-S3cret-Pw";
/// A wrong password; must never appear either.
const WRONG: &str = "Wr0ng-S3cret-Pw";

/// One bad-input case.
struct Case {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    code: i32,
    /// Must appear in the error line.
    expect: String,
}

fn case(name: &str, args: &[&str], code: i32, expect: &str) -> Case {
    Case {
        name: name.to_owned(),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        env: Vec::new(),
        code,
        expect: expect.to_owned(),
    }
}

impl Case {
    fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// Runs `case` and returns what is wrong with the outcome (empty: all good).
fn run_case(case: &Case) -> Vec<String> {
    // First, so that a case may end with a flag missing its value.
    let mut args: Vec<&str> = Vec::new();
    if !case.args.iter().any(|arg| arg == "--log-target") {
        args.extend(["--log-target", "stderr"]);
    }
    args.extend(case.args.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = case
        .env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let run = job::spawn_args(&args, &env).wait(std::time::Duration::from_secs(60));
    check_outcome(&case.name, case.code, &case.expect, &run)
}

fn check_outcome(name: &str, code: i32, expect: &str, run: &job::Finished) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |text: String| problems.push(format!("{name}: {text}\n{}", run.describe()));
    if run.code != code {
        problem(format!("exit {} (want {code})", run.code));
    }
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("astegni-delete-expired: error: "))
        .collect();
    if errors.len() != 1 {
        problem(format!("{} error lines (want exactly 1)", errors.len()));
    } else if !errors[0].contains(expect) {
        problem(format!("the error line lacks {expect:?}"));
    }
    for line in run.stderr.lines() {
        let allowed = line.starts_with("astegni-delete-expired: error: ")
            || line == "Try 'astegni-delete-expired --help' for more information."
            || (line.starts_with("astegni-delete-expired: warning: cannot connect")
                && line.contains("; retrying (attempt "));
        if !allowed {
            problem(format!("unexpected stderr line {line:?}"));
        }
    }
    if !run.stdout.is_empty() {
        problem("something was written to stdout".to_owned());
    }
    for secret in [SECRET, WRONG] {
        if run.stdout.contains(secret) || run.stderr.contains(secret) {
            problem(format!("the output contains the secret {secret:?}"));
        }
    }
    problems
}

/// A database in the standard schema with due rows, reachable with the test role's password.
struct Scene {
    astegni: Astegni,
}

fn grant_all(db: &TestDb, role: &TestRole) {
    db.exec(&format!(
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO \"{0}\";
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO \"{0}\";
         GRANT CREATE ON SCHEMA public TO \"{0}\";",
        role.name
    ));
}

fn scene(prefix: &str, variant: Variant, role: &TestRole) -> Scene {
    let astegni = Astegni::create(prefix, variant);
    let user = astegni.user("a@example.com", Some(&["user", "tutor"]), "tutor");
    astegni.profile("tutor", user, Some(-3));
    let leaver = astegni.user("b@example.com", Some(&["user"]), "user");
    astegni.leave(leaver, -1);
    grant_all(&astegni.db, role);
    Scene { astegni }
}

/// A database with only `ddl` in it, reachable with the test role's password.
fn bare(prefix: &str, ddl: &str, role: &TestRole) -> Astegni {
    let db = TestDb::create(prefix);
    if !ddl.is_empty() {
        db.exec(ddl);
    }
    grant_all(&db, role);
    Astegni {
        db,
        variant: Variant::default(),
    }
}

const USERS_OK: &str = "CREATE TABLE users (id serial PRIMARY KEY, email varchar(255),
    roles json, active_role varchar(50), account_status varchar(30),
    scheduled_deletion_at timestamp);";

#[test]
fn bad_input_gives_one_clear_error_the_documented_code_no_secret_and_no_change() {
    let role = TestRole::create("fault_input", SECRET);
    let main = scene("fault_input", Variant::default(), &role);
    let name = main.astegni.db.name.clone();
    let good = tcp_conninfo(&role.name, SECRET, &name).expect("a TCP listener");
    let port = tcp_port().expect("a TCP listener");
    let url = |query: &str| {
        format!(
            "postgresql://{}:{SECRET}@127.0.0.1:{port}/{name}{query}",
            role.name
        )
    };
    let before = main.astegni.snapshot();

    let dir = std::env::temp_dir().join(format!("astegni-fault-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = |file: &str| dir.join(file).display().to_string();
    std::fs::write(
        path("latin1.env"),
        [
            b"DATABASE_URL=postgresql://u:".as_slice(),
            SECRET.as_bytes(),
            b"\xe9@db/x\n",
        ]
        .concat(),
    )
    .expect("write");
    std::fs::write(
        path("syntax.env"),
        format!("# the backend's .env\nDATABASE_URL=\"postgresql://u:{SECRET}@db/x\n"),
    )
    .expect("write");
    std::fs::write(path("nokey.env"), format!("postgresql://u:{SECRET}@db/x\n")).expect("write");
    std::fs::create_dir_all(path("directory.env")).expect("mkdir");
    std::fs::write(
        path("unrelated-ca.pem"),
        common::unrelated_ca_pem("unrelated"),
    )
    .expect("write");

    let mut cases = vec![
        // Malformed URLs and conninfo.
        case(
            "URL with a non-numeric port",
            &[
                "--database-url",
                &format!("postgresql://u:{SECRET}@db:port/x"),
            ],
            2,
            "invalid value for option `port`",
        ),
        case(
            "URL with an unclosed IPv6 bracket",
            &["--database-url", &format!("postgresql://u:{SECRET}@[::1/x")],
            2,
            "invalid database URL",
        ),
        case(
            "URL with bad percent-encoding",
            &["--database-url", &url("?sslrootcert=%zz")],
            2,
            "percent-encoding",
        ),
        case(
            "URL with an unknown sslmode",
            &["--database-url", &url("?sslmode=sometimes")],
            2,
            "invalid sslmode \"sometimes\"",
        ),
        case(
            "URL with an unknown option",
            &["--database-url", &url("?bogus=1")],
            2,
            "unknown option `bogus`",
        ),
        case(
            "conninfo with an unterminated quote",
            &["--database-url", &format!("host=db password='{SECRET}")],
            2,
            "unterminated quoted value",
        ),
        case(
            "conninfo with a bare word",
            &["--database-url", "host=db nonsense"],
            2,
            "expected key=value",
        ),
        case("empty URL", &["--database-url", ""], 2, "empty"),
        case("no URL at all", &[], 2, "no database given"),
        // Reaching the server.
        case(
            "wrong password",
            &[
                "--database-url",
                &tcp_conninfo(&role.name, WRONG, &name).expect("tcp"),
            ],
            2,
            "password authentication failed",
        ),
        case(
            "unknown database",
            &[
                "--database-url",
                &tcp_conninfo(&role.name, SECRET, "astegni_no_such_db").expect("tcp"),
            ],
            2,
            "does not exist",
        ),
        case(
            "unknown host",
            &[
                "--database-url",
                &format!("host=astegni-db.invalid user=u password={SECRET} dbname=x"),
                "--connect-timeout",
                "2",
            ],
            75,
            "database unreachable",
        ),
        case(
            "sslrootcert that does not exist",
            &[
                "--database-url",
                &url("?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"),
            ],
            2,
            "cannot read sslrootcert",
        ),
        case(
            "TLS against an untrusted CA",
            &[
                "--database-url",
                &url(&format!(
                    "?sslmode=verify-ca&sslrootcert={}",
                    path("unrelated-ca.pem")
                )),
            ],
            2,
            "certificate verify failed",
        ),
        // Flags.
        case(
            "unknown flag",
            &["--database-url", &good, "--bogus"],
            2,
            "invalid option '--bogus'",
        ),
        case(
            "repeated flag",
            &[
                "--database-url",
                &good,
                "--max-accounts",
                "1",
                "--max-accounts",
                "2",
            ],
            2,
            "--max-accounts given more than once",
        ),
        case(
            "repeated URL flag",
            &["--database-url", &good, "--database-url", &good],
            2,
            "--database-url given more than once",
        ),
        case(
            "flag without its value",
            &["--database-url", &good, "--lock-timeout"],
            2,
            "missing argument for option '--lock-timeout'",
        ),
        case(
            "unknown command",
            &["purge", "--database-url", &good],
            2,
            "unknown command \"purge\"",
        ),
        case(
            "negative number",
            &["--database-url", &good, "--max-accounts", "-1"],
            2,
            "--max-accounts must be a non-negative whole number",
        ),
        case(
            "timeout out of range",
            &["--database-url", &good, "--statement-timeout", "999999"],
            2,
            "--statement-timeout must be at most 86400 seconds",
        ),
        case(
            "invalid time zone",
            &["--database-url", &good, "--timezone", "Mars/Olympus"],
            2,
            "invalid --timezone \"Mars/Olympus\"",
        ),
        case(
            "invalid log target",
            &["--database-url", &good, "--log-target", "syslog"],
            2,
            "\"syslog\"",
        ),
        case(
            "invalid boolean in the environment",
            &["--database-url", &good],
            2,
            "ASTEGNI_DRY_RUN must be true or false",
        )
        .env("ASTEGNI_DRY_RUN", "maybe"),
        // Hostile identifiers in --role.
        case(
            "SQL in a --role table",
            &[
                "--database-url",
                &good,
                "--role",
                "x=users; DROP TABLE users",
            ],
            2,
            "invalid table name",
        ),
        case(
            "quote in a --role table",
            &[
                "--database-url",
                &good,
                "--role",
                "tutor=tutor_profiles\"--",
            ],
            2,
            "invalid table name",
        ),
        case(
            "quote in a --role name",
            &["--database-url", &good, "--role", "tu'tor=tutor_profiles"],
            2,
            "invalid role name",
        ),
        case(
            "three-part --role table",
            &["--database-url", &good, "--role", "tutor=a.b.c"],
            2,
            "invalid table name",
        ),
        case(
            "--role naming a catalog table",
            &[
                "--database-url",
                &good,
                "--role",
                "tutor=pg_catalog.pg_authid",
            ],
            2,
            "has no column",
        ),
        case(
            "--role naming a missing table",
            &["--database-url", &good, "--role", "coach=coach_profiles"],
            2,
            "profile table coach_profiles for role coach not found",
        ),
        case(
            "--role without a table",
            &["--database-url", &good, "--role", "tutor"],
            2,
            "expected NAME=TABLE",
        ),
        case(
            "the same role twice",
            &[
                "--database-url",
                &good,
                "--role",
                "a=tutor_profiles",
                "--role",
                "a=student_profiles",
            ],
            2,
            "role \"a\" given more than once",
        ),
        // Env files.
        case(
            "env file that is missing",
            &["--env-file", &path("missing.env")],
            2,
            "cannot read env file",
        ),
        case(
            "env file that is a directory",
            &["--env-file", &path("directory.env")],
            2,
            "cannot read env file",
        ),
        case(
            "env file that is not UTF-8",
            &["--env-file", &path("latin1.env")],
            2,
            "is not valid UTF-8",
        ),
        case(
            "env file with an unterminated quote",
            &["--env-file", &path("syntax.env")],
            2,
            "line 2: unterminated double quote",
        ),
        case(
            "env file line without KEY=",
            &["--env-file", &path("nokey.env")],
            2,
            "line 1: expected KEY=value",
        ),
    ];
    // TLS required but refused: a role the server lets in only without TLS.
    let plain = TestRole::with_access("fault_plain", SECRET, TcpAccess::PlainOnly);
    if let Some(plain) = &plain {
        grant_all(&main.astegni.db, plain);
        let conninfo = tcp_conninfo(&plain.name, SECRET, &name).expect("tcp");
        cases.push(case(
            "TLS required, refused by the server for this user",
            &["--database-url", &format!("{conninfo} sslmode=require")],
            2,
            "pg_hba.conf rejects connection",
        ));
    }
    // TLS required where the server offers none: the throwaway cluster's Unix socket (the
    // database's conninfo). An existing server is named by a URL, reached over TCP, and
    // may well offer TLS there.
    if is_throwaway_cluster() {
        let socket_url = main.astegni.db.url.clone();
        cases.push(case(
            "TLS required, the server has none",
            &["--database-url", &format!("{socket_url} sslmode=require")],
            2,
            "TLS",
        ));
    }
    if let Some(ca) = tls_ca_file() {
        cases.push(case(
            "verify-full against a certificate for another name",
            &[
                "--database-url",
                &url(&format!(
                    "?sslmode=verify-full&sslrootcert={}",
                    ca.display()
                )),
            ],
            2,
            "certificate verify failed",
        ));
    }
    // A role that may not delete.
    let reader = TestRole::create("fault_reader", SECRET);
    main.astegni.db.exec(&format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{}\"",
        reader.name
    ));
    cases.push(case(
        "missing privilege",
        &[
            "--database-url",
            &tcp_conninfo(&reader.name, SECRET, &name).expect("tcp"),
        ],
        2,
        "lacks the UPDATE privilege on table users",
    ));

    let mut problems = Vec::new();
    for case in &cases {
        problems.extend(run_case(case));
    }

    // DATABASE_URL that is not UTF-8 (std::process::Command takes OsStr values).
    let mut command = std::process::Command::new(job::exe());
    command.env(
        "DATABASE_URL",
        OsStr::from_bytes(&[b"host=db password=".as_slice(), SECRET.as_bytes(), b"\xff"].concat()),
    );
    let run = job::spawn_command(command, &["--log-target", "stderr"], &[])
        .wait(std::time::Duration::from_secs(30));
    problems.extend(check_outcome(
        "DATABASE_URL not UTF-8",
        2,
        "DATABASE_URL is not valid UTF-8",
        &run,
    ));
    let count = cases.len() + 1;

    // Schema problems, each in its own database.
    let schema_cases: Vec<(&str, String, &str)> = vec![
        (
            "missing users table",
            String::new(),
            "table users not found",
        ),
        (
            "roles column of type integer[]",
            USERS_OK.replace("roles json", "roles integer[]"),
            "column users.roles has type integer[]; expected json, jsonb, text[] or varchar[]",
        ),
        (
            "roles column of type varchar",
            USERS_OK.replace("roles json", "roles varchar(200)"),
            "column users.roles has type character varying(200)",
        ),
        (
            "non-integer user ids",
            USERS_OK.replace("id serial PRIMARY KEY", "id uuid PRIMARY KEY"),
            "column users.id has type uuid",
        ),
        (
            "non-integer profile user_id",
            format!(
                "{USERS_OK} CREATE TABLE tutor_profiles (id serial PRIMARY KEY, user_id text,
                 is_active boolean, scheduled_deletion_at timestamp);"
            ),
            "column tutor_profiles.user_id has type text",
        ),
        (
            "scheduled_deletion_at of type text",
            USERS_OK.replace(
                "scheduled_deletion_at timestamp",
                "scheduled_deletion_at text",
            ),
            "column users.scheduled_deletion_at has type text",
        ),
        (
            "audit table without its columns",
            format!(
                "{USERS_OK} CREATE TABLE deletion_audit_log (id serial PRIMARY KEY, note text);"
            ),
            "table deletion_audit_log has no column deletion_type",
        ),
        (
            "requests table without scheduled_deletion_at",
            format!(
                "{USERS_OK} CREATE TABLE account_deletion_requests (id serial PRIMARY KEY,
                 user_id integer, status varchar(20));"
            ),
            "table account_deletion_requests has no column scheduled_deletion_at",
        ),
    ];
    let schema_count = schema_cases.len();
    for (label, ddl, expect) in schema_cases {
        let db = bare("fault_schema", &ddl, &role);
        let before = db.snapshot();
        let conninfo = tcp_conninfo(&role.name, SECRET, &db.db.name).expect("tcp");
        let run = job::spawn_args(
            &["--database-url", &conninfo, "--log-target", "stderr"],
            &[],
        )
        .wait(std::time::Duration::from_secs(60));
        problems.extend(check_outcome(label, 2, expect, &run));
        if db.snapshot() != before {
            problems.push(format!("{label}: the database changed"));
        }
    }

    let _ = std::fs::remove_dir_all(&dir);
    if main.astegni.snapshot() != before {
        problems.push("a refused run changed the database".to_owned());
    }
    eprintln!(
        "[fault-summary] bad_input: cases={} problems={}",
        count + schema_count,
        problems.len()
    );
    assert!(
        count + schema_count >= 20,
        "the issue asks for at least 20 cases"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    drop(main);
    drop(plain);
    drop(reader);
}

/// A connection string that is neither a `postgresql://` URL nor key=value conninfo (a wrong
/// scheme, an upper-case scheme, an unquoted password with a space) must not be echoed.
#[test]
fn a_connection_string_that_is_not_key_value_is_never_echoed() {
    for url in [
        format!("mysql://astegni:{SECRET}@db/astegni"),
        format!("POSTGRESQL://astegni:{SECRET}@db/astegni"),
        format!("postgresql:/astegni:{SECRET}@db/astegni"),
        format!("host=db user=astegni password=my {SECRET}"),
    ] {
        let run = job::spawn_args(&["--database-url", &url, "--log-target", "stderr"], &[])
            .wait(std::time::Duration::from_secs(30));
        let problems = check_outcome(
            &url.replace(SECRET, "<secret>"),
            2,
            "invalid connection string",
            &run,
        );
        assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    }
}
