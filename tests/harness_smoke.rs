//! Checks the test harness itself (tests/common/) against the real
//! server it provides.

mod common;

use common::{TestDb, TestRole};
use postgres::error::SqlState;
use postgres::{Client, NoTls};

#[test]
fn databases_are_isolated_and_dropped() {
    let a = TestDb::create("smoke_iso");
    let b = TestDb::create("smoke_iso");
    assert_ne!(a.name, b.name);
    assert_ne!(a.url, b.url);

    a.exec("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3);");
    assert_eq!(a.scalar_i64("SELECT count(*) FROM t"), 3);
    // Same table name in the other database: independent and empty.
    assert_eq!(
        b.scalar_i64("SELECT count(*) FROM pg_class WHERE relname = 't'"),
        0
    );
    b.exec("CREATE TABLE t (id int)");
    assert_eq!(b.scalar_i64("SELECT count(*) FROM t"), 0);
    assert_eq!(a.scalar_i64("SELECT count(*) FROM t"), 3);

    // Each url really points at its own database.
    let current: String = a
        .client()
        .query_one("SELECT current_database()", &[])
        .expect("current_database")
        .get(0);
    assert_eq!(current, a.name);

    // Drop removes the database, even with a connection still open.
    let a_name = a.name.clone();
    let _open = a.client();
    drop(a);
    let mut admin = common::admin_client();
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&a_name],
        )
        .expect("pg_database query")
        .get(0);
    assert_eq!(left, 0, "database {a_name} still exists after drop");
}

#[test]
fn scalar_i64_reads_integer_types() {
    let db = TestDb::create("smoke_scalar");
    assert_eq!(db.scalar_i64("SELECT 9000000000::bigint"), 9_000_000_000);
    assert_eq!(db.scalar_i64("SELECT 42"), 42); // int4
    assert_eq!(db.scalar_i64("SELECT (-7)::smallint"), -7);
    db.exec(
        "CREATE TABLE sessions (id bigserial PRIMARY KEY, expires_at timestamptz NOT NULL);
         INSERT INTO sessions (expires_at)
           SELECT now() + make_interval(days => g) FROM unnest(ARRAY[-2, -1, 1, 2, 3]) AS g;",
    );
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM sessions WHERE expires_at < now()"),
        2
    );
}

#[test]
#[should_panic(expected = "SQL failed")]
fn exec_panics_with_the_sql_error() {
    let db = TestDb::create("smoke_panic");
    db.exec("SELECT * FROM no_such_table");
}

#[test]
fn password_role_logs_in_over_tcp_with_scram() {
    let Some(port) = common::tcp_port() else {
        eprintln!("skipped: no TCP listener (set ASTEGNI_TEST_TCP_PORT for an external server)");
        return;
    };
    let role = TestRole::create("smoke_login", "s3cret 'pw'");
    let db = TestDb::create("smoke_tcp");
    db.exec(&format!(
        "GRANT CONNECT ON DATABASE \"{}\" TO \"{}\"",
        db.name, role.name
    ));

    let stored = db.scalar_i64(&format!(
        "SELECT count(*) FROM pg_authid WHERE rolname = '{}' AND rolpassword LIKE 'SCRAM-SHA-256$%'",
        role.name
    ));
    assert_eq!(stored, 1, "password is not stored as SCRAM-SHA-256");

    let good = common::tcp_conninfo(&role.name, &role.password, &db.name).expect("tcp conninfo");
    assert!(good.contains(&format!("port={port}")));
    let mut client = Client::connect(&good, NoTls)
        .unwrap_or_else(|e| panic!("scram login failed: {}", common::describe_error(&e)));
    let row = client
        .query_one(
            "SELECT current_user::text, inet_server_addr()::text, current_database()::text",
            &[],
        )
        .expect("query over tcp");
    let (user, addr, dbname): (String, Option<String>, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(user, role.name);
    assert_eq!(
        addr.as_deref(),
        Some("127.0.0.1/32"),
        "not a TCP connection"
    );
    assert_eq!(dbname, db.name);
    drop(client);

    let bad = common::tcp_conninfo(&role.name, "wrong", &db.name).expect("tcp conninfo");
    let err = match Client::connect(&bad, NoTls) {
        Ok(_) => panic!("login with a wrong password succeeded"),
        Err(e) => e,
    };
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_PASSWORD),
        "unexpected error: {}",
        common::describe_error(&err)
    );
}
