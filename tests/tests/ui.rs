//! The web UI in a real browser (Debian's headless Chromium through chromedriver) against a
//! real lab: the three-host OVS cloud of `tests/labs/ovs-3.toml` in namespaces, its agents and
//! its aggregator serving the UI. An operator's session, step by step: a wrong password
//! refused, the tree walked by clicks and keys down to a VM, its clique graph checked against
//! what the lab was built with, a VM the lab adds appearing in the tree and the host graph
//! without a reload, a removed VM seen again in the past and in a diff, and a viewer of one
//! environment unable to see another. Screenshots of each view are kept in
//! `target/ui-screenshots/`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use calipso_aggregator::client::ApiClient;
use calipso_tests::browser::{self, Browser, keys};
use calipso_tests::lab::RunningLab;
use calipso_tests::lab::expect::{Expected, Ids, LinkTriple};
use calipso_tests::lab::topology::{Plug, Vm};
use reqwest::Method;
use serde_json::{Value, json};

const OVS_LAB: &str = include_str!("../labs/ovs-3.toml");
/// How long the lab, the API or the page may take to show something.
const WAIT: Duration = Duration::from_secs(40);

/// Waits until the API shows `vm`'s clique with exactly `members`.
async fn clique_settles(
    client: &ApiClient,
    env: &str,
    vm: &str,
    members: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let found = client
            .get(&format!("/api/v1/cliques/{}", vm), &[("env_name", env)])
            .await;
        let nodes: BTreeSet<String> = found
            .as_ref()
            .ok()
            .and_then(|c| c["nodes"].as_array())
            .map(|n| {
                n.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if &nodes == members {
            return Ok(());
        }
        ensure!(
            started.elapsed() < WAIT,
            "the clique of {vm} is {nodes:#?}, not {members:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Logs in through the form.
async fn log_in(browser: &Browser, base: &str, user: &str, password: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{base}/#/login")).await?;
    let name = browser.find("#username", WAIT).await?;
    browser.clear(&name).await?;
    browser.type_into(&name, user).await?;
    let secret = browser.find("#password", WAIT).await?;
    browser.clear(&secret).await?;
    browser.type_into(&secret, password).await?;
    browser
        .click(&browser.find("#login-button", WAIT).await?)
        .await?;
    Ok(())
}

/// The ids of the drawn nodes and the (type, source, target) of the drawn links.
async fn drawn(browser: &Browser) -> anyhow::Result<(BTreeSet<String>, BTreeSet<LinkTriple>)> {
    let value = browser
        .script(
            "const g = document.querySelector('svg.graph');\
             return {nodes: [...g.querySelectorAll('.node')].map((n) => n.dataset.id),\
                     links: [...g.querySelectorAll('.link')].map((l) => [l.dataset.type, l.dataset.source, l.dataset.target])};",
            vec![],
        )
        .await?;
    let nodes = value["nodes"]
        .as_array()
        .context("no nodes")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let links = value["links"]
        .as_array()
        .context("no links")?
        .iter()
        .filter_map(|l| {
            Some((
                l[0].as_str()?.to_owned(),
                l[1].as_str()?.to_owned(),
                l[2].as_str()?.to_owned(),
            ))
        })
        .collect();
    Ok((nodes, links))
}

/// Clicks open the type folder the tree item `id` sits in, once it is there.
async fn show_in_tree(browser: &Browser, id: &str) -> anyhow::Result<()> {
    browser
        .wait_for(
            &format!("{id} in the tree"),
            "return !!document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"]`);",
            vec![json!(id)],
            WAIT,
        )
        .await?;
    // The folder first, if the item is in a closed one.
    browser
        .script(
            "const item = document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"]`);\
             const folder = item.parentElement.closest('[data-folder]');\
             if (folder && folder.getAttribute('aria-expanded') !== 'true') folder.querySelector('.row').click();",
            vec![json!(id)],
        )
        .await?;
    Ok(())
}

/// Clicks open the tree item `id` (and the type folder it sits in).
async fn open_in_tree(browser: &Browser, id: &str) -> anyhow::Result<()> {
    show_in_tree(browser, id).await?;
    browser
        .script(
            "const item = document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"]`);\
             if (item.getAttribute('aria-expanded') === 'false') item.querySelector('.twisty').click();",
            vec![json!(id)],
        )
        .await?;
    browser
        .wait_for(
            &format!("{id} open"),
            "const item = document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"]`);\
             return item.getAttribute('aria-expanded') !== 'false' && !item.hasAttribute('aria-busy');",
            vec![json!(id)],
            WAIT,
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_walks_the_lab_in_the_browser_live_and_in_the_past() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    ensure!(
        browser::available(),
        "the UI tests need Debian's chromium and chromium-driver (tests/run installs them)"
    );
    let mut running = RunningLab::up(OVS_LAB, "e2eui", "10.251.3.0/24")?;
    let client = running.client().await?;
    let env = running.env();
    let topology = running.lab.topology().clone();
    let ids = Ids(&topology);
    let base = running.lab.api_url();

    // vm-2, hybrid on net-a and net-b: per network its tap, qbr bridge and qvb/qvo veth pair,
    // then compute-1's vswitch, its tunnel endpoint and eth0, and both networks.
    let vm_2 = ids.instance("vm-2");
    let mut vm_2_members =
        BTreeSet::from([vm_2.clone(), ids.network("net-a"), ids.network("net-b")]);
    for net in ["net-a", "net-b"] {
        vm_2_members.extend([
            ids.vm_device("compute-1", "vm-2", net, "tap"),
            ids.qbr("compute-1", "vm-2", net),
            ids.vm_device("compute-1", "vm-2", net, "qvb"),
            ids.vm_device("compute-1", "vm-2", net, "qvo"),
        ]);
    }
    vm_2_members.extend([
        ids.vedge("compute-1"),
        ids.otep("compute-1"),
        ids.nic("compute-1", "eth0"),
    ]);
    clique_settles(&client, &env, &vm_2, &vm_2_members).await?;
    // Its links: those the lab built between these objects.
    let vm_2_links: BTreeSet<LinkTriple> = Expected::of(&topology)
        .links
        .into_iter()
        .filter(|(_, s, t)| vm_2_members.contains(s) && vm_2_members.contains(t))
        .collect();

    // A viewer of this environment only, and a second environment it must not see.
    client
        .json(
            Method::PUT,
            "/api/v1/users/viewer",
            &[],
            Some(&json!({"password": "viewer-password-1", "grants": {"view-env": [env]}})),
        )
        .await?;
    client
        .json(
            Method::POST,
            "/api/v1/environment_configs",
            &[],
            Some(
                &json!({"name": "other", "mechanism_drivers": ["OVS"], "type_drivers": ["vxlan"]}),
            ),
        )
        .await?;

    let browser = Browser::start("operator").await?;
    let outcome = async {
        // A wrong password is refused with the API's reason; the right one gets in.
        log_in(&browser, &base, "admin", "not-the-password").await?;
        browser
            .wait_for(
                "the login error",
                "return document.querySelector('#login-error').textContent;",
                vec![],
                WAIT,
            )
            .await?;
        browser.screenshot("login-refused").await?;
        log_in(&browser, &base, "admin", running.lab.admin_password()).await?;
        browser.watch_errors().await?;
        let card = format!("[data-environment=\"{env}\"] .summary");
        browser.find(&card, WAIT).await?;
        browser.screenshot("environments").await?;

        // The dashboard, then the tree walked by clicks from the top down to vm-2.
        browser.goto(&format!("{base}/#/env/{env}")).await?;
        browser.find(".dashboard table", WAIT).await?;
        browser.watch_errors().await?;
        browser.screenshot("dashboard").await?;
        let object = client
            .get(
                &format!("/api/v1/inventory/{}", vm_2),
                &[("env_name", env.as_str())],
            )
            .await?;
        let id_path: Vec<String> = object["id_path"]
            .as_str()
            .context("id_path")?
            .split('/')
            .filter(|s| !s.is_empty())
            .skip(1)
            .map(str::to_owned)
            .collect();
        ensure!(id_path.last() == Some(&vm_2), "{id_path:?}");
        for ancestor in &id_path[..id_path.len() - 1] {
            open_in_tree(&browser, ancestor).await?;
        }
        show_in_tree(&browser, &vm_2).await?;
        // The keyboard reaches it too: focus the VM's row, step up and back down.
        browser
            .script(
                "document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"]`).focus();",
                vec![json!(vm_2)],
            )
            .await?;
        browser.press(keys::ARROW_UP).await?;
        browser.press(keys::ARROW_DOWN).await?;
        let focused = browser
            .script("return document.activeElement.dataset.id || '';", vec![])
            .await?;
        ensure!(focused == json!(vm_2), "the keyboard left the focus on {focused}");
        browser.press(keys::ENTER).await?;
        browser.find("#open-clique", WAIT).await?;
        browser.screenshot("object").await?;

        // Its clique, drawn: exactly the objects and links the lab says.
        browser.click(&browser.find("#open-clique", WAIT).await?).await?;
        browser.find("svg.graph .node", WAIT).await?;
        browser.find("#diagnosis-summary", WAIT).await?;
        // The clique's health, as the API has it: its worst member's, named (the page follows
        // a change, so the two agree once both have it).
        let deadline = std::time::Instant::now() + WAIT;
        let (shown, expected) = loop {
            let clique = client
                .get(&format!("/api/v1/cliques/{vm_2}"), &[("env_name", env.as_str())])
                .await?;
            let expected = format!(
                "Health: {}: {}",
                clique["status"]["level"].as_str().unwrap_or_default(),
                clique["status"]["text"].as_str().unwrap_or_default()
            );
            let health = browser.find("#clique-health", WAIT).await?;
            let shown = browser.text(&health).await?.trim().to_owned();
            if shown == expected || std::time::Instant::now() > deadline {
                break (shown, expected);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ensure!(shown == expected, "clique health shown {shown:?}, API {expected:?}");
        let (nodes, links) = drawn(&browser).await?;
        ensure!(nodes == vm_2_members, "drawn nodes {nodes:#?}");
        ensure!(links == vm_2_links, "drawn links {links:#?}\nexpected {vm_2_links:#?}");
        // Layers run from the VM down to the wire.
        let layers = browser
            .script(
                "const layer = (id) => Number(document.querySelector(`svg.graph [data-id=\"${CSS.escape(id)}\"]`).dataset.layer);\
                 return arguments[0].map(layer);",
                vec![json!([
                    vm_2,
                    ids.vm_device("compute-1", "vm-2", "net-a", "tap"),
                    ids.vedge("compute-1"),
                    ids.otep("compute-1"),
                    ids.nic("compute-1", "eth0"),
                    ids.network("net-a"),
                ])],
            )
            .await?;
        let layers: Vec<i64> = layers
            .as_array()
            .context("layers")?
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        ensure!(
            layers.windows(2).all(|w| w[0] < w[1]),
            "VM, tap, vswitch, otep, NIC, network are not drawn top to bottom: {layers:?}"
        );
        // A node selected shows what depends on it.
        browser
            .script(
                "document.querySelector(`svg.graph [data-id=\"${CSS.escape(arguments[0])}\"]`).dispatchEvent(new MouseEvent('click', {bubbles: true}));",
                vec![json!(ids.nic("compute-1", "eth0"))],
            )
            .await?;
        browser.click(&browser.find(".impact-button", WAIT).await?).await?;
        browser
            .wait_for(
                "vm-2 among eth0's dependents",
                "return [...document.querySelectorAll('[data-impact=\"instance\"] a')].some((a) => a.textContent === 'vm-2');",
                vec![],
                WAIT,
            )
            .await?;
        browser.screenshot("clique").await?;

        // Live: the host graph of compute-2 and the tree follow a VM the lab adds.
        browser
            .goto(&format!("{base}/#/env/{env}/host/compute-2"))
            .await?;
        browser.find("svg.graph .node", WAIT).await?;
        open_in_tree(&browser, &ids.host("compute-2")).await?;
        browser
            .script(
                "const folder = document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"] [data-folder=\"instance\"]`);\
                 if (folder && folder.getAttribute('aria-expanded') !== 'true') folder.querySelector('.row').click();",
                vec![json!(ids.host("compute-2"))],
            )
            .await?;
        running.lab.add_vm(
            "compute-2",
            Vm {
                name: "vm-4".into(),
                networks: vec!["net-a".into()],
                plug: Plug::Ovs,
            },
        )?;
        let vm_4 = ids.instance("vm-4");
        browser
            .wait_for(
                "vm-4 in the tree and the host graph",
                "const id = CSS.escape(arguments[0]);\
                 return !!document.querySelector(`.tree [data-id=\"${id}\"]`) && !!document.querySelector(`svg.graph [data-id=\"${id}\"]`);",
                vec![json!(vm_4)],
                WAIT,
            )
            .await?;
        browser.screenshot("host-live").await?;

        // The past: a snapshot, vm-1 removed, then seen again through the snapshot and a diff.
        client
            .json(
                Method::POST,
                "/api/v1/snapshots",
                &[],
                Some(&json!({"env_name": env, "name": "before"})),
            )
            .await?;
        let vm_1 = ids.instance("vm-1");
        running.lab.remove_vm("vm-1")?;
        let started = Instant::now();
        while client
            .get(
                &format!("/api/v1/inventory/{}", vm_1),
                &[("env_name", env.as_str())],
            )
            .await
            .is_ok()
        {
            ensure!(started.elapsed() < WAIT, "vm-1 is still in the inventory");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        browser.goto(&format!("{base}/#/env/{env}")).await?;
        browser.find("#snapshot-select option[value]:not([value=''])", WAIT).await?;
        browser
            .script(
                "const select = document.querySelector('#snapshot-select');\
                 select.value = [...select.options].find((o) => o.textContent.startsWith('before')).value;\
                 select.dispatchEvent(new Event('change'));",
                vec![],
            )
            .await?;
        browser.find(".banner", WAIT).await?;
        let compute_1 = ids.host("compute-1");
        let host_path = client
            .get(
                &format!("/api/v1/inventory/{}", compute_1),
                &[("env_name", env.as_str())],
            )
            .await?["id_path"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for ancestor in host_path.split('/').filter(|s| !s.is_empty()).skip(1) {
            open_in_tree(&browser, ancestor).await?;
        }
        browser
            .wait_for(
                "vm-1 in the tree of the past",
                "return !!document.querySelector(`.tree [data-id=\"${CSS.escape(arguments[0])}\"]`);",
                vec![json!(vm_1)],
                WAIT,
            )
            .await?;
        show_in_tree(&browser, &vm_1).await?;
        browser.screenshot("time-travel").await?;
        browser
            .goto(&format!("{base}/#/env/{env}/diff?from=before&to=now"))
            .await?;
        browser
            .wait_for(
                "vm-1 among the removed objects",
                "return [...document.querySelectorAll('[data-diff=\"Removed\"] a')].some((a) => a.textContent === 'vm-1');",
                vec![],
                WAIT,
            )
            .await?;
        browser.screenshot("diff").await?;
        browser
            .goto(&format!("{base}/#/env/{env}/messages"))
            .await?;
        browser.find("table.messages tbody tr", WAIT).await?;
        browser.screenshot("messages").await?;
        let errors = browser.errors().await?;
        ensure!(errors.is_empty(), "the page threw: {errors:?}");

        // A viewer of this environment sees it, and not the other one.
        browser.click(&browser.find("#logout", WAIT).await?).await?;
        browser.find("#username", WAIT).await?;
        log_in(&browser, &base, "viewer", "viewer-password-1").await?;
        browser.find(&card, WAIT).await?;
        let listed = browser
            .wait_for(
                "the environment choices",
                "const options = [...document.querySelectorAll('#env-select option')].map((o) => o.value).filter(Boolean);\
                 return options.length ? options : null;",
                vec![],
                WAIT,
            )
            .await?;
        ensure!(listed == json!([env]), "the viewer is offered {listed}");
        ensure!(
            browser
                .script("return document.querySelectorAll('[data-environment]').length;", vec![])
                .await?
                == json!(1),
            "the viewer sees another environment's card"
        );
        browser.goto(&format!("{base}/#/env/other")).await?;
        let refused = browser
            .wait_for(
                "the refusal",
                "const e = document.querySelector('[role=alert]'); return e ? e.textContent : '';",
                vec![],
                WAIT,
            )
            .await?;
        ensure!(
            refused.as_str().is_some_and(|t| t.contains("other")),
            "the viewer was told {refused}"
        );
        browser.screenshot("viewer-refused").await?;
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        let _ = browser.screenshot("failure").await;
    }
    browser.close().await;
    outcome
}
