//! `roster-bench seed` and `roster-bench load` against a real `roster
//! serve` on SQLite: every scenario's calls succeed and are counted, and
//! the report carries the server's CPU time and memory. The `roster`
//! binary is the one built beside `roster-bench` (`cargo build
//! --workspace`, as `scripts/test` does first).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BENCH: &str = env!("CARGO_BIN_EXE_roster-bench");

/// Users seeded.
const USERS: usize = 300;

fn roster_bin() -> PathBuf {
    let bin = PathBuf::from(BENCH).with_file_name("roster");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        bin.display()
    );
    bin
}

/// A `roster serve` on an ephemeral port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &tempfile::TempDir, url: &str) -> Server {
    let mut child = Command::new(roster_bin())
        .args(["serve", "--grpc-addr", "127.0.0.1:0"])
        .env_clear()
        .env("ROSTER_DATABASE_URL", url)
        .env("ROSTER_DATA_DIR", dir.path())
        .env("ROSTER_HTTP_ADDR", "127.0.0.1:0")
        .env("ROSTER_LOG_FORMAT", "json")
        .env("ROSTER_SHUTDOWN_GRACE", "0s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if json["message"] == "serving gRPC" {
                let _ = tx.send(json["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_mins(1))
        .expect("roster serve did not say where it serves");
    Server { child, addr }
}

fn bench(args: &[&str]) -> std::process::Output {
    let output = Command::new(BENCH).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "roster-bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn load_measures_each_scenario_against_a_seeded_roster() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let users = USERS.to_string();
    bench(&["seed", "--database-url", &url, "--users", &users]);
    let server = serve(&dir, &url);
    let target = format!("http://{}", server.addr);
    let pid = server.child.id().to_string();
    for scenario in [
        "get_user",
        "create_user",
        "list_users",
        "list_users_query",
        "update_user_metadata",
        "create_email_address",
        "mixed",
    ] {
        let output = bench(&[
            "load",
            "--target",
            &target,
            "--scenario",
            scenario,
            "--users",
            &users,
            "--concurrency",
            "4",
            "--connections",
            "1",
            "--warmup-seconds",
            "0",
            "--seconds",
            "1",
            "--server-pid",
            &pid,
        ]);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["scenario"], scenario);
        assert_eq!(report["errors"], serde_json::json!({}), "{scenario}");
        let requests = report["requests"].as_u64().unwrap();
        assert!(requests > 0, "{scenario}: no calls");
        let [p50, p99, max] = ["p50_ms", "p99_ms", "max_ms"].map(|k| report[k].as_f64().unwrap());
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max,
            "{scenario}: {report}"
        );
        for cpu in ["server_cpu_seconds", "load_generator_cpu_seconds"] {
            assert!(report[cpu].as_f64().unwrap() > 0.0, "{scenario}: {cpu}");
        }
        assert!(
            report["server_rss_peak_mb"].as_f64().unwrap() > 1.0,
            "{scenario}"
        );
    }

    // A search that misses the user it names is a failure, not a fast
    // answer: of the terms drawn for two million users, all but the
    // first name users this database does not hold.
    let output = bench(&[
        "load",
        "--target",
        &target,
        "--scenario",
        "list_users_query",
        "--users",
        "2000000",
        "--concurrency",
        "2",
        "--connections",
        "1",
        "--warmup-seconds",
        "0",
        "--seconds",
        "1",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let missed = report["errors"]["NotFound"].as_u64().unwrap();
    let found = report["requests"].as_u64().unwrap();
    assert!(missed > 0 && missed > 10 * found, "{report}");
}

#[test]
fn the_suite_measures_roster_and_its_baselines_in_turns() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let roster = roster_bin();
    let output = bench(&[
        "suite",
        "--roster-bin",
        roster.to_str().unwrap(),
        "--backends",
        "sqlite",
        "--scenarios",
        "get_user,create_user",
        "--users",
        "200",
        "--concurrency",
        "4",
        "--connections",
        "1",
        "--warmup-seconds",
        "0",
        "--seconds",
        "2",
        "--turns",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let named: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["server"].as_str().unwrap(),
                r["variant"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("noop", ""),
            ("noop", ""),
            ("roster", ""),
            ("roster", "half_peak"),
            ("select", ""),
            ("select_pool", ""),
            ("roster", ""),
            ("insert", ""),
        ]
    );
    for row in rows {
        assert_eq!(row["errors"], serde_json::json!({}), "{row}");
        assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
        // Roster's get_user and create_user and their baselines took the
        // load in two turns each (creating other users in each turn); the
        // noop baseline and the run at half peak, alone.
        let turns = row["requests_per_second_by_turn"]
            .as_array()
            .map_or(0, Vec::len);
        let in_turns = row["backend"] == "sqlite" && row["variant"].is_null();
        assert_eq!(turns, if in_turns { 2 } else { 0 }, "{row}");
    }
    for (roster, baseline) in [(2, 4), (6, 7)] {
        let ratio = rows[roster]["ratio_to_storage_baseline"].as_f64().unwrap();
        let rate = |i: usize| rows[i]["requests_per_second"].as_f64().unwrap();
        assert!(
            (ratio - rate(roster) / rate(baseline)).abs() < 1e-9,
            "{ratio}"
        );
    }
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("| load generator CPU µs/call |"), "{table}");
}
