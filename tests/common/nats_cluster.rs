//! A 3-node NATS JetStream cluster on free loopback ports, in temporary
//! directories, for the relay's tests: started by [`Cluster::start`],
//! killed (SIGKILL) and restarted node by node, stopped when dropped.
//! Needs Debian's `nats-server` (2.9); without it the test fails with how
//! to install it, never passes silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token every node admits clients with (by default).
pub const TOKEN: &str = "reactordb-test";

/// How clients prove who they are, and whether they must use TLS.
pub struct Access {
    /// The body of the nodes' `authorization` block.
    authorization: String,
    /// The nodes' certificate and key (PEM files): clients must use TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Access {
    /// The token [`TOKEN`], without TLS (what [`Cluster::start`] uses).
    pub fn token() -> Self {
        Self {
            authorization: format!("token: \"{TOKEN}\""),
            tls: None,
        }
    }

    /// One user with a password, over TLS with this certificate and key.
    pub fn user_password_tls(user: &str, password: &str, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            authorization: format!("users: [ {{ user: \"{user}\", password: \"{password}\" }} ]"),
            tls: Some((cert, key)),
        }
    }
}

struct Node {
    config: PathBuf,
    client_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

/// A running cluster.
pub struct Cluster {
    nodes: Vec<Node>,
    tls: bool,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn server_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    let found = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.unwrap_or_else(|| {
        panic!(
            "these tests need nats-server (JetStream, 2.9 or later): \
             `apt-get install nats-server` on Debian, or put it on PATH"
        )
    })
}

impl Cluster {
    /// Starts three nodes and waits until JetStream has a meta leader. A
    /// cluster that does not come up (a port taken between picking it and
    /// the server binding it) is started again on other ports.
    pub fn start() -> Self {
        Self::start_with(&Access::token())
    }

    /// [`Cluster::start`], admitting clients as `access` says.
    pub fn start_with(access: &Access) -> Self {
        for _ in 0..3 {
            let cluster = Self::start_once(access);
            if cluster.ready_within(Duration::from_secs(20)) {
                return cluster;
            }
            cluster.print_logs();
        }
        panic!("the NATS cluster did not elect a JetStream leader, three times");
    }

    fn start_once(access: &Access) -> Self {
        let tls = match &access.tls {
            Some((cert, key)) => format!(
                "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let dir = tempfile::tempdir().expect("cluster dir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let nodes = (0..3)
            .map(|i| {
                let (client, route, monitor) = ports[i];
                let routes: Vec<String> = (0..3)
                    .filter(|j| *j != i)
                    .map(|j| format!("nats-route://127.0.0.1:{}", ports[j].1))
                    .collect();
                let store = dir.path().join(format!("n{i}"));
                let config = dir.path().join(format!("n{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                         authorization {{ {} }}\n{tls}\
                         jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 2GB }}\n\
                         cluster {{ name: reactordb, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                        access.authorization,
                        store.display(),
                        routes.join(", ")
                    ),
                )
                .expect("node config");
                Node {
                    config,
                    client_port: client,
                    monitor_port: monitor,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Self {
            nodes,
            tls: access.tls.is_some(),
            _dir: dir,
        };
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster
    }

    fn log(&self, i: usize) -> PathBuf {
        self._dir.path().join(format!("n{i}.log"))
    }

    /// Prints every node's log (a failed start's context).
    pub fn print_logs(&self) {
        for i in 0..self.nodes.len() {
            let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "== NATS node {i}, last lines\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Every node's client URL (`tls://` when clients must use TLS).
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls { "tls" } else { "nats" };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again (from its store directory).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .expect("node log");
        let child = Command::new(server_binary())
            .arg("-c")
            .arg(&self.nodes[i].config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.nodes[i].child = Some(child);
    }

    /// Waits until every running node answers and the JetStream meta group
    /// has a leader.
    pub fn wait_ready(&self) {
        if !self.ready_within(Duration::from_secs(30)) {
            self.print_logs();
            panic!("the NATS cluster did not elect a JetStream leader in 30 s");
        }
    }

    fn ready_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let ready = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                http_get(n.monitor_port, "/jsz").is_some_and(|body| body.contains("\"leader\""))
            });
            if ready {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The body of a plain HTTP GET on the node's monitoring port.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}
