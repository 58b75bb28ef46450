//! The packages, their units and the rollout, with the real tools: `packaging/build` (cargo-deb,
//! cargo-generate-rpm), dpkg on this machine, rpm into a scratch root, `systemd-analyze`, an
//! Ansible playbook over SSH to network-namespace hosts, and `puppet apply`.
//!
//! These install `calipso-agent` and `calipso-aggregator` on the machine running the tests (as
//! root) and purge them at the end; they refuse to run where the packages were already
//! installed by someone else, and purge first what an interrupted run of theirs left. No systemd runs here (PID 1 is not systemd), so the services are
//! enabled but not started by the packages, and the rollouts are run with their service
//! management off; the daemons are started by the test with the installed configuration.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use calipso_aggregator::client::ApiClient;
use calipso_tests::netlab::{is_root, run};
use tokio::sync::{Mutex, OnceCell};

/// The tests install the same packages on one machine: one at a time (under `cargo test`;
/// nextest runs them in a group of one, `.config/nextest.toml`).
static MACHINE: Mutex<()> = Mutex::const_new(());
/// Revision 1 and revision 2 of the four packages, built once.
static PACKAGES: OnceCell<Packages> = OnceCell::const_new();

const PACKAGE_NAMES: [&str; 2] = ["calipso-agent", "calipso-aggregator"];

struct Packages {
    first: PathBuf,
    second: PathBuf,
    _dir: tempfile::TempDir,
}

impl Packages {
    fn file(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(prefix) && name.ends_with(suffix))
            })
            .collect();
        ensure!(
            found.len() == 1,
            "expected one {prefix}*{suffix} in {}, found {found:?}",
            dir.display()
        );
        Ok(found.remove(0))
    }

    fn deb(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
        Self::file(dir, &format!("{package}_"), ".deb")
    }

    fn rpm(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
        Self::file(dir, &format!("{package}-0"), ".rpm")
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn build(revision: u32, out: &Path) -> anyhow::Result<()> {
    let output = Command::new(workspace().join("packaging/build"))
        .args(["--profile", "dev"])
        .env("CALIPSO_PACKAGE_DIR", out)
        .env("CALIPSO_PACKAGE_REVISION", revision.to_string())
        .env("CALIPSO_PACKAGE_FAST", "1")
        .current_dir(workspace())
        .output()
        .context("packaging/build")?;
    ensure!(
        output.status.success(),
        "packaging/build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The packages `tests/run` built (`CALIPSO_TEST_PACKAGES/{1,2}`), else built here.
async fn packages() -> anyhow::Result<&'static Packages> {
    PACKAGES
        .get_or_try_init(|| async {
            let dir = tempfile::tempdir()?;
            if let Some(built) = std::env::var_os("CALIPSO_TEST_PACKAGES") {
                let built = PathBuf::from(built);
                return Ok(Packages {
                    first: built.join("1"),
                    second: built.join("2"),
                    _dir: dir,
                });
            }
            let (first, second) = (dir.path().join("1"), dir.path().join("2"));
            build(1, &first)?;
            build(2, &second)?;
            Ok(Packages {
                first,
                second,
                _dir: dir,
            })
        })
        .await
}

fn installed(package: &str) -> bool {
    run("dpkg-query", &["-W", "-f", "${Status}", package])
        .is_ok_and(|status| status.contains("installed") && !status.contains("not-installed"))
}

fn installed_version(package: &str) -> anyhow::Result<String> {
    run("dpkg-query", &["-W", "-f", "${Version}", package])
}

/// Written before a test installs the packages and removed once it purged them: packages found
/// installed while it exists are what an interrupted run (a killed test, a machine stopped
/// mid-run) left, not an operator's.
const INSTALLED_BY_TESTS: &str = "/var/lib/calipso-tests-installed-packages";

/// Takes the machine for one test: purges what an interrupted run left, refuses if someone
/// else's packages are installed.
async fn take_machine() -> anyhow::Result<Option<tokio::sync::MutexGuard<'static, ()>>> {
    if !is_root() {
        eprintln!("skipped: installing packages needs root");
        return Ok(None);
    }
    let guard = MACHINE.lock().await;
    let left_by_tests = Path::new(INSTALLED_BY_TESTS).exists();
    for package in PACKAGE_NAMES {
        if !installed(package) {
            continue;
        }
        ensure!(
            left_by_tests,
            "{package} is installed on this machine already; these tests install and purge it, so they do not run here"
        );
        eprintln!("purging {package}, left installed by an interrupted run of these tests");
    }
    purge()?;
    std::fs::write(
        INSTALLED_BY_TESTS,
        "calipso's packaging tests install calipso-agent and calipso-aggregator while this file exists\n",
    )
    .with_context(|| format!("writing {INSTALLED_BY_TESTS}"))?;
    Ok(Some(guard))
}

/// Runs `body` with the machine taken and the packages built, then purges whatever it installed.
async fn on_this_machine<Body>(body: impl FnOnce(&'static Packages) -> Body) -> anyhow::Result<()>
where
    Body: std::future::Future<Output = anyhow::Result<()>>,
{
    let Some(_machine) = take_machine().await? else {
        return Ok(());
    };
    let packages = packages().await?;
    let result = body(packages).await;
    let cleanup = release_machine();
    result.and(cleanup)
}

fn purge() -> anyhow::Result<()> {
    run("dpkg", &["--purge", "calipso-agent", "calipso-aggregator"])?;
    Ok(())
}

/// Purges what the test installed and gives the machine back.
fn release_machine() -> anyhow::Result<()> {
    purge()?;
    match std::fs::remove_file(INSTALLED_BY_TESTS) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {INSTALLED_BY_TESTS}"))
        }
        _ => Ok(()),
    }
}

/// Mode bits, owner name and group name of a path.
fn owned(path: &str) -> anyhow::Result<(u32, String, String)> {
    let meta = std::fs::metadata(path).with_context(|| format!("{path} is missing"))?;
    let name = |database: &str, id: u32| -> anyhow::Result<String> {
        let entry = run("getent", &[database, &id.to_string()])?;
        Ok(entry.split(':').next().unwrap_or_default().to_owned())
    };
    Ok((
        meta.permissions().mode() & 0o7777,
        name("passwd", meta.uid())?,
        name("group", meta.gid())?,
    ))
}

fn expect_owned(path: &str, mode: u32, owner: &str, group: &str) -> anyhow::Result<()> {
    let found = owned(path)?;
    ensure!(
        found == (mode, owner.to_owned(), group.to_owned()),
        "{path}: expected {mode:o} {owner}:{group}, found {:o} {}:{}",
        found.0,
        found.1,
        found.2
    );
    Ok(())
}

#[tokio::test]
async fn debs_install_upgrade_keep_edited_configuration_remove_and_purge() -> anyhow::Result<()> {
    on_this_machine(|packages| async move { deb_lifecycle(packages) }).await
}

fn deb_lifecycle(packages: &Packages) -> anyhow::Result<()> {
    let debs = |dir: &Path| -> anyhow::Result<Vec<String>> {
        PACKAGE_NAMES
            .iter()
            .map(|package| Ok(Packages::deb(dir, package)?.display().to_string()))
            .collect()
    };
    let install = |dir: &Path| -> anyhow::Result<String> {
        let files = debs(dir)?;
        let mut args = vec!["-i"];
        args.extend(files.iter().map(String::as_str));
        run("dpkg", &args)
    };
    install(&packages.first)?;
    assert_eq!(installed_version("calipso-agent")?, "0.1.0-1");

    // Files where operators expect them, with the modes and owners the scripts promise.
    expect_owned("/usr/bin/calipso-agent", 0o755, "root", "root")?;
    expect_owned("/usr/bin/calipso-aggregator", 0o755, "root", "root")?;
    expect_owned("/usr/bin/calipso", 0o755, "root", "root")?;
    expect_owned("/etc/calipso", 0o755, "root", "root")?;
    expect_owned("/etc/calipso/agent.toml", 0o600, "root", "root")?;
    expect_owned("/etc/calipso/aggregator.toml", 0o640, "root", "calipso")?;
    expect_owned("/etc/calipso/secret.key", 0o600, "calipso", "calipso")?;
    expect_owned("/var/lib/calipso", 0o700, "calipso", "calipso")?;
    expect_owned("/var/lib/calipso-agent", 0o700, "root", "root")?;
    for unit in ["calipso-agent", "calipso-aggregator"] {
        expect_owned(
            &format!("/lib/systemd/system/{unit}.service"),
            0o644,
            "root",
            "root",
        )?;
        // Enabled on install (the symlink systemd would follow at boot).
        let wants = format!("/etc/systemd/system/multi-user.target.wants/{unit}.service");
        ensure!(
            std::fs::read_link(&wants).is_ok(),
            "{wants} is missing: the unit is not enabled"
        );
        expect_owned(
            &format!("/usr/share/man/man1/{unit}.1.gz"),
            0o644,
            "root",
            "root",
        )?;
    }
    expect_owned("/usr/share/man/man1/calipso.1.gz", 0o644, "root", "root")?;
    let user = run("getent", &["passwd", "calipso"])?;
    let fields: Vec<&str> = user.trim().split(':').collect();
    ensure!(
        fields.get(5) == Some(&"/var/lib/calipso")
            && fields
                .get(6)
                .is_some_and(|shell| shell.ends_with("nologin"))
            && fields
                .get(2)
                .and_then(|uid| uid.parse::<u32>().ok())
                .is_some_and(|uid| uid < 1000),
        "calipso is not a system user with the store as home: {user}"
    );
    let conffiles = run("dpkg-query", &["-W", "-f", "${Conffiles}", "calipso-agent"])?;
    ensure!(conffiles.contains("/etc/calipso/agent.toml"), "{conffiles}");
    // The manual page is the binary's --help.
    let page = run("sh", &["-c", "zcat /usr/share/man/man1/calipso-agent.1.gz"])?;
    ensure!(
        page.contains("Print this host's model once and exit"),
        "{page}"
    );

    // The installed units are valid as systemd reads them.
    let verify = Command::new("systemd-analyze")
        .args([
            "verify",
            "/lib/systemd/system/calipso-agent.service",
            "/lib/systemd/system/calipso-aggregator.service",
        ])
        .output()?;
    ensure!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for (unit, at_most) in [("calipso-aggregator", 2.0), ("calipso-agent", 4.0)] {
        let security = run(
            "systemd-analyze",
            &[
                "security",
                "--offline=true",
                &format!("/lib/systemd/system/{unit}.service"),
            ],
        )?;
        let exposure: f64 = security
            .lines()
            .find_map(|line| line.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|score| score.split_whitespace().next())
            .and_then(|score| score.parse().ok())
            .with_context(|| format!("no exposure level in: {security}"))?;
        eprintln!("{unit}: systemd-analyze security exposure {exposure}");
        ensure!(
            exposure <= at_most,
            "{unit}: exposure {exposure} over {at_most}"
        );
    }

    // An edited configuration and the agent's state survive an upgrade; the secret key too.
    let edited = "# edited by the operator\nenvironment = \"prod\"\n";
    std::fs::write("/etc/calipso/agent.toml", edited)?;
    std::fs::write("/var/lib/calipso-agent/state", b"state of the agent")?;
    let key = std::fs::read("/etc/calipso/secret.key")?;
    install(&packages.second)?;
    assert_eq!(installed_version("calipso-agent")?, "0.1.0-2");
    assert_eq!(std::fs::read_to_string("/etc/calipso/agent.toml")?, edited);
    assert_eq!(
        std::fs::read("/var/lib/calipso-agent/state")?,
        b"state of the agent"
    );
    assert_eq!(std::fs::read("/etc/calipso/secret.key")?, key);

    // Remove keeps data and configuration; purge deletes them.
    run("dpkg", &["-r", "calipso-agent", "calipso-aggregator"])?;
    for gone in ["/usr/bin/calipso-agent", "/usr/bin/calipso-aggregator"] {
        ensure!(
            !Path::new(gone).exists(),
            "{gone} is still there after remove"
        );
    }
    for kept in [
        "/etc/calipso/agent.toml",
        "/etc/calipso/aggregator.toml",
        "/etc/calipso/secret.key",
        "/var/lib/calipso-agent/state",
        "/var/lib/calipso",
    ] {
        ensure!(Path::new(kept).exists(), "{kept} went with remove");
    }
    purge()?;
    for gone in [
        "/etc/calipso/agent.toml",
        "/etc/calipso/aggregator.toml",
        "/etc/calipso/secret.key",
        "/var/lib/calipso-agent",
        "/var/lib/calipso",
        "/etc/systemd/system/multi-user.target.wants/calipso-agent.service",
    ] {
        ensure!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is still there after purge"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rpms_list_their_files_and_scripts_and_install_into_a_scratch_root() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!(
            "skipped: building the packages needs root (the tests' build shares the machine)"
        );
        return Ok(());
    }
    let packages = {
        let _machine = MACHINE.lock().await;
        packages().await?
    };
    let agent = Packages::rpm(&packages.first, "calipso-agent")?;
    let aggregator = Packages::rpm(&packages.first, "calipso-aggregator")?;
    let agent = agent.display().to_string();
    let aggregator = aggregator.display().to_string();

    let files = run("rpm", &["-qpl", &aggregator])?;
    let mut files: Vec<&str> = files.lines().collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "/etc/calipso/aggregator.toml",
            "/usr/bin/calipso",
            "/usr/bin/calipso-aggregator",
            "/usr/lib/systemd/system/calipso-aggregator.service",
            "/usr/share/man/man1/calipso-aggregator.1.gz",
            "/usr/share/man/man1/calipso.1.gz",
        ]
    );
    assert_eq!(
        run("rpm", &["-qpc", &agent])?.trim(),
        "/etc/calipso/agent.toml"
    );
    let scripts = run("rpm", &["-qp", "--scripts", &aggregator])?;
    for expected in [
        "preinstall scriptlet",
        "useradd --system",
        "postinstall scriptlet",
        "secret-key --file /etc/calipso/secret.key",
        "systemctl --no-reload enable calipso-aggregator.service",
        "preuninstall scriptlet",
        "disable --now calipso-aggregator.service",
        "postuninstall scriptlet",
        "try-restart calipso-aggregator.service",
    ] {
        ensure!(scripts.contains(expected), "no `{expected}` in:\n{scripts}");
    }
    let info = run("rpm", &["-qpi", &agent])?;
    ensure!(
        info.contains("Version     : 0.1.0") && info.contains("Release     : 1"),
        "{info}"
    );

    // Into a scratch root (its own database; the scriptlets need the target system's tools).
    let root = tempfile::tempdir()?;
    let root_path = root.path().display().to_string();
    run("rpm", &["--root", &root_path, "--initdb"])?;
    run(
        "rpm",
        &[
            "--root",
            &root_path,
            "-i",
            "--nodeps",
            "--noscripts",
            &agent,
            &aggregator,
        ],
    )?;
    let queried = run("rpm", &["--root", &root_path, "-qa"])?;
    ensure!(
        queried.contains("calipso-agent-0.1.0-1") && queried.contains("calipso-aggregator-0.1.0-1"),
        "{queried}"
    );
    let binary = root.path().join("usr/bin/calipso-agent");
    let version = run(&binary.display().to_string(), &["--version"])?;
    assert_eq!(version.trim(), "calipso-agent 0.1.0");
    let config = std::fs::metadata(root.path().join("etc/calipso/agent.toml"))?;
    assert_eq!(config.permissions().mode() & 0o777, 0o600);
    Ok(())
}

/// A network namespace per host on one bridge, each running sshd, as hosts for Ansible.
struct SshHosts {
    dir: tempfile::TempDir,
    names: Vec<String>,
    daemons: Vec<Child>,
}

const BRIDGE: &str = "cal-ans-br";

fn host_ip(index: usize) -> String {
    format!("10.77.0.{}", 10 + index)
}

impl SshHosts {
    fn start(names: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let base = dir.path().to_path_buf();
        let path = |name: &str| base.join(name);
        std::fs::create_dir_all("/run/sshd")?;
        for key in ["host_key", "client_key"] {
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    &path(key).display().to_string(),
                ],
            )?;
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys"))?;
        let _ = run("ip", &["link", "del", BRIDGE]);
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["addr", "add", "10.77.0.1/24", "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        let mut hosts = SshHosts {
            dir,
            names: Vec::new(),
            daemons: Vec::new(),
        };
        for (index, name) in names.iter().enumerate() {
            let ns = format!("cal-ans-{name}");
            let _ = run("ip", &["netns", "del", &ns]);
            run("ip", &["netns", "add", &ns])?;
            hosts.names.push(ns.clone());
            let (outside, inside) = (format!("cal-ans-v{index}"), "eth0".to_owned());
            let _ = run("ip", &["link", "del", &outside]);
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &outside, "master", BRIDGE, "up"])?;
            let script = format!(
                "ip link set lo up && ip link set eth0 up && ip addr add {}/24 dev eth0",
                host_ip(index)
            );
            run("ip", &["netns", "exec", &ns, "sh", "-c", &script])?;
            let config = path(&format!("sshd-{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {ip}\nPort 22\nHostKey {key}\nPidFile {dir}/sshd-{name}.pid\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nUsePAM no\nStrictModes no\n",
                    ip = host_ip(index),
                    key = path("host_key").display(),
                    dir = base.display(),
                ),
            )?;
            let daemon = Command::new("ip")
                .args(["netns", "exec", &ns, "/usr/sbin/sshd", "-D", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("sshd (openssh-server)")?;
            hosts.daemons.push(daemon);
        }
        for index in 0..names.len() {
            let ip = host_ip(index);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect((ip.as_str(), 22)).is_err() {
                ensure!(Instant::now() < deadline, "sshd on {ip} did not open");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(hosts)
    }

    fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for daemon in &mut self.daemons {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for ns in &self.names {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
}

/// Daemons the test starts in a host's namespace with the configuration a rollout installed.
struct Daemons(Vec<Child>);

impl Daemons {
    fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("{program} in {ns}"))?;
        self.0.push(child);
        Ok(())
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the playbook (on the hosts of `limit`, else all); answers the PLAY RECAP's
/// `changed=` of each host.
fn ansible_playbook(
    inventory: &Path,
    extra: &Path,
    limit: Option<&str>,
    log: &Path,
) -> anyhow::Result<Vec<(String, u32)>> {
    let output = Command::new("ansible-playbook")
        .arg("-i")
        .arg(inventory)
        .args(limit.map(|hosts| format!("--limit={hosts}")))
        .arg("-e")
        .arg(format!("@{}", extra.display()))
        .arg(workspace().join("packaging/ansible/site.yml"))
        // The namespace hosts share this machine's file system and dpkg database: one host at
        // a time, or two of them wait on dpkg's lock.
        .env("ANSIBLE_FORKS", "1")
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_NOCOLOR", "1")
        .env(
            "ANSIBLE_ROLES_PATH",
            workspace().join("packaging/ansible/roles"),
        )
        .output()
        .context("ansible-playbook (Debian's ansible)")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    std::fs::write(log, &stdout)?;
    ensure!(
        output.status.success(),
        "ansible-playbook failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recap = stdout
        .split("PLAY RECAP")
        .nth(1)
        .with_context(|| format!("no PLAY RECAP in:\n{stdout}"))?;
    recap
        .lines()
        .filter(|line| line.contains("changed="))
        .map(|line| {
            let host = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let changed = line
                .split("changed=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no changed count in `{line}`"))?;
            Ok((host, changed))
        })
        .collect()
}

#[tokio::test]
async fn an_ansible_rollout_brings_every_host_to_the_aggregator_and_changes_nothing_the_second_time()
-> anyhow::Result<()> {
    on_this_machine(ansible_rollout).await
}

async fn ansible_rollout(packages: &Packages) -> anyhow::Result<()> {
    let names = ["aggregator-1", "compute-1", "compute-2"];
    let hosts = SshHosts::start(&names)?;
    let work = tempfile::tempdir()?;
    let dir = |host: &str| work.path().join(host);
    let inventory = work.path().join("inventory.ini");
    let ssh = format!(
        "ansible_user=root ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3",
        hosts.client_key().display()
    );
    // Every host has its own configuration and state under the test's directory: the
    // namespace hosts share one file system.
    let host_line = |index: usize| {
        let name = names[index];
        format!(
            "{name} ansible_host={ip} {ssh} calipso_config_dir={config} calipso_state_file={state}",
            ip = host_ip(index),
            config = dir(name).join("etc").display(),
            state = dir(name).join("state").display(),
        )
    };
    std::fs::write(
        &inventory,
        format!(
            "[calipso_aggregator]\n{}\n\n[calipso_agents]\n{}\n{}\n",
            host_line(0),
            host_line(1),
            host_line(2)
        ),
    )?;
    let password = "rollout-admin-password";
    let extra = work.path().join("extra.json");
    std::fs::write(
        &extra,
        serde_json::to_vec(&serde_json::json!({
            "calipso_package_dir": packages.second,
            "calipso_manage_service": false,
            "calipso_environment": "rollout",
            "calipso_server_name": "aggregator-1",
            "calipso_api_listen": format!("{}:8080", host_ip(0)),
            "calipso_metrics_listen": format!("{}:9464", host_ip(0)),
            "calipso_admin_password": password,
        }))?,
    )?;

    let first = ansible_playbook(&inventory, &extra, None, &work.path().join("first.log"))?;
    ensure!(
        first.len() == 3 && first.iter().all(|(_, changed)| *changed > 0),
        "the first run changes every host: {first:?}"
    );
    let second = ansible_playbook(&inventory, &extra, None, &work.path().join("second.log"))?;
    assert_eq!(
        second,
        names
            .iter()
            .map(|name| (name.to_string(), 0))
            .collect::<Vec<_>>(),
        "a second run changes nothing"
    );

    // What the rollout installed: the agent's key 0600, the aggregator's key readable by its group.
    let agent_etc = dir("compute-1").join("etc");
    expect_owned(
        &agent_etc.join("agent.key").display().to_string(),
        0o600,
        "root",
        "root",
    )?;
    let ca = dir("aggregator-1").join("etc/ca");
    expect_owned(
        &ca.join("server-aggregator-1.key").display().to_string(),
        0o640,
        "root",
        "calipso",
    )?;
    let listed = run(
        "calipso-aggregator",
        &["ca", "list", "--dir", &ca.display().to_string()],
    )?;
    for host in ["compute-1", "compute-2"] {
        ensure!(
            listed.lines().any(|line| line.contains(" valid ")
                && line.contains(host)
                && line.contains("environment rollout")),
            "no valid certificate of {host} for `rollout`:\n{listed}"
        );
    }

    // The daemons, started with what the rollout installed, find each other.
    let mut daemons = Daemons(Vec::new());
    let config = |host: &str, file: &str| dir(host).join("etc").join(file).display().to_string();
    daemons.spawn(
        &hosts.names[0],
        "/usr/bin/calipso-aggregator",
        &[
            "serve",
            "--config",
            &config("aggregator-1", "aggregator.toml"),
        ],
        &work.path().join("aggregator.log"),
    )?;
    for (index, host) in ["compute-1", "compute-2"].iter().enumerate() {
        daemons.spawn(
            &hosts.names[index + 1],
            "/usr/bin/calipso-agent",
            &["run", "--config", &config(host, "agent.toml")],
            &work.path().join(format!("{host}.log")),
        )?;
    }
    let mut client = ApiClient::new(&format!("http://{}:8080", host_ip(0)))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.login("admin", password).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the aggregator the rollout configured does not answer: {}",
                std::fs::read_to_string(work.path().join("aggregator.log"))?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let agents = client.get("/api/v1/agents", &[]).await?;
        let connected: Vec<(String, String)> = agents
            .as_array()
            .into_iter()
            .flatten()
            .filter(|agent| agent["state"] == "connected")
            .map(|agent| {
                (
                    agent["host"].as_str().unwrap_or_default().to_owned(),
                    agent["environment"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let expected = vec![
            ("compute-1".to_owned(), "rollout".to_owned()),
            ("compute-2".to_owned(), "rollout".to_owned()),
        ];
        let mut sorted = connected.clone();
        sorted.sort();
        if sorted == expected {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "agents connected: {connected:?}, expected {expected:?}; compute-1 says: {}",
                std::fs::read_to_string(work.path().join("compute-1.log"))?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(daemons);

    // Retiring a host is one variable: its certificate is revoked, and a second run agrees.
    let revoke = work.path().join("revoke.json");
    let mut settings: serde_json::Value = serde_json::from_slice(&std::fs::read(&extra)?)?;
    settings["calipso_revoked_hosts"] = serde_json::json!(["compute-2"]);
    std::fs::write(&revoke, serde_json::to_vec(&settings)?)?;
    let aggregator_only = |log: &str| {
        ansible_playbook(
            &inventory,
            &revoke,
            Some("calipso_aggregator"),
            &work.path().join(log),
        )
    };
    assert_eq!(
        aggregator_only("revoke.log")?,
        vec![("aggregator-1".to_owned(), 1)]
    );
    assert_eq!(
        aggregator_only("revoke-again.log")?,
        vec![("aggregator-1".to_owned(), 0)]
    );
    let listed = run(
        "calipso-aggregator",
        &[
            "ca",
            "list",
            "--dir",
            &ca.display().to_string(),
            "--host",
            "compute-2",
        ],
    )?;
    ensure!(
        !listed.is_empty() && listed.lines().all(|line| line.contains(" revoked ")),
        "{listed}"
    );
    Ok(())
}

#[tokio::test]
async fn puppet_applies_both_classes_and_the_second_apply_changes_nothing() -> anyhow::Result<()> {
    on_this_machine(|packages| async move { puppet_twice(packages) }).await
}

fn puppet_twice(packages: &Packages) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let etc = work.path().join("etc");
    let ca = etc.join("ca");
    let manifest = work.path().join("site.pp");
    std::fs::write(
        &manifest,
        format!(
            r#"class {{ 'calipso::aggregator':
  package_source => '{aggregator}',
  config_dir     => '{etc}',
  server_name    => 'puppet-aggregator',
  server_sans    => ['127.0.0.1'],
  store_url      => 'sqlite://{db}',
  agents         => {{ 'puppet-host' => 'puppet-env' }},
  manage_service => false,
}}
class {{ 'calipso::agent':
  package_source         => '{agent}',
  config_dir             => '{etc}',
  host                   => 'puppet-host',
  environment_name       => 'puppet-env',
  aggregator_address     => '127.0.0.1:7443',
  aggregator_server_name => 'puppet-aggregator',
  ca_cert_source         => '{ca}/ca.pem',
  cert_source            => '{ca}/agent-puppet-host.pem',
  key_source             => '{ca}/agent-puppet-host.key',
  manage_service         => false,
}}
Class['calipso::aggregator'] -> Class['calipso::agent']
"#,
            aggregator = Packages::deb(&packages.second, "calipso-aggregator")?.display(),
            agent = Packages::deb(&packages.second, "calipso-agent")?.display(),
            etc = etc.display(),
            ca = ca.display(),
            db = work.path().join("calipso.db").display(),
        ),
    )?;
    let apply = || -> anyhow::Result<(i32, String)> {
        let output = Command::new("puppet")
            .arg("apply")
            .arg("--detailed-exitcodes")
            .arg("--modulepath")
            .arg(workspace().join("packaging/puppet"))
            .arg(&manifest)
            .output()
            .context("puppet (Debian's puppet)")?;
        Ok((
            output.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ))
    };
    // --detailed-exitcodes: 2 = applied changes, 0 = nothing to change, 4/6 = failures.
    let (code, log) = apply()?;
    ensure!(
        code == 2,
        "the first apply should change things (exit {code}):\n{log}"
    );
    let (code, log) = apply()?;
    ensure!(
        code == 0,
        "the second apply should change nothing (exit {code}):\n{log}"
    );

    expect_owned(
        &etc.join("agent.key").display().to_string(),
        0o600,
        "root",
        "root",
    )?;
    expect_owned(
        &etc.join("agent.toml").display().to_string(),
        0o600,
        "root",
        "root",
    )?;
    expect_owned(
        &etc.join("aggregator.toml").display().to_string(),
        0o640,
        "root",
        "calipso",
    )?;
    expect_owned(
        &etc.join("secret.key").display().to_string(),
        0o600,
        "calipso",
        "calipso",
    )?;
    let agent = std::fs::read_to_string(etc.join("agent.toml"))?;
    ensure!(
        agent.contains("host = \"puppet-host\"") && agent.contains("environment = \"puppet-env\""),
        "{agent}"
    );
    // The agent's configuration as the package's binary reads it.
    run(
        "/usr/bin/calipso-agent",
        &[
            "discover",
            "--config",
            &etc.join("agent.toml").display().to_string(),
        ],
    )?;
    Ok(())
}
