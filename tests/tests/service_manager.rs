//! The daemons speak systemd's notify protocol as their units ask (`Type=notify`,
//! `WatchdogSec=`): a Unix datagram socket named by `NOTIFY_SOCKET` stands in for systemd's,
//! as systemd itself passes it; `WATCHDOG_USEC` is set as systemd sets it.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use calipso_tests::{Pki, workspace_binary};

/// The next notification, without its trailing newline.
fn next(socket: &UnixDatagram) -> anyhow::Result<String> {
    let mut buffer = [0u8; 4096];
    let read = socket
        .recv(&mut buffer)
        .context("no notification from the daemon")?;
    Ok(String::from_utf8_lossy(&buffer[..read]).trim().to_owned())
}

/// The daemon with `WATCHDOG_PID` set to its own pid, as systemd sets it (the daemon ignores a
/// watchdog meant for another process): a shell that exports its pid and execs the daemon.
fn as_systemd_starts(binary: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(binary);
    command
}

/// The first notification is `READY=1`; else what the daemon logged.
fn expect_ready(socket: &UnixDatagram, dir: &Path) -> anyhow::Result<()> {
    let first = next(socket);
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    match first {
        Ok(first) if first == "READY=1" => Ok(()),
        Ok(other) => bail!("first notification `{other}`, not READY=1; the daemon said:\n{log}"),
        Err(err) => bail!("{err}; the daemon said:\n{log}"),
    }
}

fn listen(dir: &Path) -> anyhow::Result<(UnixDatagram, std::path::PathBuf)> {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok((socket, path))
}

/// SIGTERM, then the notifications until `STOPPING=1`, then a clean exit.
fn stop(mut child: Child, socket: &UnixDatagram) -> anyhow::Result<()> {
    calipso_tests::netlab::run("kill", &["-TERM", &child.id().to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if next(socket)? == "STOPPING=1" {
            break;
        }
        if Instant::now() > deadline {
            bail!("no STOPPING=1 after SIGTERM");
        }
    }
    let status = child.wait()?;
    assert!(status.success(), "the daemon stopped with {status}");
    Ok(())
}

#[tokio::test]
async fn the_aggregator_is_ready_once_it_serves_feeds_the_watchdog_and_says_when_it_stops()
-> anyhow::Result<()> {
    let binary = workspace_binary("calipso-aggregator", "calipso-aggregator", false)?;
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let (socket, socket_path) = listen(dir.path())?;
    let ingest = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let api = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let metrics = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let server = pki.server_paths();
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    let config = dir.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "[ingest]\nlisten = \"{ingest}\"\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n\
             [store]\nurl = \"sqlite://{}\"\nsecret_key_file = \"{}\"\n\
             [api]\nlisten = \"{api}\"\nadmin_password = \"notify-password\"\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            server.ca_cert.display(),
            server.cert.display(),
            server.key.display(),
            server.crl.display(),
            data.join("calipso.db").display(),
            dir.path().join("secret.key").display(),
        ),
    )?;
    let child = as_systemd_starts(&binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .spawn()?;

    expect_ready(&socket, dir.path())?;
    // Ready means serving: the API and the metrics answer at once.
    TcpStream::connect(api).context("READY=1 before the API listens")?;
    TcpStream::connect(metrics).context("READY=1 before the metrics listen")?;
    // A third of WATCHDOG_USEC apart: at least 4 pings in a second.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(1) {
        if next(&socket)? == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(pings >= 4, "{pings} watchdog pings in a second");
    stop(child, &socket)
}

#[tokio::test]
async fn the_agent_is_ready_without_its_aggregator_and_says_when_it_stops() -> anyhow::Result<()> {
    let binary = workspace_binary("calipso-agent", "calipso-agent", false)?;
    let pki = Pki::new()?;
    let (tls, _) = pki.agent("notify-host")?;
    let dir = tempfile::tempdir()?;
    let (socket, socket_path) = listen(dir.path())?;
    // Nothing listens on this port: the agent is ready all the same and keeps trying.
    let nowhere = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"notify-host\"\nenvironment = \"{env}\"\nstate_file = \"\"\n\
             [aggregator]\naddress = \"{nowhere}\"\nserver_name = \"localhost\"\n\
             ca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [netns]\ndir = \"{empty}\"\n[libvirt]\ndir = \"{empty}\"\nconfig_dir = \"{empty}\"\n\
             [ovs]\nsocket = \"{empty}/db.sock\"\n[health]\nenabled = false\n",
            tls.ca_cert.display(),
            tls.cert.display(),
            tls.key.display(),
            env = calipso_tests::ENV,
            empty = empty.display(),
        ),
    )?;
    let child = as_systemd_starts(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .spawn()?;
    expect_ready(&socket, dir.path())?;
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(1) {
        if next(&socket)? == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(pings >= 4, "{pings} watchdog pings in a second");
    stop(child, &socket)
}
