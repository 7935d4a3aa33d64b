//! Spawning, readiness and teardown shared by both brokers.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::TestkitError;

/// How long a broker may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Resolves a broker binary: `$ENV`, then PATH, then the Debian install location.
pub(crate) fn find_binary(
    binary: &'static str,
    package: &'static str,
    env: &'static str,
) -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&dirs).chain(["/usr/sbin".into(), "/usr/bin".into()]);
    for dir in candidates {
        let path = dir.join(binary);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(TestkitError::MissingBinary {
        binary,
        package,
        env,
    })
}

/// A port that was free a moment ago. The broker binds it next; a lost race shows up as a
/// start failure, which the callers retry with another port.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls until `ready` says yes, the child exits, or the timeout passes.
pub(crate) fn wait_ready(
    binary: &'static str,
    child: &mut Child,
    mut ready: impl FnMut() -> bool,
    log: impl Fn() -> String,
) -> Result<(), TestkitError> {
    let start = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestkitError::NotReady {
                binary,
                seconds: start.elapsed().as_secs(),
                detail: format!("exited with {status}; log:\n{}", log()),
            });
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(TestkitError::NotReady {
                binary,
                seconds: READY_TIMEOUT.as_secs(),
                detail: log(),
            });
        }
        // Polling interval of a readiness probe, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True if something accepts TCP connections on the port.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A running broker process, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub(crate) fn spawn(
        binary: &'static str,
        command: &mut Command,
    ) -> Result<Child, TestkitError> {
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|source| TestkitError::Io { binary, source })
    }

    pub(crate) fn new(child: Child) -> Self {
        Proc { child: Some(child) }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
