//! A real `redis-server` for tests, started on a free loopback port in its
//! own directory, with append-only persistence synced on every write, and
//! stopped when dropped.
//!
//! A free port is only free when it is picked: another process may take it
//! before `redis-server` binds it. So a start counts only once the server
//! that answers on the port is our child (its `INFO server` `process_id`),
//! and a child that exited (it could not bind) or a port answered by someone
//! else makes it try again on another port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Ports tried before [`RedisServer::start`] gives up.
const START_ATTEMPTS: usize = 5;

/// How long one start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on each exchange with the server when probing it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Sends one inline command to the server on `port` and reads a simple
/// string or bulk string reply; `None` for anything else or on a timeout.
fn query(port: u16, command: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end_matches("\r\n");
    if let Some(simple) = line.strip_prefix('+') {
        return Some(simple.to_string());
    }
    let len: usize = line.strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; len + 2];
    reader.read_exact(&mut body).ok()?;
    body.truncate(len);
    String::from_utf8(body).ok()
}

/// The process id of the server answering on `port`, if one answers.
fn serving_pid(port: u16) -> Option<u32> {
    let info = query(port, "INFO server")?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

impl RedisServer {
    /// Starts a server.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed (the message says how to install
    /// it) or does not start on any of a few free ports within 10 s each.
    pub fn start() -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-redis-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory left by an earlier process of the same id must not
        // hand its data to this server.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!("redis-server did not start: {}", failures.join("; "));
    }

    /// Starts our server on `self.port` and waits until it is the one
    /// answering there.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis tests need it; install it \
                     (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`)"
                )
            });
        let deadline = Instant::now() + START_TIMEOUT;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    break Err(format!(
                        "it exited on port {} ({status}): the port was taken?",
                        self.port
                    ));
                }
                Ok(None) => {}
                Err(e) => break Err(format!("cannot watch it on port {}: {e}", self.port)),
            }
            match serving_pid(self.port) {
                Some(pid) if pid == child.id() => break Ok(()),
                Some(pid) => {
                    break Err(format!(
                        "another server (pid {pid}) answers on port {}",
                        self.port
                    ));
                }
                None => {}
            }
            if Instant::now() >= deadline {
                break Err(format!(
                    "it did not answer on port {} within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match outcome {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Whether our server (this child process, not whatever else holds the
    /// port) answers right now.
    pub fn answers(&self) -> bool {
        self.pid().is_some() && serving_pid(self.port) == self.pid()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL): what is not on disk is lost, which with
    /// `appendfsync always` is nothing acknowledged.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (its data come back
    /// from the append-only file).
    ///
    /// # Panics
    ///
    /// If it does not start on that port (clients hold its URL, so it
    /// cannot move), after a few tries.
    pub fn restart(&mut self) {
        self.kill();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => failures.push(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart: {}", failures.join("; "));
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(which)
                .arg(child.id().to_string())
                .status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
