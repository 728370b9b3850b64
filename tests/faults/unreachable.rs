//! The database unreachable at start (nothing listening, an unknown host, a server that never
//! answers, one that comes up during the retries): exit 75 within `--connect-timeout`, or
//! the run once the server is there.

use std::time::{Duration, Instant};

use crate::support::cluster;
use crate::support::invariants::{self, Phase};
use crate::support::job;
use crate::support::poll_until;
use crate::support::workload::Db;
use crate::trial::{MEDIUM, Trial};

/// Exit 75 after retrying for about `--connect-timeout` seconds, and not much longer.
fn assert_unreachable(url: &str, secret: &str) {
    let started = Instant::now();
    let run = job::spawn(url, &["--connect-timeout", "3"]).wait(Duration::from_secs(60));
    let elapsed = started.elapsed();
    assert_eq!(run.code, 75, "{url}: {}", run.describe());
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed <= Duration::from_secs(5),
        "{url}: exit 75 after {:.1}s with --connect-timeout 3",
        elapsed.as_secs_f64()
    );
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("astegni-delete-expired: error: database unreachable after "),
        "{url}: {}",
        run.describe()
    );
    let attempts: u32 = last
        .split("database unreachable after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(attempts >= 2, "{url}: retried? {last}");
    for line in run.stderr.lines().filter(|line| *line != last) {
        assert!(
            line.starts_with("astegni-delete-expired: warning: cannot connect")
                && line.contains("retrying"),
            "{url}: unexpected line {line}"
        );
    }
    assert!(
        !run.stderr.contains(secret) && !run.stdout.contains(secret),
        "{url}: the password leaked: {}",
        run.describe()
    );
}

#[test]
fn unreachable_database_exits_75_within_the_connect_timeout() {
    let secret = "Unreach-Secr3t";
    // Nothing listens on the port.
    assert_unreachable(
        &format!("postgresql://astegni:{secret}@127.0.0.1:1/astegni"),
        secret,
    );
    // A host name that does not resolve.
    assert_unreachable(
        &format!("host=astegni-db.invalid user=astegni password={secret} dbname=astegni"),
        secret,
    );
    // A socket directory without a server.
    let dir = std::env::temp_dir().join(format!("astegni-fault-nosock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert_unreachable(
        &format!(
            "host={} port=5432 user=astegni password={secret} dbname=astegni",
            dir.display()
        ),
        secret,
    );
    let _ = std::fs::remove_dir(&dir);
}

/// A server (or a proxy in front of it) that accepts the TCP connection but never answers the
/// startup: `--connect-timeout` must still bound the wait.
#[test]
fn a_server_that_accepts_but_never_answers_exits_75_within_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepts and holds every connection without a byte of answer (detached: the listener
    // lives until the test process ends).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.push(connection);
        }
    });
    let secret = "Silent-Secr3t";
    for sslmode in ["disable", "prefer"] {
        let url =
            format!("postgresql://astegni:{secret}@127.0.0.1:{port}/astegni?sslmode={sslmode}");
        let run = job::spawn(&url, &["--connect-timeout", "3"]).wait(Duration::from_secs(30));
        assert!(
            !run.hung && run.elapsed <= Duration::from_secs(6),
            "sslmode={sslmode}: a silent server held the job for {:.1}s with --connect-timeout \
             3: {}",
            run.elapsed.as_secs_f64(),
            run.describe()
        );
        assert_eq!(run.code, 75, "sslmode={sslmode}: {}", run.describe());
        assert!(!run.stderr.contains(secret), "{}", run.describe());
    }
}

#[test]
fn a_server_that_comes_up_during_the_connect_retries_is_used() {
    let cluster = cluster::start();
    let trial = Trial::fixed(Db::private(&cluster, "late_start"), 31, MEDIUM);
    let due = &trial.due;
    cluster.stop("fast");
    let job = job::spawn(
        trial.url(),
        &["--max-accounts", "0", "--connect-timeout", "60"],
    );
    assert!(
        poll_until(Duration::from_secs(30), || job
            .stderr_so_far()
            .contains("retrying (attempt 2)")),
        "the job did not retry: {}",
        job.stderr_so_far()
    );
    cluster.start_again();
    let run = job.wait(Duration::from_secs(90));
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(
        run.completed_counts(),
        Some((due.profiles as u64, due.users as u64)),
        "{}",
        run.describe()
    );
    let violations = invariants::check(&trial.workload.db, Phase::Final);
    assert!(violations.is_empty(), "{violations:#?}");

    // And a server that stays down: exit 75 within the timeout.
    cluster.stop("immediate");
    let started = Instant::now();
    let run = job::spawn(trial.url(), &["--connect-timeout", "2"]).wait(Duration::from_secs(30));
    assert_eq!(run.code, 75, "{}", run.describe());
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "{}",
        run.describe()
    );
}
