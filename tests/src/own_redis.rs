//! A `redis-server` of a test's own (for tests that stop, freeze or restart Redis, or build a
//! Redis Cluster), on a free loopback port.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::unique_prefix;

/// A `redis-server` of the test's own, on a free loopback port, killed when dropped.
pub struct OwnRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl OwnRedis {
    /// Panics when `redis-server` is not installed (the tests that call this are ignored
    /// unless run with `--include-ignored`, as `scripts/test` does).
    pub fn start(tag: &str, extra: &[&str]) -> OwnRedis {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "redis-server is not installed: this test starts its own (apt-get install \
             redis-server; scripts/test does)"
        );
        let dir = std::env::temp_dir().join(unique_prefix(tag).replace(':', "-"));
        std::fs::create_dir_all(&dir).expect("server dir");
        let mut r = OwnRedis {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    /// A three-node Redis Cluster (no replicas) of servers of this test's own, and its
    /// `redis+cluster://` URL.
    pub fn start_cluster(tag: &str) -> (Vec<OwnRedis>, String) {
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let nodes: Vec<OwnRedis> = (0..3)
            .map(|i| OwnRedis::start(&format!("{tag}{i}"), &cluster_args))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(created, "redis-cli --cluster create");
        for n in &nodes {
            wait_cluster_ok(n.port);
        }
        (nodes, format!("redis+cluster://{}/", addrs.join(",")))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server answers within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a Redis that stops answering.
    pub fn signal(&self, sig: &str) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair in 100 tries")
}

/// Whether a Redis answers PING on the port (raw RESP, 1 s at most).
pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Waits (10 s at most) until a cluster node reports `cluster_state:ok`.
fn wait_cluster_ok(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "info"])
            .output()
            .expect("redis-cli");
        if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster on {port} not ok in 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
