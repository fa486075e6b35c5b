//! Cluster mode: several real gateway processes sharing a real redis-server. Cross-node
//! `@connections`, groups and broadcasts reaching every node, listings across nodes, a node
//! killed with SIGKILL, and Redis stopped and restarted (empty) under traffic.
mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt as _;
use reqwest::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// All members of `group` as `gw` lists them (one page of up to 1000).
async fn members(gw: &Gateway, group: &str) -> Vec<String> {
    sorted(
        list_pages(
            &[gw],
            &format!("/@groups/{group}/members?limit=1000"),
            "members",
        )
        .await
        .concat(),
    )
}

/// Waits until `gw` lists exactly `want` as `group`'s members (record writes are
/// asynchronous).
async fn wait_members(gw: &Gateway, group: &str, want: &[String]) {
    let want = sorted(want.to_vec());
    eventually(
        &format!("members of {group} = {want:?}"),
        Duration::from_secs(5),
        || async { (members(gw, group).await == want).then_some(()) },
    )
    .await;
}

/// Waits until `gw` lists exactly `want` as the cluster's connections.
async fn wait_connections(gw: &Gateway, want: &[String]) {
    let want = sorted(want.to_vec());
    eventually(
        &format!("connections = {want:?}"),
        Duration::from_secs(5),
        || async {
            let all = list_pages(&[gw], "/@connections?limit=1000", "connections").await;
            (sorted(all.concat()) == want).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn cross_node_post_get_delete() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 2, "").await;
    let (a, b) = (&gws[0], &gws[1]);
    let (mut ws, id) = a.connect_with_id().await;

    // POST through the other node.
    let (status, body) = b.post(&id, "via b").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(next_text(&mut ws).await, "via b");

    // GET through the other node.
    let (status, v) = b.get_connection(&id).await;
    assert_eq!(status, 200);
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");

    // DELETE through the other node closes it on its owner.
    let (status, _) = b.delete_connection(&id).await;
    assert_eq!(status, 204);
    let close = expect_close(&mut ws, Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1000);
    let (status, body) = b.post(&id, "late").await;
    assert_eq!((status, body.as_str()), (410, ""));
}

/// Three nodes, two clients each; one member per node, each joined through ANOTHER node.
/// Group and all-connection broadcasts from any node reach exactly the right clients.
#[tokio::test]
async fn broadcasts_reach_members_on_every_node() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 3, "").await;
    let mut clients = Vec::new(); // (ws, id, node index)
    for (i, gw) in gws.iter().enumerate() {
        for _ in 0..2 {
            let (ws, id) = gw.connect_with_id().await;
            clients.push((ws, id, i));
        }
    }
    // Member k is client 2k (on node k), joined via node k+1.
    let member_ids: Vec<String> = (0..3).map(|k| clients[2 * k].1.clone()).collect();
    for (k, id) in member_ids.iter().enumerate() {
        let via = &gws[(k + 1) % 3];
        let (status, body) = via.join("room", id).await;
        assert_eq!((status, body), (204, Value::Null), "remote join of {id}");
    }
    // Every node lists the same members.
    for gw in &gws {
        wait_members(gw, "room", &member_ids).await;
    }

    // A group broadcast from node 0, then an all-connections broadcast from node 1.
    let (status, _) = gws[0].to_group("room", "hello room").await;
    assert_eq!(status, 202);
    let (status, _) = gws[1].broadcast("hello all").await;
    assert_eq!(status, 202);
    for (idx, (ws, id, node)) in clients.iter_mut().enumerate() {
        if idx % 2 == 0 {
            assert_eq!(
                next_text(ws).await,
                "hello room",
                "member {id} on node {node}"
            );
        }
        // Non-members' first frame is the later all-connections broadcast.
        assert_eq!(next_text(ws).await, "hello all", "{id} on node {node}");
    }

    // Leave through yet another node; a group broadcast from node 2 skips the leaver.
    let leaver = member_ids[1].clone();
    let (status, _) = gws[0].leave("room", &leaver).await;
    assert_eq!(status, 204);
    let remaining = [member_ids[0].clone(), member_ids[2].clone()];
    wait_members(&gws[2], "room", &remaining).await;
    let (status, _) = gws[2].to_group("room", "second").await;
    assert_eq!(status, 202);
    let (status, _) = gws[2].broadcast("marker").await;
    assert_eq!(status, 202);
    for (idx, (ws, id, _)) in clients.iter_mut().enumerate() {
        if idx == 0 || idx == 4 {
            assert_eq!(next_text(ws).await, "second", "{id}");
        }
        assert_eq!(next_text(ws).await, "marker", "{id}");
    }

    // Remote join of a connection that closed: 410 through any node.
    let (ws, gone, node) = clients.remove(5);
    drop(ws);
    let via = &gws[(node + 1) % 3];
    eventually(
        "410 for a closed remote connection",
        Duration::from_secs(5),
        || async {
            let (status, _) = via.join("room", &gone).await;
            assert!(matches!(status, 204 | 410), "{status}");
            (status == 410).then_some(())
        },
    )
    .await;
}

/// Seven connections over three nodes, all in one group: the listings, paged two at a time
/// and asking a different node for each page, name every id exactly once.
#[tokio::test]
async fn listings_page_across_nodes() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 3, "").await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        let gw = &gws[i % 3];
        let (ws, id) = gw.connect_with_id().await;
        let (status, _) = gw.join("all7", &id).await;
        assert_eq!(status, 204);
        clients.push(ws);
        ids.push(id);
    }
    let refs: Vec<&Gateway> = gws.iter().collect();
    wait_connections(&gws[0], &ids).await;
    wait_members(&gws[0], "all7", &ids).await;

    for (path, field) in [
        ("/@connections?limit=2", "connections"),
        ("/@groups/all7/members?limit=2", "members"),
    ] {
        let pages = list_pages(&refs, path, field).await;
        // At most `limit` per page; the last page is the only short one and has no cursor.
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 2, 1], "{path}: {pages:?}");
        let all = pages.concat();
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(
            unique.len(),
            all.len(),
            "{path}: an id listed twice: {pages:?}"
        );
        assert_eq!(sorted(all), sorted(ids.clone()), "{path}");
    }

    // Entries carry the record: stage and identity, whichever node holds the connection.
    let (status, v) = gws[1]
        .call(Method::GET, "/@connections?limit=1000", "")
        .await;
    assert_eq!(status, 200);
    for entry in v["connections"].as_array().unwrap() {
        assert_eq!(entry["stage"], "prod", "{entry}");
        assert_eq!(entry["identity"]["sourceIp"], "127.0.0.1", "{entry}");
    }

    // A closed connection leaves both listings on every node.
    drop(clients.remove(3));
    let gone = ids.remove(3);
    for gw in &gws {
        wait_connections(gw, &ids).await;
        wait_members(gw, "all7", &ids).await;
    }
    assert!(!ids.contains(&gone));
}

/// SIGKILL one node: within the lease time a survivor removes its connections and
/// memberships and fires `$disconnect` (1006) for each once; POSTs to them answer 410.
#[tokio::test]
async fn killed_node_is_reaped() {
    let redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let extra = format!(
        "[routes.\"$disconnect\"]\nintegration = \"backend\"\n\
         [integrations.backend]\ntype = \"http\"\nurl = \"{}\"\nmode = \"proxy\"\n",
        backend.url("/events")
    );
    let mut gws = nodes(&redis, 3, &extra).await;
    let (mut survivor_ws, survivor) = gws[0].connect_with_id().await;
    let (_v1, victim1) = gws[2].connect_with_id().await;
    let (_v2, victim2) = gws[2].connect_with_id().await;
    for id in [&survivor, &victim1, &victim2] {
        let (status, _) = gws[1].join("room", id).await;
        assert_eq!(status, 204);
    }
    let everyone = [survivor.clone(), victim1.clone(), victim2.clone()];
    wait_members(&gws[0], "room", &everyone).await;
    wait_connections(&gws[0], &everyone).await;

    let killed_at = Instant::now();
    gws[2].sigkill().await;

    // Until the lease lapses the answer is 503 (the node may be alive); then 410 for good.
    for victim in [&victim1, &victim2] {
        eventually(
            "410 for the dead node's connection",
            Duration::from_secs(6),
            || async {
                let path = format!("/@connections/{victim}");
                let r = gws[0].request(Method::POST, &path, "anyone?").await;
                let status = r.status().as_u16();
                assert!(
                    matches!(status, 410 | 503),
                    "POST to a dead node's connection: {status}"
                );
                if status == 503 {
                    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
                }
                (status == 410).then_some(())
            },
        )
        .await;
    }

    // One $disconnect per victim, 1006, from a survivor.
    let mut disconnected = HashMap::new();
    while disconnected.len() < 2 {
        let event = backend.next_event("DISCONNECT").await;
        let ctx = &event["requestContext"];
        let id = ctx["connectionId"].as_str().unwrap().to_owned();
        assert!(id == victim1 || id == victim2, "$disconnect for {id}");
        assert_eq!(ctx["disconnectStatusCode"], 1006, "{event}");
        assert_eq!(ctx["routeKey"], "$disconnect");
        assert_eq!(ctx["identity"]["sourceIp"], "127.0.0.1");
        assert!(
            disconnected.insert(id, event).is_none(),
            "$disconnect fired twice"
        );
    }
    let elapsed = killed_at.elapsed();
    assert!(
        // Lease (1.5 s) + one reaper pass (0.75 s) + slack for a loaded 2-core CI box.
        elapsed < Duration::from_millis(1500 + 750 + 3000),
        "reaped after {elapsed:?}, lease 1.5 s"
    );
    backend.expect_none(Duration::from_millis(500)).await;

    // The dead node's records and memberships are gone; the survivor is untouched.
    wait_members(&gws[1], "room", std::slice::from_ref(&survivor)).await;
    wait_connections(&gws[1], std::slice::from_ref(&survivor)).await;
    for victim in [&victim1, &victim2] {
        let (status, body) = gws[1].post(victim, "still?").await;
        assert_eq!((status, body.as_str()), (410, ""));
        let (status, _) = gws[1].get_connection(victim).await;
        assert_eq!(status, 410);
    }
    let (status, _) = gws[1].post(&survivor, "alive").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut survivor_ws).await, "alive");
    let (status, _) = gws[1].to_group("room", "room").await;
    assert_eq!(status, 202);
    assert_eq!(next_text(&mut survivor_ws).await, "room");
}

/// Redis stops mid-traffic: local delivery and messages go on, cross-node operations
/// answer 503 with Retry-After. Redis comes back empty: without restarting any node,
/// cross-node POST, group broadcast and listings work again, with memberships made
/// before and during the outage.
#[tokio::test]
async fn redis_outage_and_recovery() {
    let mut redis = RedisServer::start().await;
    let extra = "[routes.echo]\nintegration = \"echo\"\ntwo_way = true\n\
                 [integrations.echo]\ntype = \"mock\"\ntemplate = 'echo $input.body'\n";
    let gws = nodes(&redis, 2, extra).await;
    let (a, b) = (&gws[0], &gws[1]);
    let (mut x, id_x) = a.connect_with_id().await;
    let (mut y, id_y) = b.connect_with_id().await;
    for (via, id) in [(b, &id_x), (a, &id_y)] {
        let (status, _) = via.join("room", id).await;
        assert_eq!(status, 204);
    }
    wait_members(a, "room", &[id_x.clone(), id_y.clone()]).await;
    let registrations = [
        a.count_logs("registered with the backplane"),
        b.count_logs("registered with the backplane"),
    ];

    // Traffic runs while Redis dies: a client on node a sends messages and a backend posts
    // to it through node a the whole time.
    redis.stop();
    for i in 0..20 {
        let (status, body) = a.post(&id_x, format!("local {i}")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, ""),
            "local POST {i} during the outage"
        );
        assert_eq!(next_text(&mut x).await, format!("local {i}"));
        x.send(Message::text(format!(r#"{{"action":"echo","n":{i}}}"#)))
            .await
            .unwrap();
        assert_eq!(
            next_text(&mut x).await,
            format!(r#"echo {{"action":"echo","n":{i}}}"#)
        );
    }
    let (status, _) = b.post(&id_y, "local on b").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut y).await, "local on b");

    // Cross-node operations and everything that needs Redis: 503 with Retry-After.
    let started = Instant::now();
    for (method, path) in [
        (Method::POST, format!("/@connections/{id_y}")),
        (Method::GET, format!("/@connections/{id_y}")),
        (Method::DELETE, format!("/@connections/{id_y}")),
        (Method::PUT, format!("/@groups/room/members/{id_y}")),
        (Method::POST, "/@groups/room".to_owned()),
        (Method::POST, "/@broadcast".to_owned()),
        (Method::GET, "/@groups/room/members?limit=10".to_owned()),
        (Method::GET, "/@connections?limit=10".to_owned()),
    ] {
        let r = a.request(method.clone(), &path, "during").await;
        assert_eq!(r.status(), 503, "{method} {path} during the outage");
        assert_eq!(
            r.headers().get("retry-after").unwrap(),
            "1",
            "{method} {path}"
        );
        assert_eq!(
            r.headers().get("x-amzn-errortype").unwrap(),
            "ServiceUnavailableException"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // A broadcast that answered 503 delivered nothing, not even locally.
    let (status, _) = a.post(&id_x, "after 503s").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut x).await, "after 503s");

    // A connection made and joined during the outage (local join on node b).
    let (mut z, id_z) = b.connect_with_id().await;
    let (status, _) = b.join("room", &id_z).await;
    assert_eq!(status, 204, "a local join works without Redis");

    // Redis comes back with nothing in it.
    redis.start_again().await;
    let recovering = Instant::now();
    eventually(
        "cross-node POST after Redis returned",
        Duration::from_secs(8),
        || async {
            let (status, _) = a.post(&id_y, "back").await;
            assert!(matches!(status, 200 | 503), "{status}");
            (status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(next_text(&mut y).await, "back");
    // Both nodes re-registered themselves (the lease was missing).
    eventually("re-registration", Duration::from_secs(5), || async {
        (a.count_logs("registered with the backplane") > registrations[0]
            && b.count_logs("registered with the backplane") > registrations[1])
            .then_some(())
    })
    .await;
    let everyone = [id_x.clone(), id_y.clone(), id_z.clone()];
    wait_members(a, "room", &everyone).await;
    wait_members(b, "room", &everyone).await;
    wait_connections(a, &everyone).await;
    assert!(
        recovering.elapsed() < Duration::from_secs(8),
        "recovered after {:?}",
        recovering.elapsed()
    );

    // Group broadcast from a reaches members on both nodes, including z.
    let (status, _) = a.to_group("room", "all back").await;
    assert_eq!(status, 202);
    assert_eq!(next_text(&mut x).await, "all back");
    assert_eq!(next_text(&mut y).await, "all back");
    assert_eq!(next_text(&mut z).await, "all back");
    // Cross-node GET and remote join work again.
    let (status, v) = a.get_connection(&id_z).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = a.join("late", &id_z).await;
    assert_eq!(status, 204);
    wait_members(b, "late", std::slice::from_ref(&id_z)).await;
    // The records in Redis carry the hash-tagged key names of the README's table.
    let keys = redis.cli(&["--raw", "KEYS", "sb:*"]);
    assert!(keys.contains("sb:{g.room}:members"), "{keys}");
    assert!(keys.contains("sb:nodes"), "{keys}");
}

/// A real redis-server that speaks only TLS (certificate from tests/fixtures/tls, for
/// 127.0.0.1) and requires a password; killed when dropped.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

async fn tls_redis(password: &str) -> TlsRedis {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tls-cert-file", &format!("{TLS_DIR}/cert.pem")])
        .args(["--tls-key-file", &format!("{TLS_DIR}/key.pem")])
        .args(["--tls-ca-cert-file", &format!("{TLS_DIR}/ca.pem")])
        .args(["--tls-auth-clients", "no", "--requirepass", password])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let redis = TlsRedis {
        port,
        child,
        _dir: dir,
    };
    eventually(
        "the TLS redis-server answers",
        Duration::from_secs(10),
        || async {
            let out = std::process::Command::new("redis-cli")
                .args(["--tls", "--cacert", &format!("{TLS_DIR}/ca.pem")])
                .args([
                    "-p",
                    &port.to_string(),
                    "-a",
                    password,
                    "--no-auth-warning",
                    "PING",
                ])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout).trim() == "PONG").then_some(())
        },
    )
    .await;
    redis
}

/// `rediss://` with a password and a private CA (`cluster.redis_ca_file`): two nodes on a
/// redis-server that speaks only TLS reach each other's connections. Without the CA file
/// the server's certificate is not trusted and the node never becomes ready.
#[tokio::test]
async fn nodes_reach_redis_over_tls_with_a_private_ca_and_a_password() {
    let redis = tls_redis("tls-pw").await;
    let cluster = |ca: &str| {
        format!(
            "{}{WHOAMI}\n[cluster]\nredis_url = \"rediss://:tls-pw@127.0.0.1:{}\"\nredis_ca_file = \"{ca}\"\nlease_ttl_ms = 1500\n",
            base_config(),
            redis.port
        )
    };
    let config = cluster(&format!("{TLS_DIR}/ca.pem"));
    let (a, b) = (Gateway::start(&config).await, Gateway::start(&config).await);
    a.wait_backplane_ready().await;
    b.wait_backplane_ready().await;
    let (mut ws, id) = a.connect_with_id().await;
    let (status, _) = b.post(&id, "over tls").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "over tls");

    // The public roots do not include the test CA: no connection, broadcasts 503.
    let untrusted = Gateway::start(&cluster("").replace("redis_ca_file = \"\"\n", "")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!untrusted.raw_logs().contains("backplane subscribed"));
    let (status, _) = untrusted.broadcast("nope").await;
    assert_eq!(status, 503);
}
