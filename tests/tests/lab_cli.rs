//! The `calipso-lab` command as an operator uses it: up from a file, status, churn, down, and
//! its errors.

use std::path::Path;
use std::process::Command;

use calipso_tests::lab::{Lab, Topology};

const TOPOLOGY: &str = r#"
name = "clitst"
environment = "lab-cli"
fabric = "10.251.3.0/24"
networks = [{ name = "net-a", vni = 401, cidr = "192.168.80.0/24" }]

[[hosts]]
name = "host-a"
switch = "lxb"
dhcp = ["net-a"]

[[hosts]]
name = "host-b"
switch = "ovs"
vms = [{ name = "vm-1", networks = ["net-a"] }]
"#;

fn lab_command(state_dir: &Path, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let lab = calipso_tests::workspace_binary("calipso-tests", "calipso-lab", false)?;
    let output = Command::new(lab)
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

#[test]
fn the_lab_command_brings_a_lab_up_churns_it_and_takes_it_down() -> anyhow::Result<()> {
    for (package, name) in [
        ("calipso-agent", "calipso-agent"),
        ("calipso-aggregator", "calipso-aggregator"),
    ] {
        calipso_tests::workspace_binary(package, name, false)?;
    }
    Lab::sweep("clitst")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, TOPOLOGY)?;
    let state = dir.path().join("state");

    let file_arg = file.to_string_lossy();
    let (ok, text) = lab_command(&state, &["up", &file_arg, "--api-listen", "127.0.0.1:0"])?;
    assert!(ok, "{text}");
    assert!(text.contains("lab `clitst` is up: 2 hosts"), "{text}");
    let (ok, text) = lab_command(&state, &["up", &file_arg])?;
    assert!(
        !ok && text.contains("run `calipso-lab down` first"),
        "{text}"
    );

    let (ok, text) = lab_command(&state, &["status"])?;
    assert!(ok && text.contains("web UI: http://127.0.0.1:"), "{text}");
    assert!(
        text.contains("OpenStack (Keystone/Neutron double): http://127.0.0.1:"),
        "{text}"
    );

    let (ok, text) = lab_command(
        &state,
        &[
            "churn",
            "--rate",
            "10",
            "--duration",
            "2s",
            "--max-vms",
            "3",
        ],
    )?;
    assert!(ok, "{text}");
    assert!(text.contains("churned for"), "{text}");
    let churned = Topology::load(&state.join("topology.toml"))?;
    let vms: usize = churned.hosts.iter().map(|h| h.vms.len()).sum();
    assert!(
        (1..=4).contains(&vms),
        "vm-1 and at most 3 churned VMs: {vms}"
    );

    let (ok, text) = lab_command(&state, &["down"])?;
    assert!(ok, "{text}");
    assert!(!state.exists(), "the state directory is removed");
    let namespaces = calipso_tests::netlab::run("ip", &["netns", "list"])?;
    assert!(!namespaces.contains("cl-clitst-"), "{namespaces}");
    let devices = calipso_tests::netlab::run("ip", &["-o", "link", "show"])?;
    assert!(!devices.contains("clclitst"), "{devices}");

    let (ok, text) = lab_command(&state, &["down"])?;
    assert!(!ok && text.contains("pass --name"), "{text}");
    let (ok, text) = lab_command(&state, &["down", "--name", "clitst"])?;
    assert!(ok, "{text}");

    std::fs::write(
        &file,
        TOPOLOGY.replace(r#"dhcp = ["net-a"]"#, r#"dhcp = ["net-z"]"#),
    )?;
    let (ok, text) = lab_command(&state, &["up", &file_arg])?;
    assert!(!ok, "{text}");
    assert!(text.contains("unknown network `net-z`"), "{text}");
    Ok(())
}
