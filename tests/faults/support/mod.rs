//! Support for the fault-injection suite (`tests/faults/`, `tests/fault_inputs.rs`).
//!
//! * [`Rng`]: a small seeded PRNG (SplitMix64), so every trial is repeatable from its seed.
//! * [`trial_seeds`] / [`run_trials`]: how many trials a test runs and with which seeds:
//!   - `ASTEGNI_FAULT_SEED=<n>` (decimal or `0x` hex) reruns exactly that one seed;
//!   - `ASTEGNI_FAULT_TRIALS=<n>` runs n trials of every randomized fault;
//!   - `ASTEGNI_FAULTS_FULL=1` runs the full counts of the issue (30 kill -9 trials, 10 x 4
//!     concurrent runs, >= 100 restores, ...); without it a CI share runs (a few minutes);
//!   - `ASTEGNI_FAULT_BASE_SEED=<n>` changes the seeds the default trials use (they are fixed
//!     by default, so CI is repeatable; any other base explores new ones).
//! * [`workload`]: a large Astegni database in a seeded schema variant, on the shared test
//!   server or on a [`cluster::PrivateCluster`].
//! * [`invariants`]: the one checker every trial uses: a snapshot of what is due before the run,
//!   then SQL checks of the invariants after the fault, and after the rerun.
//! * [`job`]: the binary as a child process that can be `kill -9`ed, with progress polling.
//! * [`cluster`]: a private PostgreSQL cluster a test may restart or stop (the harness's
//!   [`crate::common::start_private`]).

#![allow(dead_code)]

pub mod cluster;
pub mod invariants;
pub mod job;
pub mod workload;

use std::time::{Duration, Instant};

/// SplitMix64: tiny, fast and good enough to pick fault moments and data shapes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub const SEED_ENV: &str = "ASTEGNI_FAULT_SEED";
pub const TRIALS_ENV: &str = "ASTEGNI_FAULT_TRIALS";
pub const FULL_ENV: &str = "ASTEGNI_FAULTS_FULL";
pub const BASE_SEED_ENV: &str = "ASTEGNI_FAULT_BASE_SEED";

fn parse_seed(text: &str) -> u64 {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("cannot parse seed {text:?}: {e}"))
}

/// Whether the full trial counts were asked for (`ASTEGNI_FAULTS_FULL=1`).
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|value| matches!(value.trim(), "1" | "true" | "yes"))
}

/// How many trials: `ASTEGNI_FAULT_TRIALS`, else `full` with `ASTEGNI_FAULTS_FULL=1`, else `ci`.
pub fn trial_count(ci: usize, full_count: usize) -> usize {
    if let Ok(text) = std::env::var(TRIALS_ENV)
        && !text.trim().is_empty()
    {
        return text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{TRIALS_ENV}={text:?}: {e}"));
    }
    if full() { full_count } else { ci }
}

/// The seeds of a test's trials: the one in `ASTEGNI_FAULT_SEED`, else `count` seeds derived
/// from the test's name and `ASTEGNI_FAULT_BASE_SEED` (default 0).
pub fn trial_seeds(test: &str, ci: usize, full_count: usize) -> Vec<u64> {
    if let Ok(text) = std::env::var(SEED_ENV)
        && !text.trim().is_empty()
    {
        return vec![parse_seed(&text)];
    }
    let base = std::env::var(BASE_SEED_ENV)
        .ok()
        .filter(|text| !text.trim().is_empty())
        .map_or(0, |text| parse_seed(&text));
    // FNV-1a of the test name, so each test has its own seeds.
    let mut name_hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in test.bytes() {
        name_hash = (name_hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = Rng::new(name_hash ^ base);
    (0..trial_count(ci, full_count))
        .map(|_| rng.next_u64() >> 16)
        .collect()
}

/// What one trial found.
#[derive(Default, Debug)]
pub struct TrialResult {
    /// Invariant violations (the goal is none).
    pub violations: Vec<String>,
    /// Other failures of the trial (wrong exit code, hang...).
    pub failures: Vec<String>,
    /// A short description of what happened, for the log.
    pub note: String,
    /// Counters the test sums over its trials (e.g. restores committed).
    pub counters: Vec<(&'static str, u64)>,
}

impl TrialResult {
    pub fn fail(&mut self, text: impl Into<String>) {
        self.failures.push(text.into());
    }

    pub fn count(&mut self, name: &'static str, value: u64) {
        match self.counters.iter_mut().find(|(known, _)| *known == name) {
            Some((_, total)) => *total += value,
            None => self.counters.push((name, value)),
        }
    }
}

/// Runs `trial` once per seed, printing each seed and outcome, then a summary line
/// `[fault-summary] <test>: trials=N violations=V failures=F ...`; panics at the end if any
/// trial had a violation or a failure, naming the seeds to rerun with `ASTEGNI_FAULT_SEED`.
/// Returns the summed counters.
pub fn run_trials(
    test: &str,
    ci: usize,
    full_count: usize,
    mut trial: impl FnMut(u64) -> TrialResult,
) -> Vec<(&'static str, u64)> {
    let seeds = trial_seeds(test, ci, full_count);
    let started = Instant::now();
    let mut bad = Vec::new();
    let mut violations = 0usize;
    let mut failures = 0usize;
    let mut totals: Vec<(&'static str, u64)> = Vec::new();
    for (index, &seed) in seeds.iter().enumerate() {
        let trial_started = Instant::now();
        eprintln!(
            "[fault] {test} trial {}/{} seed={seed:#x} ...",
            index + 1,
            seeds.len()
        );
        let result = trial(seed);
        for (name, value) in &result.counters {
            match totals.iter_mut().find(|(known, _)| known == name) {
                Some((_, total)) => *total += value,
                None => totals.push((name, *value)),
            }
        }
        let ok = result.violations.is_empty() && result.failures.is_empty();
        eprintln!(
            "[fault] {test} trial {}/{} seed={seed:#x}: {} in {:.1}s; {}",
            index + 1,
            seeds.len(),
            if ok { "ok" } else { "FAILED" },
            trial_started.elapsed().as_secs_f64(),
            result.note
        );
        for line in result.violations.iter().take(20) {
            eprintln!("    violation: {line}");
        }
        for line in result.failures.iter().take(20) {
            eprintln!("    failure: {line}");
        }
        violations += result.violations.len();
        failures += result.failures.len();
        if !ok {
            bad.push(seed);
        }
    }
    let counters: Vec<String> = totals
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    eprintln!(
        "[fault-summary] {test}: trials={} violations={violations} failures={failures} \
         {} ({:.1}s)",
        seeds.len(),
        counters.join(" "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        bad.is_empty(),
        "{test}: {} of {} trials failed ({violations} invariant violations, {failures} other \
         failures); rerun one with {SEED_ENV}=<seed>: {}",
        bad.len(),
        seeds.len(),
        bad.iter()
            .map(|seed| format!("{seed:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    totals
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes; returns whether
/// it held. For waiting on observable state (a row count, a process state), never on time.
pub fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}
