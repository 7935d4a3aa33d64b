//! Running example binaries from the tests, written once for every test file.

#![allow(dead_code)] // Each test file uses part of it.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Far above an example's run time (a few seconds): only a hang trips it.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs an example binary with `args` to its end, killing it if it outlives [`LIMIT`].
pub fn run(binary: &str, args: &[&str]) -> Output {
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {binary}: {err}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // Waiting in a thread lets the test give up on a hung example instead of hanging itself.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(output) => output.unwrap_or_else(|err| panic!("{binary}: {err}")),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{binary} {args:?} did not finish within {LIMIT:?}");
        }
    }
}

/// Runs an example binary that must succeed; returns its standard output.
pub fn run_ok(binary: &str, args: &[&str]) -> String {
    let output = run(binary, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{binary} {args:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
