//! A real `ovsdb-server` per test, in a temporary directory with its own socket, filled with
//! `ovs-vsctl --no-wait`; optionally `ovs-vswitchd` with the userspace datapath, run inside a
//! network namespace so that the tap devices it creates stay out of the host's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netlab::run;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

#[derive(Debug)]
pub struct OvsServer {
    dir: tempfile::TempDir,
    server: Option<Child>,
    vswitchd: Option<(Child, String)>,
    /// Extra server options (an SSL remote and its files).
    extra: Vec<String>,
}

/// The files an SSL remote of ovsdb-server needs.
#[derive(Debug, Clone)]
pub struct SslRemote<'a> {
    pub key: &'a Path,
    pub cert: &'a Path,
    pub ca_cert: &'a Path,
}

fn wait_for(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl OvsServer {
    /// Creates a database from the installed schema and starts a server on it.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Vec::new())
    }

    /// Starts a server that also listens with SSL on 127.0.0.1; returns it and the port.
    pub fn start_ssl(ssl: &SslRemote<'_>) -> anyhow::Result<(Self, u16)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let extra = vec![
            format!("--remote=pssl:{port}:127.0.0.1"),
            format!("--private-key={}", ssl.key.display()),
            format!("--certificate={}", ssl.cert.display()),
            format!("--ca-cert={}", ssl.ca_cert.display()),
        ];
        let server = Self::start_with(extra)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the SSL remote on port {port} did not open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((server, port))
    }

    fn start_with(extra: Vec<String>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(SCHEMA).exists(),
            "{SCHEMA} missing: install openvswitch-switch (bash tests/run does)"
        );
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("conf.db");
        run("ovsdb-tool", &["create", &db.to_string_lossy(), SCHEMA])?;
        let mut server = OvsServer {
            dir,
            server: None,
            vswitchd: None,
            extra,
        };
        server.start_server()?;
        server.vsctl(&["init"])?;
        Ok(server)
    }

    /// Starts ovsdb-server on the database (again, after [`OvsServer::kill_server`]).
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("ovsdb-server")
            .arg(dir.join("conf.db"))
            .arg(format!("--remote=punix:{}", socket.display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovsdb-server.log").display()
            ))
            .arg("-vconsole:off")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ovsdb-server")?;
        self.server = Some(child);
        wait_for(&socket)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    /// `ovs-vsctl --no-wait` against this server.
    pub fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}", self.socket().display());
        let mut all = vec![db.as_str(), "--no-wait", "--timeout=10"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// Adds a bridge on the userspace datapath (this kernel has no OVS datapath).
    pub fn add_netdev_bridge(&self, name: &str) -> anyhow::Result<String> {
        self.vsctl(&[
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ])
    }

    /// Kills the server and starts it again on the same database.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill_server()?;
        self.start_server()
    }

    /// Kills ovsdb-server, as a crash would.
    pub fn kill_server(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.server.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Kills ovs-vswitchd, as a crash would (its control socket stays behind).
    pub fn kill_vswitchd(&mut self) -> anyhow::Result<()> {
        if let Some((mut child, _)) = self.vswitchd.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts ovs-vswitchd (userspace datapath) inside the network namespace `netns`.
    pub fn start_vswitchd(&mut self, netns: &str) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "ovs-vswitchd"])
            .arg(format!("unix:{}", self.socket().display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovs-vswitchd.log").display()
            ))
            .arg("-vconsole:off")
            .env("OVS_RUNDIR", dir)
            .env("OVS_LOGDIR", dir)
            .env("OVS_DBDIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ovs-vswitchd")?;
        self.vswitchd = Some((child, netns.to_owned()));
        wait_for(&dir.join("ovs-vswitchd.ctl"))
    }
}

impl Drop for OvsServer {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.vswitchd.take() {
            let ctl = self.dir.path().join("ovs-vswitchd.ctl");
            let _ = run(
                "ovs-appctl",
                &["-t", &ctl.to_string_lossy(), "exit", "--cleanup"],
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
