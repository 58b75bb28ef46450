//! Real kernel objects for tests: a private network namespace that plays the host, and a
//! private netns directory whose namespaces play its vservices. Created with iproute2 as root
//! and removed on drop, so parallel tests never see each other's interfaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use calipso_agent::collect::KernelOptions;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this process may create namespaces and interfaces.
pub fn is_root() -> bool {
    run("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0")
}

/// A host namespace and a netns directory of its own.
#[derive(Debug)]
pub struct NetLab {
    /// The host namespace's name in /run/netns.
    pub host_ns: String,
    netns_dir: tempfile::TempDir,
    pub libvirt_dir: tempfile::TempDir,
    /// (name in the lab's netns directory, name in /run/netns)
    named: Vec<(String, String)>,
}

impl NetLab {
    pub fn new() -> anyhow::Result<Self> {
        if !is_root() {
            bail!(
                "kernel tests create namespaces and interfaces: run them as root (bash tests/run)"
            );
        }
        let host_ns = format!(
            "calipso-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &host_ns])?;
        let lab = NetLab {
            host_ns,
            netns_dir: tempfile::tempdir()?,
            libvirt_dir: tempfile::tempdir()?,
            named: Vec::new(),
        };
        lab.sh("ip link set lo up")?;
        Ok(lab)
    }

    pub fn host_netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.host_ns)
    }

    pub fn netns_dir(&self) -> &Path {
        self.netns_dir.path()
    }

    /// Runs a shell script inside the host namespace.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        run("ip", &["netns", "exec", &self.host_ns, "sh", "-ec", script])
    }

    /// The kernel collector's options for this lab (short refresh so tests stay fast).
    pub fn kernel_options(&self) -> KernelOptions {
        KernelOptions {
            host_netns: Some(self.host_netns_path()),
            netns_dir: self.netns_dir().to_owned(),
            ..KernelOptions::default()
        }
    }

    /// Creates a namespace visible as `name` in the lab's netns directory; returns its global
    /// name, which `ip link set … netns` takes.
    pub fn add_netns(&mut self, name: &str) -> anyhow::Result<String> {
        let global = format!("{}-{}", self.host_ns, self.named.len());
        run("ip", &["netns", "add", &global])?;
        let local = self.netns_dir().join(name);
        std::fs::File::create(&local)?;
        let source = format!("/run/netns/{global}");
        run("mount", &["--bind", &source, &local.to_string_lossy()])?;
        run(
            "ip",
            &["netns", "exec", &global, "ip", "link", "set", "lo", "up"],
        )?;
        self.named.push((name.to_owned(), global.clone()));
        Ok(global)
    }

    /// Runs a shell script inside a namespace made by [`NetLab::add_netns`].
    pub fn sh_in(&self, name: &str, script: &str) -> anyhow::Result<String> {
        let global = self.global(name)?;
        run("ip", &["netns", "exec", &global, "sh", "-ec", script])
    }

    fn global(&self, name: &str) -> anyhow::Result<String> {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| g.clone())
            .context("no such lab namespace")
    }

    /// Deletes a namespace made by [`NetLab::add_netns`], as `ip netns del` would.
    pub fn del_netns(&mut self, name: &str) -> anyhow::Result<()> {
        let global = self.global(name)?;
        let local = self.netns_dir().join(name);
        run("umount", &["-l", &local.to_string_lossy()])?;
        std::fs::remove_file(&local)?;
        run("ip", &["netns", "del", &global])?;
        self.named.retain(|(n, _)| n != name);
        Ok(())
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for (name, global) in std::mem::take(&mut self.named) {
            let local = self.netns_dir().join(&name);
            let _ = run("umount", &["-l", &local.to_string_lossy()]);
            let _ = run("ip", &["netns", "del", &global]);
        }
        let _ = run("ip", &["netns", "del", &self.host_ns]);
    }
}
