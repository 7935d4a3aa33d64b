//! Spawning, readiness and teardown shared by both brokers.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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

/// How a broker is started on a given port, in a given scratch directory.
pub(crate) type Spawn<'a> =
    dyn Fn(&Path, &tempfile::TempDir, u16) -> Result<Proc, TestkitError> + 'a;

/// A broker process with what it takes to start it again on the same port.
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) port: u16,
    pub(crate) binary: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) proc: Proc,
}

impl Broker {
    /// Finds the binary, makes a scratch directory and starts the broker on a free port.
    pub(crate) fn launch(
        binary: &'static str,
        package: &'static str,
        env: &'static str,
        spawn: &Spawn<'_>,
    ) -> Result<Broker, TestkitError> {
        let io = |source| TestkitError::Io { binary, source };
        let path = find_binary(binary, package, env)?;
        let dir = tempfile::tempdir().map_err(io)?;
        let mut last_err = None;
        // A port can be taken between probing and binding; try a few.
        for _ in 0..5 {
            let port = free_port().map_err(io)?;
            match spawn(&path, &dir, port) {
                Ok(proc) => {
                    return Ok(Broker {
                        port,
                        binary: path,
                        dir,
                        proc,
                    });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or(TestkitError::NotReady {
            binary,
            seconds: 0,
            detail: "no attempt was made".into(),
        }))
    }

    /// Kills the process (if it runs) and starts it again on the same port.
    pub(crate) fn restart(&mut self, spawn: &Spawn<'_>) -> Result<(), TestkitError> {
        self.proc.kill();
        self.proc = spawn(&self.binary, &self.dir, self.port)?;
        Ok(())
    }
}
