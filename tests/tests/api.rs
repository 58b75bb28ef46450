//! The REST API over a real aggregator (QUIC ingest, SQLite store) fed by agents: every
//! resource, strict parameters, the RBAC matrix, tokens, LDAP against a real slapd, time
//! travel, scans and schedules that run, and the live stream.

use std::collections::BTreeSet;
use std::time::Duration;

use calipso_agent::outbox::ChangeSet;
use calipso_aggregator::client::{ApiClient, SseEvent};
use calipso_aggregator::service::LdapSettings;
use calipso_aggregator::store::Grants;
use calipso_proto::Timestamp;
use calipso_tests::api::{ADMIN_PASSWORD, ApiHarness};
use calipso_tests::ldap::{SUFFIX, TestDirectory};
use calipso_tests::{ENV, refusal};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn status(
    client: &ApiClient,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
) -> StatusCode {
    client
        .send(method, path, query, None)
        .await
        .map(|(status, _)| status)
        .unwrap_or(StatusCode::IM_A_TEAPOT)
}

async fn wait_scan(client: &ApiClient, id: &str) -> anyhow::Result<Value> {
    for _ in 0..200 {
        let scan = client.get(&format!("/api/v1/scans/{id}"), &[]).await?;
        if !matches!(scan["status"].as_str(), Some("pending" | "running")) {
            return Ok(scan);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("scan {id} did not finish")
}

#[tokio::test]
async fn every_resource_answers_and_bad_requests_are_named() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let _a = harness.report_host(0, 2, 3).await?;
    let _b = harness.report_host(1, 2, 3).await?;
    let anonymous = ApiClient::new(&harness.url)?;
    let admin = harness.admin().await?;
    let env = &[("env_name", ENV)];

    // No token: only health, the spec and login.
    assert_eq!(
        status(&anonymous, Method::GET, "/healthz", &[]).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&anonymous, Method::GET, "/api/v1/openapi.json", &[]).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&anonymous, Method::GET, "/api/v1/inventory", env).await,
        StatusCode::UNAUTHORIZED
    );
    let forged = ApiClient::new(&harness.url)?.with_token("cal_0000");
    assert_eq!(
        status(&forged, Method::GET, "/api/v1/constants", &[]).await,
        StatusCode::UNAUTHORIZED
    );
    let mut wrong = ApiClient::new(&harness.url)?;
    assert!(wrong.login("admin", "not-the-password").await.is_err());

    // Inventory: pages in a stable order cover everything once.
    let aggregates = admin.get("/api/v1/aggregates", env).await?;
    let total = aggregates["objects"].as_u64().unwrap_or(0) as usize;
    assert!(total >= 2 * (8 + 3 * 5), "{aggregates}");
    let paged = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("limit", "7")],
        )
        .await?;
    let ids: Vec<&str> = paged.iter().filter_map(|o| o["id"].as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!((ids.len(), unique.len()), (total, total));
    let again = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("limit", "7")],
        )
        .await?;
    assert_eq!(paged, again, "the same pages twice");

    // Filters.
    let instances = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("type", "instance")],
        )
        .await?;
    assert_eq!(instances.len(), 6);
    let host0 = calipso_aggregator::synthetic::host_name(0);
    let on_host = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("host", &host0), ("type", "instance")],
        )
        .await?;
    assert_eq!(on_host.len(), 3);
    let host_id = format!("host:{host0}");
    let children = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("parent_id", &host_id)],
        )
        .await?;
    let subtree = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[
                ("env_name", ENV),
                ("parent_id", &host_id),
                ("sub_tree", "true"),
            ],
        )
        .await?;
    assert!(!children.is_empty() && subtree.len() >= children.len());
    let id_path = format!("/{ENV}/{host_id}");
    let by_path = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("id_path", &id_path)],
        )
        .await?;
    assert_eq!(
        by_path.len(),
        subtree.len() + 1,
        "the host and everything under it"
    );
    let tap = &subtree
        .iter()
        .find(|o| o["type"] == "vnic" && o["attributes"]["mac_address"].is_string())
        .cloned()
        .unwrap_or_default();
    let mac = tap["attributes"]["mac_address"]
        .as_str()
        .unwrap_or_default();
    let by_mac = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("attributes:mac_address", mac)],
        )
        .await?;
    assert!(by_mac.iter().any(|o| o["id"] == tap["id"]), "{mac}");
    let named = admin
        .get_all(
            "/api/v1/inventory",
            "objects",
            &[("env_name", ENV), ("name", "^qbr")],
        )
        .await?;
    assert!(
        !named.is_empty()
            && named
                .iter()
                .all(|o| o["name"].as_str().is_some_and(|n| n.starts_with("qbr")))
    );

    // One object, with an ETag.
    let id = tap["id"].as_str().unwrap_or_default();
    let (code, object) = admin
        .send(Method::GET, &format!("/api/v1/inventory/{id}"), env, None)
        .await?;
    assert_eq!((code, &object["id"]), (StatusCode::OK, &tap["id"]));
    let response = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/inventory/{id}?env_name={ENV}",
            harness.url
        ))
        .bearer_auth(admin_token(&harness).await?)
        .send()
        .await?;
    let etag = response.headers().get("etag").cloned().expect("an ETag");
    let cached = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/inventory/{id}?env_name={ENV}",
            harness.url
        ))
        .bearer_auth(admin_token(&harness).await?)
        .header("if-none-match", etag)
        .send()
        .await?;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        status(&admin, Method::GET, "/api/v1/inventory/vnic:nowhere", env).await,
        StatusCode::NOT_FOUND
    );

    // Links, including the tunnel between the two hosts.
    let tunnels = admin
        .get_all(
            "/api/v1/links",
            "links",
            &[("env_name", ENV), ("link_type", "otep-otep")],
        )
        .await?;
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(tunnels[0]["state"], "up");
    let all_links = admin
        .get_all(
            "/api/v1/links",
            "links",
            &[("env_name", ENV), ("limit", "9")],
        )
        .await?;
    assert_eq!(
        all_links.len() as u64,
        aggregates["links"].as_u64().unwrap_or(0)
    );
    let source = tunnels[0]["source"].as_str().unwrap_or_default();
    let from_source = admin
        .get_all(
            "/api/v1/links",
            "links",
            &[("env_name", ENV), ("source_id", source)],
        )
        .await?;
    assert!(from_source.iter().all(|l| l["source"] == source) && !from_source.is_empty());

    // Cliques: by focal point type, by focal point, by contained object.
    let cliques = admin
        .get_all(
            "/api/v1/cliques",
            "cliques",
            &[("env_name", ENV), ("focal_point_type", "instance")],
        )
        .await?;
    assert_eq!(cliques.len(), 6);
    let focal = cliques[0]["focal_point"].as_str().unwrap_or_default();
    let clique = admin.get(&format!("/api/v1/cliques/{focal}"), env).await?;
    assert!(
        clique["links"].as_array().is_some_and(|l| !l.is_empty()),
        "{clique}"
    );
    let member = clique["nodes"][1].as_str().unwrap_or_default();
    let containing = admin
        .get_all(
            "/api/v1/cliques",
            "cliques",
            &[("env_name", ENV), ("object", member)],
        )
        .await?;
    assert!(containing.iter().any(|c| c["focal_point"] == focal));

    // Strict parameters: each error names the problem.
    for (query, named) in [
        (vec![("env_name", ENV), ("colour", "red")], "colour"),
        (vec![("env_name", ENV), ("type", "spaceship")], "type"),
        (vec![("env_name", ENV), ("at", "yesterday")], "at"),
        (vec![("env_name", ENV), ("limit", "0")], "limit"),
        (vec![("env_name", ENV), ("limit", "5000")], "limit"),
        (vec![("env_name", ENV), ("limit", "x")], "limit"),
        (vec![("env_name", ENV), ("cursor", "zz")], "cursor"),
        (vec![("env_name", ENV), ("name", "(")], "name"),
        (vec![("env_name", ENV), ("stale", "maybe")], "stale"),
        (vec![("env_name", ENV), ("env_name", ENV)], "env_name"),
        (vec![], "env_name"),
    ] {
        let (code, body) = admin
            .send(Method::GET, "/api/v1/inventory", &query, None)
            .await?;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            (code, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{query:?}"
        );
        assert!(message.contains(named), "{query:?}: {message}");
    }
    let (code, _) = admin
        .send(
            Method::GET,
            "/api/v1/inventory",
            &[("env_name", "nowhere")],
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, body) = admin
        .send(Method::PATCH, "/api/v1/constants", &[], None)
        .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let (code, body) = admin
        .send(
            Method::POST,
            "/api/v1/scans",
            &[],
            Some(&json!({"environment": ENV, "kind": "everything"})),
        )
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("everything")),
        "{body}"
    );

    // Clique types: the 12 defaults, validated writes.
    let types = admin.get("/api/v1/clique_types", &[]).await?;
    assert_eq!(types.as_array().map(Vec::len), Some(12));
    let custom = json!({"name": "vnic-only", "environment": ENV, "focal_point_type": "vnic",
        "link_types": ["vnic-vedge", "vedge-otep"]});
    let bad = json!({"name": "bad", "environment": ENV, "focal_point_type": "vnic",
        "link_types": ["vnic-network"]});
    let (code, body) = admin
        .send(Method::POST, "/api/v1/clique_types", &[], Some(&bad))
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("vnic-network"))
    );
    assert_eq!(
        admin
            .send(Method::POST, "/api/v1/clique_types", &[], Some(&custom))
            .await?
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        admin
            .send(Method::POST, "/api/v1/clique_types", &[], Some(&custom))
            .await?
            .0,
        StatusCode::CONFLICT
    );
    let vnic_cliques = admin
        .get_all(
            "/api/v1/cliques",
            "cliques",
            &[("env_name", ENV), ("focal_point_type", "vnic")],
        )
        .await?;
    assert!(
        !vnic_cliques.is_empty(),
        "the new type builds cliques at once"
    );
    assert_eq!(
        admin
            .send(
                Method::PUT,
                "/api/v1/clique_types/vnic-only",
                &[],
                Some(&custom)
            )
            .await?
            .0,
        StatusCode::OK
    );
    assert_eq!(
        status(
            &admin,
            Method::DELETE,
            "/api/v1/clique_types/vnic-only",
            &[]
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(
            &admin,
            Method::DELETE,
            "/api/v1/clique_types/vnic-only",
            &[]
        )
        .await,
        StatusCode::NOT_FOUND
    );
    let after = admin
        .get_all(
            "/api/v1/cliques",
            "cliques",
            &[("env_name", ENV), ("focal_point_type", "vnic")],
        )
        .await?;
    assert!(after.is_empty());

    // Clique constraints.
    let constraint =
        json!({"focal_point_type": "vservice", "constraints": ["network"], "environment": ENV});
    assert_eq!(
        admin
            .send(
                Method::POST,
                "/api/v1/clique_constraints",
                &[],
                Some(&constraint)
            )
            .await?
            .0,
        StatusCode::CREATED
    );
    let constraints = admin.get("/api/v1/clique_constraints", &[]).await?;
    assert!(
        constraints
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["environment"] == ENV))
    );
    let path = "/api/v1/clique_constraints/vservice";
    assert_eq!(
        status(&admin, Method::DELETE, path, &[("environment", ENV)]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&admin, Method::DELETE, path, &[("environment", ENV)]).await,
        StatusCode::NOT_FOUND
    );

    // Environment configurations: secrets are write-only.
    let staging = json!({"name": "staging", "mechanism_drivers": ["OVS"], "type_drivers": ["vxlan"],
        "configuration": {"AMQP": {"host": "10.0.0.5", "pwd": "s3cret"}}});
    let (code, created) = admin
        .send(
            Method::POST,
            "/api/v1/environment_configs",
            &[],
            Some(&staging),
        )
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["secrets_set"], json!(["AMQP.pwd"]));
    assert_eq!(
        admin
            .send(
                Method::POST,
                "/api/v1/environment_configs",
                &[],
                Some(&staging)
            )
            .await?
            .0,
        StatusCode::CONFLICT
    );
    let patch = json!({"configuration": {"AMQP": {"host": "10.0.0.6"}}, "distribution": "Kolla"});
    let (code, patched) = admin
        .send(
            Method::PATCH,
            "/api/v1/environment_configs/staging",
            &[],
            Some(&patch),
        )
        .await?;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(
        (patched["distribution"].as_str(), &patched["secrets_set"]),
        (Some("Kolla"), &json!(["AMQP.pwd"]))
    );
    let listed = admin.get("/api/v1/environment_configs", &[]).await?;
    assert!(!listed.to_string().contains("s3cret"), "{listed}");
    let bad_driver = json!({"mechanism_drivers": ["Cisco-ish"]});
    assert_eq!(
        admin
            .send(
                Method::PATCH,
                "/api/v1/environment_configs/staging",
                &[],
                Some(&bad_driver)
            )
            .await?
            .0,
        StatusCode::BAD_REQUEST
    );
    // The OpenStack adapter's settings are checked on write: the error names the key.
    let refusals = [
        (
            json!({"OpenStack": {"host": "10.0.0.7", "pwd": "x"}}),
            "OpenStack.user: is required",
        ),
        (
            json!({"AMQP": {"host": "10.0.0.6"},
                "OpenStack": {"host": "10.0.0.7", "user": "admin", "pwd": "x"}}),
            "AMQP.user: is required",
        ),
    ];
    for (configuration, expected) in refusals {
        let (code, refused) = admin
            .send(
                Method::PATCH,
                "/api/v1/environment_configs/staging",
                &[],
                Some(&json!({ "configuration": configuration })),
            )
            .await?;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{refused}");
        assert!(refused.to_string().contains(expected), "{refused}");
    }
    assert_eq!(
        status(
            &admin,
            Method::DELETE,
            "/api/v1/environment_configs/staging",
            &[]
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(
            &admin,
            Method::DELETE,
            &format!("/api/v1/environment_configs/{ENV}"),
            &[]
        )
        .await,
        StatusCode::CONFLICT
    );

    // Scans: rebuilds and a full resync by the agents.
    for kind in ["links_only", "cliques_only", "full"] {
        let (code, scan) = admin
            .send(
                Method::POST,
                "/api/v1/scans",
                &[],
                Some(&json!({"environment": ENV, "kind": kind})),
            )
            .await?;
        assert_eq!(code, StatusCode::ACCEPTED, "{scan}");
        let done = wait_scan(&admin, scan["id"].as_str().unwrap_or_default()).await?;
        assert_eq!(done["status"], "completed", "{kind}: {done}");
    }
    let scans = admin.get("/api/v1/scans", env).await?;
    assert_eq!(scans.as_array().map(Vec::len), Some(3));

    // A schedule runs on its own.
    let (code, schedule) = admin
        .send(
            Method::POST,
            "/api/v1/scheduled_scans",
            &[],
            Some(&json!({"environment": ENV, "kind": "cliques_only", "interval_seconds": 10})),
        )
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{schedule}");
    let schedule_id = schedule["id"].as_str().unwrap_or_default().to_owned();
    let mut ran = None;
    for _ in 0..50 {
        let scans = admin.get("/api/v1/scans", env).await?;
        ran = scans.as_array().and_then(|s| {
            s.iter()
                .find(|s| s["schedule"] == schedule_id.as_str())
                .cloned()
        });
        if ran.as_ref().is_some_and(|s| s["status"] == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ran.is_some_and(|s| s["status"] == "completed"),
        "the scheduled scan ran"
    );
    let schedules = admin.get("/api/v1/scheduled_scans", &[]).await?;
    assert!(schedules[0]["last_run"].is_string(), "{schedules}");
    assert_eq!(
        status(
            &admin,
            Method::DELETE,
            &format!("/api/v1/scheduled_scans/{schedule_id}"),
            &[]
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let (code, _) = admin
        .send(
            Method::POST,
            "/api/v1/scheduled_scans",
            &[],
            Some(&json!({"environment": ENV, "interval_seconds": 1})),
        )
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // Agents and messages: a host that drops out is reported.
    let agents = admin.get("/api/v1/agents", &[]).await?;
    assert_eq!(agents.as_array().map(Vec::len), Some(2));
    assert!(harness.aggregator.handle.disconnect(&host0));
    let mut warned = false;
    for _ in 0..100 {
        let page = admin
            .get(
                "/api/v1/messages",
                &[("env_name", ENV), ("level", "warning")],
            )
            .await?;
        warned = page["messages"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["text"].as_str().is_some_and(|t| t.contains(&host0)))
        });
        if warned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(warned, "a warning names the host that went away");
    let (code, _) = admin
        .send(Method::GET, "/api/v1/messages", &[("level", "loud")], None)
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // Constants and users.
    let constants = admin.get("/api/v1/constants", &[]).await?;
    assert!(
        constants["link_types"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t == "otep-otep"))
    );
    let ops = json!({"password": "ops-password", "grants": {"view-env": [ENV]}});
    assert_eq!(
        admin
            .send(Method::PUT, "/api/v1/users/ops", &[], Some(&ops))
            .await?
            .0,
        StatusCode::OK
    );
    let user = admin.get("/api/v1/users/ops", &[]).await?;
    assert_eq!(
        (
            user["has_password"].as_bool(),
            user["grants"]["view-env"].clone()
        ),
        (Some(true), json!([ENV]))
    );
    assert!(!user.to_string().contains("argon2"), "no hash is shown");
    assert_eq!(
        status(&admin, Method::DELETE, "/api/v1/users/ops", &[]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&admin, Method::DELETE, "/api/v1/users/admin", &[]).await,
        StatusCode::CONFLICT
    );
    let whoami = admin.get("/api/v1/auth/tokens", &[]).await?;
    assert_eq!(whoami["username"], "admin");
    harness.stop().await;
    Ok(())
}

async fn admin_token(harness: &ApiHarness) -> anyhow::Result<String> {
    let mut client = ApiClient::new(&harness.url)?;
    Ok(client.login("admin", ADMIN_PASSWORD).await?)
}

#[tokio::test]
async fn rbac_matrix_tokens_expiry_and_revocation() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let _agent = harness.report_host(0, 1, 1).await?;
    let admin = harness.admin().await?;
    admin
        .json(
            Method::POST,
            "/api/v1/environment_configs",
            &[],
            Some(&json!({"name": "other"})),
        )
        .await?;
    for (name, grants) in [
        ("viewer", json!({"view-env": [ENV]})),
        ("editor", json!({"edit-env": [ENV]})),
        ("nobody", json!({})),
    ] {
        let body = json!({"password": format!("{name}-password"), "grants": grants});
        admin
            .json(
                Method::PUT,
                &format!("/api/v1/users/{name}"),
                &[],
                Some(&body),
            )
            .await?;
    }
    let viewer = harness.client("viewer", "viewer-password").await?;
    let editor = harness.client("editor", "editor-password").await?;
    let nobody = harness.client("nobody", "nobody-password").await?;
    let patch = json!({"distribution": "Kolla"});
    let scan = json!({"environment": ENV, "kind": "cliques_only"});
    let other_scan = json!({"environment": "other", "kind": "cliques_only"});

    struct Case<'a> {
        method: Method,
        path: &'a str,
        query: Vec<(&'a str, &'a str)>,
        body: Option<&'a Value>,
        // admin, editor, viewer, nobody
        expected: [u16; 4],
    }
    let read_env = vec![("env_name", ENV)];
    let read_other = vec![("env_name", "other")];
    let cases = [
        Case {
            method: Method::GET,
            path: "/api/v1/inventory",
            query: read_env.clone(),
            body: None,
            expected: [200, 200, 200, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/inventory",
            query: read_other.clone(),
            body: None,
            expected: [200, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/links",
            query: read_env.clone(),
            body: None,
            expected: [200, 200, 200, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/cliques",
            query: read_other.clone(),
            body: None,
            expected: [200, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/aggregates",
            query: read_env.clone(),
            body: None,
            expected: [200, 200, 200, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/scans",
            query: read_other.clone(),
            body: None,
            expected: [200, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/environment_configs/other",
            query: vec![],
            body: None,
            expected: [200, 403, 403, 403],
        },
        Case {
            method: Method::PATCH,
            path: "/api/v1/environment_configs/lab",
            query: vec![],
            body: Some(&patch),
            expected: [200, 200, 403, 403],
        },
        Case {
            method: Method::PATCH,
            path: "/api/v1/environment_configs/other",
            query: vec![],
            body: Some(&patch),
            expected: [200, 403, 403, 403],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/scans",
            query: vec![],
            body: Some(&scan),
            expected: [202, 202, 403, 403],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/scans",
            query: vec![],
            body: Some(&other_scan),
            expected: [202, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/clique_types",
            query: vec![],
            body: None,
            expected: [200, 200, 200, 200],
        },
        Case {
            method: Method::DELETE,
            path: "/api/v1/clique_types/nothing",
            query: vec![],
            body: None,
            expected: [404, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/users",
            query: vec![],
            body: None,
            expected: [200, 403, 403, 403],
        },
        Case {
            method: Method::DELETE,
            path: "/api/v1/environment_configs/nowhere",
            query: vec![],
            body: None,
            expected: [404, 403, 403, 403],
        },
    ];
    let callers = [&admin, &editor, &viewer, &nobody];
    for case in &cases {
        for (caller, expected) in callers.iter().zip(case.expected) {
            let (code, body) = caller
                .send(case.method.clone(), case.path, &case.query, case.body)
                .await?;
            assert_eq!(
                code.as_u16(),
                expected,
                "{} {} {:?}: {body}",
                case.method,
                case.path,
                case.query
            );
        }
    }
    // What a caller may not see is left out of listings rather than refused.
    let visible = viewer.get("/api/v1/environment_configs", &[]).await?;
    assert_eq!(
        visible
            .as_array()
            .map(|v| v.iter().map(|e| e["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(ENV)])
    );
    assert_eq!(nobody.get("/api/v1/agents", &[]).await?, json!([]));

    // Revocation: the token stops working at once.
    assert_eq!(
        viewer
            .send(Method::DELETE, "/api/v1/auth/tokens", &[], None)
            .await?
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&viewer, Method::GET, "/api/v1/constants", &[]).await,
        StatusCode::UNAUTHORIZED
    );
    // A withdrawn grant ends the user's sessions.
    let editor_grants = json!({"grants": {"view-env": [ENV]}});
    admin
        .json(
            Method::PUT,
            "/api/v1/users/editor",
            &[],
            Some(&editor_grants),
        )
        .await?;
    assert_eq!(
        status(&editor, Method::GET, "/api/v1/constants", &[]).await,
        StatusCode::UNAUTHORIZED
    );
    let editor = harness.client("editor", "editor-password").await?;
    assert_eq!(
        editor
            .send(Method::POST, "/api/v1/scans", &[], Some(&scan))
            .await?
            .0,
        StatusCode::FORBIDDEN
    );
    harness.stop().await;

    // Expiry, with a one-second lifetime.
    let short = ApiHarness::start(|api| api.token_lifetime = Duration::from_secs(1)).await?;
    let admin = short.admin().await?;
    assert_eq!(
        status(&admin, Method::GET, "/api/v1/constants", &[]).await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        status(&admin, Method::GET, "/api/v1/constants", &[]).await,
        StatusCode::UNAUTHORIZED
    );
    short.stop().await;
    Ok(())
}

#[tokio::test]
async fn ldap_users_log_in_with_their_groups_grants() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let directory = TestDirectory::start()?;
    let admins = Grants {
        admin: true,
        ..Grants::default()
    };
    let mut viewers = Grants::default();
    viewers.view_env.insert(ENV.into());
    let ldap = LdapSettings {
        url: directory.url.clone(),
        starttls: false,
        user_dn: format!("uid={{username}},ou=people,{SUFFIX}"),
        group_base: Some(format!("ou=groups,{SUFFIX}")),
        group_filter: "(&(objectClass=groupOfNames)(member={dn}))".into(),
        groups: [
            ("calipso-admins".to_owned(), admins),
            ("lab-viewers".to_owned(), viewers),
        ]
        .into_iter()
        .collect(),
        timeout: Duration::from_secs(5),
    };
    let harness = ApiHarness::start(|api| api.ldap = Some(ldap)).await?;
    let _agent = harness.report_host(0, 1, 1).await?;

    let alice = harness.client("alice", "alice-password").await?;
    let whoami = alice.get("/api/v1/auth/tokens", &[]).await?;
    assert_eq!(whoami["grants"]["admin"], true, "{whoami}");
    assert_eq!(
        status(&alice, Method::GET, "/api/v1/users", &[]).await,
        StatusCode::OK
    );

    let bob = harness.client("bob", "bob-password").await?;
    assert_eq!(
        status(&bob, Method::GET, "/api/v1/inventory", &[("env_name", ENV)]).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&bob, Method::GET, "/api/v1/users", &[]).await,
        StatusCode::FORBIDDEN
    );

    for (user, password) in [
        ("bob", "alice-password"),
        ("mallory", "x-password"),
        ("bob", ""),
        ("*", "bob-password"),
    ] {
        let mut client = ApiClient::new(&harness.url)?;
        assert!(
            client.login(user, password).await.is_err(),
            "{user}/{password}"
        );
    }
    // Local accounts still work beside the directory.
    harness.admin().await?;
    // A directory that is down is an error saying so, not a wrong password.
    drop(directory);
    let (code, body) = ApiClient::new(&harness.url)?
        .send(
            Method::POST,
            "/api/v1/auth/tokens",
            &[],
            Some(&json!({"username": "bob", "password": "bob-password"})),
        )
        .await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    harness.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_api_serves_https_with_the_deployment_certificate() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start_https().await?;
    assert!(harness.url.starts_with("https://"));
    let admin = harness.admin().await?;
    assert_eq!(
        admin.get("/api/v1/auth/tokens", &[]).await?["username"],
        "admin"
    );
    // A client that does not trust the deployment CA cannot talk to it.
    let stranger = ApiClient::new(&harness.url)?;
    assert!(stranger.get("/healthz", &[]).await.is_err());
    // Nor does plain HTTP get an answer on the HTTPS port.
    let plain = ApiClient::new(&harness.url.replace("https://", "http://"))?;
    assert!(plain.get("/healthz", &[]).await.is_err());
    harness.stop().await;
    Ok(())
}

#[tokio::test]
async fn time_travel_answers_from_history() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let mut agent = harness.report_host(0, 1, 2).await?;
    let admin = harness.admin().await?;
    let env = [("env_name", ENV)];
    let before_objects = admin.get_all("/api/v1/inventory", "objects", &env).await?;
    let before_links = admin.get_all("/api/v1/links", "links", &env).await?;
    let before_cliques = admin.get_all("/api/v1/cliques", "cliques", &env).await?;
    let t1 = Timestamp::now().to_string();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Change: one VM goes away, a vNIC changes its MTU.
    let vm = calipso_aggregator::synthetic::vm_objects(ENV, 0, 1);
    let removals: Vec<_> = vm.iter().map(|o| o.id.clone()).collect();
    agent
        .outbox
        .publish(
            "synthetic",
            ChangeSet {
                upserts: vec![],
                removals,
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    agent.change("extra0", 9000);
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    let instance = vm
        .iter()
        .find(|o| o.object_type == calipso_proto::ObjectType::Instance)
        .map(|o| o.id.to_string())
        .unwrap_or_default();

    let now_objects = admin.get_all("/api/v1/inventory", "objects", &env).await?;
    assert_eq!(now_objects.len(), before_objects.len() - vm.len() + 1);
    let path = format!("/api/v1/inventory/{instance}");
    assert_eq!(
        status(&admin, Method::GET, &path, &env).await,
        StatusCode::NOT_FOUND
    );

    // At T1: exactly what was there.
    let at = [("env_name", ENV), ("at", t1.as_str())];
    assert_eq!(
        admin.get_all("/api/v1/inventory", "objects", &at).await?,
        before_objects
    );
    assert_eq!(admin.get(&path, &at).await?["id"], instance.as_str());
    assert_eq!(
        admin.get_all("/api/v1/links", "links", &at).await?,
        before_links
    );
    let then_cliques = admin.get_all("/api/v1/cliques", "cliques", &at).await?;
    assert_eq!(then_cliques, before_cliques);
    assert_eq!(
        admin
            .get(&format!("/api/v1/cliques/{instance}"), &at)
            .await?["focal_point"],
        instance.as_str()
    );
    assert_eq!(
        status(
            &admin,
            Method::GET,
            &format!("/api/v1/cliques/{instance}"),
            &env
        )
        .await,
        StatusCode::NOT_FOUND
    );
    // Before anything was reported, the environment was empty.
    let empty = [("env_name", ENV), ("at", "2000-01-01T00:00:00Z")];
    assert!(
        admin
            .get_all("/api/v1/inventory", "objects", &empty)
            .await?
            .is_empty()
    );
    harness.stop().await;
    Ok(())
}

fn ids_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            v["id"]
                .as_str()
                .or(v.as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_diffs_and_retention_keep_what_is_pinned() -> anyhow::Result<()> {
    use calipso_aggregator::store::Store;
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let mut agent = harness.report_host(0, 1, 2).await?;
    agent.change("extra0", 1500);
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    let admin = harness.admin().await?;
    let create = |name: &str| json!({"env_name": ENV, "name": name, "note": "review"});
    let before = admin
        .json(
            Method::POST,
            "/api/v1/snapshots",
            &[],
            Some(&create("before")),
        )
        .await?;
    assert_eq!(before["name"], "before");
    assert_eq!(before["created_by"], "admin");
    let post = |body: Value| {
        let admin = &admin;
        async move {
            refusal(
                admin
                    .json(Method::POST, "/api/v1/snapshots", &[], Some(&body))
                    .await,
            )
        }
    };
    assert_eq!(post(create("before")).await.0, 409, "names are unique");
    let (status, message) = post(create("a b")).await;
    assert_eq!(status, 400);
    assert!(message.contains("is not a snapshot name"), "{message}");
    let (status, _) = post(json!({"env_name": "nowhere", "name": "x"})).await;
    assert_eq!(status, 404);
    let (status, message) =
        post(json!({"env_name": ENV, "name": "x", "at": "1999-01-01T00:00:00Z"})).await;
    assert_eq!(status, 400);
    assert!(message.contains("before history"), "{message}");

    // The change under review: VM 1 of compute-0000 goes, extra0's MTU goes up.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let vm = calipso_aggregator::synthetic::vm_objects(ENV, 0, 1);
    agent
        .outbox
        .publish(
            "synthetic",
            ChangeSet {
                upserts: vec![],
                removals: vm.iter().map(|o| o.id.clone()).collect(),
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    agent.change("extra0", 9000);
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    admin
        .json(
            Method::POST,
            "/api/v1/snapshots",
            &[],
            Some(&create("after")),
        )
        .await?;

    let host = "compute-0000";
    let instance = format!("instance:{}", calipso_aggregator::synthetic::vm_uuid(0, 1));
    let device = |kind: &str, prefix: &str| format!("{kind}:{host}:{prefix}00000000001");
    let vm_gone: BTreeSet<String> = [
        instance.clone(),
        device("vnic", "tap"),
        device("vconnector", "qbr"),
        device("vnic", "qvb"),
        device("vnic", "qvo"),
    ]
    .into();
    let diff_of = |query: Vec<(&'static str, String)>| {
        let admin = &admin;
        async move {
            let mut all: Vec<(&str, &str)> = vec![("env_name", ENV)];
            all.extend(query.iter().map(|(k, v)| (*k, v.as_str())));
            admin.get("/api/v1/diff", &all).await
        }
    };
    let diff = diff_of(vec![("from", "before".into()), ("to", "after".into())]).await?;
    assert_eq!(ids_of(&diff["objects"]["removed"]), vm_gone, "{diff:#}");
    assert!(ids_of(&diff["objects"]["added"]).is_empty(), "{diff:#}");
    let changed = &diff["objects"]["changed"];
    assert_eq!(
        ids_of(changed),
        BTreeSet::from([format!("vnic:{host}:extra0")])
    );
    assert_eq!(
        changed[0]["changes"],
        json!([{"path": "attributes.mtu", "from": 1500, "to": 9000}])
    );
    // The VM's six links: to its tap, tap and qvb on the qbr, the veth, qvo and qbr to OVS.
    let removed_links: BTreeSet<String> = diff["links"]["removed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            l["link_type"].as_str().unwrap_or_default().to_owned()
                + " "
                + l["source"].as_str().unwrap_or_default()
        })
        .collect();
    assert_eq!(
        removed_links,
        BTreeSet::from([
            format!("instance-vnic {instance}"),
            format!("vnic-vconnector {}", device("vnic", "tap")),
            format!("vnic-vconnector {}", device("vnic", "qvb")),
            format!("vnic-vnic {}", device("vnic", "qvb")),
            format!("vnic-vedge {}", device("vnic", "qvo")),
            format!("vconnector-vedge {}", device("vconnector", "qbr")),
        ])
    );
    assert_eq!(diff["cliques"]["removed"], json!([instance]));
    assert_eq!(diff["cliques"]["changed"], json!([]));
    let only_instances = diff_of(vec![
        ("from", "before".into()),
        ("to", "after".into()),
        ("type", "instance".into()),
    ])
    .await?;
    assert_eq!(
        ids_of(&only_instances["objects"]["removed"]),
        BTreeSet::from([instance.clone()])
    );
    assert!(ids_of(&only_instances["objects"]["changed"]).is_empty());

    // Bad questions.
    let (status, message) =
        refusal(diff_of(vec![("from", "after".into()), ("to", "before".into())]).await);
    assert_eq!(status, 400);
    assert!(message.contains("is after to"), "{message}");
    let (status, message) = refusal(diff_of(vec![("from", "nope".into())]).await);
    assert_eq!(
        (status, message.as_str()),
        (404, "no snapshot `nope` in `lab`")
    );
    let (status, message) = refusal(diff_of(vec![("from", "1999-01-01T00:00:00Z".into())]).await);
    assert_eq!(status, 400);
    assert!(message.contains("before history"), "{message}");
    let (status, _) = refusal(diff_of(vec![]).await);
    assert_eq!(status, 400, "from is required");

    // Retention: everything that ended before now goes, except what the snapshots pin.
    // A time strictly before the cutoff: two `now()` calls can fall in the same microsecond.
    let cutoff = Timestamp::now();
    let between = Timestamp::from_unix_micros(cutoff.unix_micros() - 1);
    let store = harness.aggregator.sink.store();
    store.compact_history(cutoff).await?;
    let again = diff_of(vec![("from", "before".into()), ("to", "after".into())]).await?;
    assert_eq!(
        ids_of(&again["objects"]["removed"]),
        vm_gone,
        "pinned: still answerable"
    );
    let (status, _) = refusal(diff_of(vec![("from", between.to_string())]).await);
    assert_eq!(
        status, 400,
        "a time that is no snapshot is before history now"
    );
    let path = "/api/v1/snapshots/before";
    assert_eq!(
        status_of(&admin, Method::DELETE, path).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_of(&admin, Method::DELETE, path).await,
        StatusCode::NOT_FOUND
    );
    store.compact_history(Timestamp::now()).await?;
    let at_before = [
        ("env_name", ENV),
        ("at", before["at"].as_str().unwrap_or_default()),
    ];
    let (status, message) = refusal(admin.get("/api/v1/inventory", &at_before).await);
    assert_eq!(status, 400, "a compacted time cannot be answered whole");
    assert!(message.contains("is before history"), "{message}");
    let listed = admin.get("/api/v1/snapshots", &[("env_name", ENV)]).await?;
    assert_eq!(
        listed
            .as_array()
            .map(|l| l.iter().map(|s| s["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("after")])
    );
    harness.stop().await;
    Ok(())
}

/// Issue 24, item 3: a schedule whose next run lies past year 9999 used to be stored, then
/// fail every listing, deletion and scheduler tick for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_far_in_the_future_is_refused_and_an_unreadable_one_breaks_nothing()
-> anyhow::Result<()> {
    use calipso_aggregator::store::{ScanKind, ScheduleRecord, Store};
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let _agent = harness.report_host(0, 1, 1).await?;
    let admin = harness.admin().await?;
    let schedule = |body: Value| {
        let admin = &admin;
        async move {
            refusal(
                admin
                    .json(Method::POST, "/api/v1/scheduled_scans", &[], Some(&body))
                    .await,
            )
        }
    };
    let (refused_with, message) = schedule(json!({"environment": ENV, "kind": "cliques_only",
        "interval_seconds": 300_000_000_000u64}))
    .await;
    assert_eq!(refused_with, 400);
    assert_eq!(
        message,
        "interval_seconds must be from 10 to 31622400 (a year)"
    );
    let (refused_with, message) = schedule(json!({"environment": ENV, "kind": "cliques_only",
        "interval_seconds": 3600, "first_run": "9999-01-01T00:00:00Z"}))
    .await;
    assert_eq!(refused_with, 400);
    assert!(message.contains("more than a year ahead"), "{message}");

    // The store refuses what it could not read back.
    let store = harness.aggregator.sink.store();
    let mut record = ScheduleRecord {
        id: "schedule-far".into(),
        environment: ENV.into(),
        host: None,
        kind: ScanKind::CliquesOnly,
        interval_seconds: 300_000_000_000,
        next_run: Timestamp::from_unix_micros(i64::MAX / 2),
        last_run: None,
        last_scan: None,
        created_by: "admin".into(),
    };
    let refused = store.put_schedule(&record).await.map_err(|e| e.to_string());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("outside the years RFC 3339 writes")),
        "{refused:?}"
    );

    // A row an older version wrote that way: listings, the scheduler and deletion go on.
    record.next_run = Timestamp::now();
    store.put_schedule(&record).await?;
    let db = harness.dir.path().join("calipso.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    sqlx::query("UPDATE scheduled_scans SET body = replace(body, '\"next_run\":\"', '\"next_run\":\"@9') WHERE id = 'schedule-far'")
        .execute(&pool)
        .await?;
    pool.close().await;
    let (code, body) = admin
        .send(
            Method::POST,
            "/api/v1/scheduled_scans",
            &[],
            Some(&json!({"environment": ENV, "kind": "cliques_only", "interval_seconds": 3600})),
        )
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let listed = admin.get("/api/v1/scheduled_scans", &[]).await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        status(
            &admin,
            Method::DELETE,
            "/api/v1/scheduled_scans/schedule-far",
            &[]
        )
        .await,
        StatusCode::NO_CONTENT,
        "an admin removes the unreadable one"
    );
    harness.stop().await;
    Ok(())
}

/// Issue 24, items 1 and 2: logins cost the same for unknown users, failures lock a user (and
/// a client address) for a growing time, and a flood of logins is answered at once past a
/// bounded number of password checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_resist_guessing_and_floods() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let admin = harness.admin().await?;
    let alice = json!({"password": "alice-password", "grants": {"view-env": [ENV]}});
    admin
        .send(Method::PUT, "/api/v1/users/alice", &[], Some(&alice))
        .await?;
    let anonymous = ApiClient::new(&harness.url)?;
    let login = |username: String, password: &'static str| {
        let anonymous = &anonymous;
        async move {
            let body = json!({"username": username, "password": password});
            let started = std::time::Instant::now();
            let (code, answer) = anonymous
                .send(Method::POST, "/api/v1/auth/tokens", &[], Some(&body))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::Ok((code, answer, started.elapsed()))
        }
    };

    // An unknown user takes a password check too: names cannot be told apart by time.
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for round in 0..5 {
        let (code, _, took) = login(format!("nobody-{round}"), "guess").await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        unknown.push(took);
        let (code, _, took) = login("alice".into(), "guess").await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        wrong.push(took);
    }
    unknown.sort();
    wrong.sort();
    assert!(
        unknown[2] * 3 >= wrong[2],
        "an unknown user answered in {:?}, a wrong password in {:?}",
        unknown[2],
        wrong[2]
    );

    // Five failures are free; the sixth locks the user for a second, even for the right
    // password; then it works and the count starts again.
    for _ in 0..6 {
        let (code, _, _) = login("admin".into(), "guess").await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
    let (code, answer, _) = login("admin".into(), calipso_tests::api::ADMIN_PASSWORD).await?;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "too many failed logins for user `admin`; retry in 1 s"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, answer, _) = login("admin".into(), calipso_tests::api::ADMIN_PASSWORD).await?;
    assert_eq!(code, StatusCode::CREATED, "{answer}");

    // A flood of 64 logins at once (distinct names): at most a bounded number are checked,
    // the rest answered at once; the API's other answers stay quick; the memory comes back.
    let rss_before = calipso_tests::rss_mib();
    let flood = futures::future::join_all((0..64).map(|i| login(format!("flood-{i}"), "guess")));
    let health = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let answer = reqwest::get(format!("{}/healthz", harness.url)).await;
        (answer.map(|r| r.status()), started.elapsed())
    };
    let (answers, (healthz, healthz_took)) = tokio::join!(flood, health);
    let codes: Vec<StatusCode> = answers
        .into_iter()
        .map(|a| a.map(|(code, _, _)| code))
        .collect::<anyhow::Result<_>>()?;
    assert!(
        codes.iter().all(|c| [
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(c)),
        "{codes:?}"
    );
    let checked = codes
        .iter()
        .filter(|c| **c == StatusCode::UNAUTHORIZED)
        .count();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        checked <= cores * 9 + 20,
        "{checked} of 64 were checked: {codes:?}"
    );
    assert!(
        codes.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{codes:?}"
    );
    assert_eq!(healthz.ok(), Some(StatusCode::OK));
    assert!(
        healthz_took < Duration::from_secs(1),
        "/healthz took {healthz_took:?}"
    );
    assert!(
        calipso_tests::rss_mib() < rss_before + 256.0,
        "RSS {rss_before:.0} -> {:.0} MiB",
        calipso_tests::rss_mib()
    );
    harness.stop().await;
    Ok(())
}

/// Issue 24, item 8 (part): liveness tells nothing about the environments, an oversized body
/// is a 413, answers carry `nosniff` and `no-store`.
#[tokio::test]
async fn liveness_limits_and_headers() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    // Plain HTTP, but reqwest's client wants a TLS provider chosen all the same.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let harness = ApiHarness::start(|_| {}).await?;
    let _agent = harness.report_host(0, 1, 1).await?;
    let health = reqwest::get(format!("{}/healthz", harness.url)).await?;
    assert_eq!(
        health
            .headers()
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
    assert_eq!(
        health.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let body: Value = health.json().await?;
    assert_eq!(
        body.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["status".to_owned(), "version".to_owned()]),
        "{body}"
    );
    let oversized = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/tokens", harness.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await?;
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = oversized.json().await?;
    assert_eq!(answer["error"]["code"], "payload_too_large");
    harness.stop().await;
    Ok(())
}

async fn status_of(client: &ApiClient, method: Method, path: &str) -> StatusCode {
    status(client, method, path, &[("env_name", ENV)]).await
}

async fn next_change(
    events: &mut (impl futures::Stream<Item = SseEvent> + Unpin),
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<(SseEvent, Value)> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if event.event != "change" {
            anyhow::bail!("unexpected {event:?}");
        }
        let data: Value = serde_json::from_str(&event.data)?;
        if pred(&data) {
            return Ok((event, data));
        }
    }
}

#[tokio::test]
async fn the_live_stream_delivers_agent_changes_and_resumes() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|api| api.event_buffer = 64).await?;
    let mut agent = harness.report_host(0, 1, 1).await?;
    let admin = harness.admin().await?;
    let mut events = Box::pin(
        admin
            .events(&[("env_name", ENV), ("types", "vnic")], None)
            .await?,
    );
    // The stream is subscribed once its response arrived; changes from now on are seen.
    agent.change("watched", 1400);
    let id = format!("vnic:{}:watched", agent.host);
    let (first, data) = next_change(&mut events, |d| {
        d["kind"] == "object" && d["key"] == id.as_str()
    })
    .await?;
    assert_eq!(
        (
            data["action"].as_str(),
            data["data"]["attributes"]["mtu"].as_u64()
        ),
        (Some("upsert"), Some(1400))
    );

    // Missed while away: resumed from the last id seen.
    drop(events);
    agent.change("watched", 1450);
    agent.change("watched", 1500);
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    let mut resumed = Box::pin(
        admin
            .events(&[("env_name", ENV), ("types", "vnic")], first.id.as_deref())
            .await?,
    );
    let (_, d1) = next_change(&mut resumed, |d| d["key"] == id.as_str()).await?;
    let (_, d2) = next_change(&mut resumed, |d| d["key"] == id.as_str()).await?;
    assert_eq!(
        (
            d1["data"]["attributes"]["mtu"].as_u64(),
            d2["data"]["attributes"]["mtu"].as_u64()
        ),
        (Some(1450), Some(1500))
    );

    // Older than what is kept (64 events): a reset, not a silent gap.
    for mtu in 0..80 {
        agent.change(&format!("churn{mtu}"), 1500);
    }
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    let mut stale = Box::pin(
        admin
            .events(&[("env_name", ENV)], first.id.as_deref())
            .await?,
    );
    let event = tokio::time::timeout(Duration::from_secs(10), stale.next())
        .await?
        .expect("an event");
    assert_eq!(event.event, "reset", "{event:?}");
    let (code, _) = admin
        .send(
            Method::GET,
            "/api/v1/events",
            &[("since", "not-an-id")],
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // Issue 24, item 4: a resume id in the future is refused, not a silent stream.
    let future = format!("{}.0", Timestamp::now().unix_micros() + 3_600_000_000);
    let (code, answer) = admin
        .send(Method::GET, "/api/v1/events", &[("since", &future)], None)
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lies in the future")),
        "{answer}"
    );

    // A stream ends when its token is revoked, whether events come or not.
    let viewer = harness.admin().await?;
    let mut watched = Box::pin(viewer.events(&[("env_name", ENV)], None).await?);
    assert_eq!(
        status(&viewer, Method::DELETE, "/api/v1/auth/tokens", &[]).await,
        StatusCode::NO_CONTENT
    );
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while watched.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its revoked token");
    harness.stop().await;
    Ok(())
}

/// What the web UI reads: the tree a level at a time with child counts, the graph of a host
/// or a clique, an object's versions, messages newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_graphs_and_versions_read_what_the_ui_shows() -> anyhow::Result<()> {
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|_| {}).await?;
    let mut agent = harness.report_host(0, 1, 2).await?;
    let admin = harness.admin().await?;
    let env = [("env_name", ENV)];
    let host = "host:compute-0000";
    let rows = |level: &Value| -> Vec<(String, String, u64)> {
        level["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["type"].as_str().unwrap_or_default().to_owned(),
                    r["id"].as_str().unwrap_or_default().to_owned(),
                    r["children"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };

    // The only root is the host. It holds its three NICs, its vswitch, its DHCP namespace and,
    // per VM, the instance, its tap, qbr bridge and qvb/qvo pair; the vswitch holds the tunnel
    // endpoint, the namespace its port.
    let roots = admin.get("/api/v1/tree", &env).await?;
    assert_eq!(rows(&roots), vec![("host".into(), host.into(), 15)]);
    let level = admin
        .get("/api/v1/tree", &[("env_name", ENV), ("parent_id", host)])
        .await?;
    let level = rows(&level);
    let count = |t: &str| level.iter().filter(|(ty, _, _)| ty == t).count();
    assert_eq!(
        [
            "instance",
            "vnic",
            "vconnector",
            "vedge",
            "host_pnic",
            "vservice"
        ]
        .map(count),
        [2, 6, 2, 1, 3, 1]
    );
    for (object_type, _, children) in &level {
        let expected = u64::from(object_type == "vedge" || object_type == "vservice");
        assert_eq!(*children, expected, "{object_type}");
    }
    let (status, message) = refusal(
        admin
            .get("/api/v1/tree", &[("env_name", ENV), ("parent_id", "nope")])
            .await,
    );
    assert_eq!(
        (status, message.as_str()),
        (404, "no object `nope` in `lab`")
    );

    // Graphs: of a host, its 18 objects; of a VM, its clique's members and links.
    let graph = admin
        .get(
            "/api/v1/graph",
            &[("env_name", ENV), ("host", "compute-0000")],
        )
        .await?;
    assert_eq!(graph["nodes"].as_array().map(Vec::len), Some(18));
    let vm = format!("instance:{}", calipso_aggregator::synthetic::vm_uuid(0, 1));
    let clique = admin.get(&format!("/api/v1/cliques/{vm}"), &env).await?;
    let drawn = admin
        .get(
            "/api/v1/graph",
            &[("env_name", ENV), ("focal_point", vm.as_str())],
        )
        .await?;
    let ids = |list: &Value, key: &str| -> BTreeSet<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                if key.is_empty() {
                    v.as_str()
                } else {
                    v[key].as_str()
                }
                .map(str::to_owned)
            })
            .collect()
    };
    assert_eq!(ids(&drawn["nodes"], "id"), ids(&clique["nodes"], ""));
    assert_eq!(
        drawn["links"].as_array().map(Vec::len),
        clique["links"].as_array().map(Vec::len)
    );
    for bad in [
        vec![("env_name", ENV)],
        vec![("env_name", ENV), ("host", "a"), ("focal_point", "b")],
    ] {
        let (status, message) = refusal(admin.get("/api/v1/graph", &bad).await);
        assert_eq!(status, 400);
        assert!(message.contains("focal_point"), "{message}");
    }

    // Versions, newest first: a vNIC added, then its MTU changed, which ended the first.
    agent.change("extra0", 1500);
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    agent.change("extra0", 9000);
    assert!(agent.wait_acked(Duration::from_secs(10)).await);
    let versions = admin
        .get("/api/v1/inventory/vnic:compute-0000:extra0/versions", &env)
        .await?;
    let versions = versions.as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["object"]["attributes"]["mtu"], 9000);
    assert_eq!(versions[0]["valid_to"], Value::Null);
    assert_eq!(versions[1]["object"]["attributes"]["mtu"], 1500);
    assert_eq!(versions[1]["valid_to"], versions[0]["valid_from"]);
    let (status, _) = refusal(
        admin
            .get("/api/v1/inventory/vnic:compute-0000:nothing/versions", &env)
            .await,
    );
    assert_eq!(status, 404);

    // Messages newest first; an unknown order is named.
    let (status, message) = refusal(
        admin
            .get("/api/v1/messages", &[("env_name", ENV), ("order", "up")])
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("order"), "{message}");
    admin
        .get(
            "/api/v1/messages",
            &[("env_name", ENV), ("order", "newest")],
        )
        .await?;

    // Issue 24, item 8: an agent's epoch (a random 64-bit number) is a string, which
    // JavaScript cannot round.
    let agents = admin.get("/api/v1/agents", &env).await?;
    let epoch = agents[0]["epoch"].as_str().unwrap_or_default();
    assert!(epoch.parse::<u64>().is_ok(), "epoch {}", agents[0]["epoch"]);

    // The UI's files: the page under a policy that allows only its own scripts, never framed.
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/", harness.url)).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-security-policy").contains("script-src 'self';"));
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let etag = header("etag");
    assert!(page.text().await?.contains("/ui/js/main.js"));
    let again = http
        .get(format!("{}/", harness.url))
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let module = http
        .get(format!("{}/ui/js/graph.js", harness.url))
        .send()
        .await?;
    assert_eq!(
        module
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/javascript; charset=utf-8")
    );
    let missing = http
        .get(format!("{}/ui/js/nothing.js", harness.url))
        .send()
        .await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    harness.stop().await;
    Ok(())
}

/// Issue 24, item 5: connections that send nothing, or their headers a little at a time, stayed
/// open for good; past the process's file limit nothing was answered; a token could open any
/// number of live streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_closed_and_connections_and_streams_are_capped()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    calipso_tests::init_test_logging();
    let harness = ApiHarness::start(|api| {
        api.header_timeout = Duration::from_secs(1);
        api.max_connections = 8;
        api.max_streams_per_token = 2;
    })
    .await?;
    let address = harness.api.local_addr;
    let closed_within = |mut stream: tokio::net::TcpStream, limit: Duration| async move {
        let mut buffer = [0u8; 256];
        let started = std::time::Instant::now();
        loop {
            match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    };

    // Slowloris: half a request's headers, then nothing; and a client that sends nothing.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: calipso\r\nX-Slow: ")
            .await?;
        slow.push(stream);
    }
    slow.push(tokio::net::TcpStream::connect(address).await?);
    for stream in slow {
        let closed = closed_within(stream, Duration::from_secs(4)).await;
        assert!(
            closed.is_some(),
            "a slow client is still connected after 4 s"
        );
    }

    // Eight connections are served at once; the ninth is told so and closed.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(address).await?);
    }
    let mut ninth = tokio::net::TcpStream::connect(address).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), ninth.read_to_string(&mut answer)).await??;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("as many connections as it may"), "{answer}");
    // Once the held ones time out, the API answers again.
    drop(held);
    let admin = harness.admin().await?;
    admin.get("/api/v1/auth/tokens", &[]).await?;

    // Two live streams per token; a third is refused until one closes.
    let env = [("env_name", ENV)];
    let first = admin.events(&env, None).await?;
    let _second = admin.events(&env, None).await?;
    match admin.events(&env, None).await {
        Err(calipso_aggregator::client::ClientError::Api { status, message }) => {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert!(message.contains("2 live streams"), "{message}");
        }
        Err(other) => anyhow::bail!("a third stream failed otherwise: {other}"),
        Ok(_) => anyhow::bail!("a third stream was opened"),
    }
    drop(first);
    let started = std::time::Instant::now();
    loop {
        match admin.events(&env, None).await {
            Ok(_) => break,
            Err(err) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a closed stream's slot was not given back: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    harness.stop().await;
    Ok(())
}
