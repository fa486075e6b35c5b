//! Interest-based delivery and node liveness through an empty Redis, with real gateway
//! processes on a real redis-server:
//!
//! - a group whose members all live on one node costs the other nodes nothing (from their
//!   own metrics and from Redis's subscriber counts);
//! - a join answered 204 is subscribed: a broadcast sent right after it arrives;
//! - the last member leaving unsubscribes the node, and a later join subscribes it again;
//! - a node killed shortly before Redis restarts empty still gets a `$disconnect` for each
//!   of its connections, exactly once, from the survivors' memory.
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

/// A backplane counter of `gw`: `metric` with `direction` and `kind`.
async fn backplane(gw: &Gateway, metric: &str, direction: &str, kind: &str) -> f64 {
    let text = gw.metrics().await;
    sample(
        &text,
        metric,
        &[
            &format!("direction=\"{direction}\""),
            &format!("kind=\"{kind}\""),
        ],
    )
}

/// How many group channels `gw` says it is subscribed to.
async fn subscriptions(gw: &Gateway) -> f64 {
    sample(
        &gw.metrics().await,
        "switchboard_backplane_group_subscriptions",
        &[],
    )
}

/// How many subscribers Redis counts on `group`'s channel.
fn redis_subscribers(redis: &RedisServer, group: &str) -> u32 {
    let out = redis.cli(&[
        "--raw",
        "PUBSUB",
        "NUMSUB",
        &format!("sb:{{g.{group}}}:bcast"),
    ]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {out:?}"))
}

/// Waits until `gw` reports `want` group subscriptions and Redis counts `on_channel`
/// subscribers of `group`'s channel.
async fn wait_subscribed(
    gw: &Gateway,
    redis: &RedisServer,
    group: &str,
    want: f64,
    on_channel: u32,
) {
    eventually(
        &format!("{want} group subscription(s), {on_channel} on {group}'s channel"),
        Duration::from_secs(5),
        || async {
            (subscriptions(gw).await == want && redis_subscribers(redis, group) == on_channel)
                .then_some(())
        },
    )
    .await;
}

/// Four nodes; every member of `room` lives on node A (joined through B, C and D). Twenty
/// group broadcasts from every node reach each member once, in order; B, C and D receive
/// none of them (their own metrics, and Redis: one subscriber on the group's channel),
/// while A receives each once, its bytes the payload plus the envelope's few. A broadcast
/// to everyone still reaches every node once.
#[tokio::test]
async fn group_traffic_reaches_only_the_node_with_members() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 4, "").await;
    let a = &gws[0];
    let mut members = Vec::new();
    for i in 0..3 {
        let (ws, id) = a.connect_with_id().await;
        let via = &gws[1 + i];
        let (status, _) = via.join("room", &id).await;
        assert_eq!(status, 204, "remote join of {id} through node {}", 1 + i);
        members.push(ws);
    }
    // A client on every other node, in no group.
    let mut others = Vec::new();
    for gw in &gws[1..] {
        others.push(gw.connect().await);
    }
    assert_eq!(subscriptions(a).await, 1.0);
    for gw in &gws[1..] {
        assert_eq!(subscriptions(gw).await, 0.0);
    }
    assert_eq!(redis_subscribers(&redis, "room"), 1);

    let payload = |i: usize| format!("room message {i:02} {}", "x".repeat(100));
    for i in 0..20 {
        let (status, _) = gws[i % 4].to_group("room", &payload(i)).await;
        assert_eq!(status, 202);
    }
    for (m, ws) in members.iter_mut().enumerate() {
        for i in 0..20 {
            assert_eq!(next_text(ws).await, payload(i), "member {m}, message {i}");
        }
    }

    // A received each group broadcast once; B, C and D none.
    let envelope = 2 + 1 + "room".len();
    let bytes: usize = (0..20).map(|i| payload(i).len() + envelope).sum();
    let metric = "switchboard_backplane_messages_total";
    assert_eq!(backplane(a, metric, "in", "group").await, 20.0);
    assert_eq!(
        backplane(a, "switchboard_backplane_bytes_total", "in", "group").await,
        bytes as f64,
        "A received each payload once, with {envelope} bytes of envelope"
    );
    let mut published = 0.0;
    for (n, gw) in gws.iter().enumerate() {
        if n > 0 {
            assert_eq!(
                backplane(gw, metric, "in", "group").await,
                0.0,
                "node {n} got group traffic"
            );
            assert_eq!(
                backplane(gw, "switchboard_backplane_bytes_total", "in", "group").await,
                0.0
            );
        }
        let out = backplane(gw, metric, "out", "group").await;
        assert_eq!(out, 5.0, "node {n} published its 5 broadcasts once each");
        published += out;
    }
    assert_eq!(published, 20.0);

    // A broadcast to everyone: one publish, every node receives it once.
    let (status, _) = gws[1].broadcast("everyone").await;
    assert_eq!(status, 202);
    for ws in members.iter_mut().chain(others.iter_mut()) {
        assert_eq!(next_text(ws).await, "everyone");
    }
    assert_eq!(backplane(&gws[1], metric, "out", "broadcast").await, 1.0);
    for gw in &gws {
        assert_eq!(backplane(gw, metric, "in", "broadcast").await, 1.0);
    }
    // The remote joins went as requests and came back as replies.
    let requests: f64 = {
        let mut sum = 0.0;
        for gw in &gws[1..] {
            sum += backplane(gw, metric, "out", "request").await;
        }
        sum
    };
    assert_eq!(requests, 3.0);
    assert_eq!(backplane(a, metric, "in", "request").await, 3.0);
    assert_eq!(backplane(a, metric, "out", "reply").await, 3.0);
}

/// The join guarantee: a member on node A joins through node B (A subscribes first, as
/// its only member joins), and a broadcast sent through node C as soon as the 204 came
/// arrives. Twenty rounds of join, broadcast, leave: every round A goes from no interest to
/// interest and back.
#[tokio::test]
async fn a_broadcast_after_a_204_reaches_the_new_member() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 3, "").await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let (mut ws, id) = a.connect_with_id().await;
    for round in 0..20 {
        let (status, _) = b.join("flip", &id).await;
        assert_eq!(status, 204, "round {round}: join");
        let (status, _) = c.to_group("flip", &format!("round {round}")).await;
        assert_eq!(status, 202);
        assert_eq!(next_text(&mut ws).await, format!("round {round}"));
        let (status, _) = b.leave("flip", &id).await;
        assert_eq!(status, 204, "round {round}: leave");
        // Sent after the leave: never delivered (the next frame is the next round's).
        let (status, _) = c.to_group("flip", "after leaving").await;
        assert_eq!(status, 202);
    }
    let (status, _) = c.broadcast("end").await;
    assert_eq!(status, 202);
    assert_eq!(next_text(&mut ws).await, "end");
    wait_subscribed(a, &redis, "flip", 0.0, 0).await;
}

/// Unsubscribing: the last member leaving (by DELETE, or by closing) takes the node off the
/// group's channel; a later join puts it back, and broadcasts reach the new member.
#[tokio::test]
async fn the_last_member_leaving_unsubscribes_and_a_join_resubscribes() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 2, "").await;
    let (a, b) = (&gws[0], &gws[1]);
    let (mut x, id_x) = a.connect_with_id().await;
    let (y, id_y) = a.connect_with_id().await;
    for id in [&id_x, &id_y] {
        let (status, _) = b.join("lobby", id).await;
        assert_eq!(status, 204);
    }
    wait_subscribed(a, &redis, "lobby", 1.0, 1).await;

    // One of two leaves: still subscribed.
    let (status, _) = b.leave("lobby", &id_x).await;
    assert_eq!(status, 204);
    wait_subscribed(a, &redis, "lobby", 1.0, 1).await;
    // The last one closes its connection: unsubscribed.
    drop(y);
    wait_subscribed(a, &redis, "lobby", 0.0, 0).await;
    let (status, _) = b.to_group("lobby", "nobody listens").await;
    assert_eq!(status, 202);

    // A join (local, this time) subscribes again.
    let (status, _) = a.join("lobby", &id_x).await;
    assert_eq!(status, 204);
    wait_subscribed(a, &redis, "lobby", 1.0, 1).await;
    let (status, _) = b.to_group("lobby", "welcome back").await;
    assert_eq!(status, 202);
    assert_eq!(next_text(&mut x).await, "welcome back");
    // The last leave by DELETE: unsubscribed again; B never subscribed.
    let (status, _) = a.leave("lobby", &id_x).await;
    assert_eq!(status, 204);
    wait_subscribed(a, &redis, "lobby", 0.0, 0).await;
    assert_eq!(subscriptions(b).await, 0.0);
    assert_eq!(
        backplane(b, "switchboard_backplane_messages_total", "in", "group").await,
        0.0
    );
}

/// The node-death-before-an-empty-Redis case: three nodes, ten connections on node C;
/// once the survivors have read C's records, C is SIGKILLed and Redis is killed and
/// restarted empty 0.8 s later (before C's lease could lapse, so nothing was reaped yet).
/// Every one of C's connections gets exactly one `$disconnect` (1006), within two lease
/// TTLs (the wait for live nodes to re-register) plus a reaper pass plus slack after Redis
/// returned, and POSTs to them end in 410.
#[tokio::test]
async fn a_node_dead_before_redis_restarts_empty_is_still_reaped() {
    let mut redis = RedisServer::start().await;
    let backend = Backend::start().await;
    let extra = format!(
        "[routes.\"$disconnect\"]\nintegration = \"backend\"\n\
         [integrations.backend]\ntype = \"http\"\nurl = \"{}\"\nmode = \"proxy\"\n",
        backend.url("/events")
    );
    let mut gws = nodes(&redis, 3, &extra).await;
    let mut victims = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..10 {
        let (ws, id) = gws[2].connect_with_id().await;
        sockets.push(ws);
        victims.push(id);
    }
    let (status, _) = gws[0].join("room", &victims[0]).await;
    assert_eq!(status, 204);
    // Both survivors remember the ten records.
    for gw in &gws[..2] {
        eventually(
            "survivors remember the victim's connections",
            Duration::from_secs(10),
            || async {
                let text = gw.metrics().await;
                (sample(&text, "switchboard_backplane_remembered_connections", &[]) == 10.0)
                    .then_some(())
            },
        )
        .await;
    }

    gws[2].sigkill().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.stop();
    redis.start_again().await;
    let restarted = Instant::now();

    let mut fired = HashSet::new();
    while fired.len() < victims.len() {
        let event = backend.next_event("DISCONNECT").await;
        let ctx = &event["requestContext"];
        let id = ctx["connectionId"].as_str().unwrap().to_owned();
        assert!(victims.contains(&id), "$disconnect for {id}");
        assert_eq!(ctx["disconnectStatusCode"], 1006, "{event}");
        assert_eq!(ctx["identity"]["sourceIp"], "127.0.0.1");
        assert!(fired.insert(id.clone()), "$disconnect fired twice for {id}");
    }
    let elapsed = restarted.elapsed();
    // Uptime must exceed 2 × 1.5 s (INFO counts whole seconds: 4 s), then one reaper pass
    // (0.75 s); slack for a loaded 2-core box.
    assert!(
        elapsed < Duration::from_millis(4000 + 750 + 3000),
        "reaped {elapsed:?} after Redis returned"
    );
    // Nobody fires again: not the other survivor, not a later pass.
    backend.expect_none(Duration::from_secs(3)).await;
    let from_memory: usize = gws[..2]
        .iter()
        .map(|gw| {
            gw.count_logs("node vanished while Redis lost its records: reaped it from memory")
        })
        .sum();
    assert_eq!(from_memory, 1, "exactly one survivor reaped the node");
    for victim in &victims {
        let (status, _) = gws[1].post(victim, "anyone?").await;
        assert_eq!(status, 410, "POST to {victim}");
    }
    for gw in &gws[..2] {
        let text = gw.metrics().await;
        assert_eq!(
            sample(&text, "switchboard_backplane_remembered_connections", &[]),
            0.0
        );
    }
}

/// A node holding a member is SIGKILLed: its subscription vanishes with its connection to
/// Redis, but it is still listed as a subscriber of the group, so a group broadcast is
/// refused (503, delivered to nobody) rather than acknowledged while a listed node cannot
/// receive it — until its lease lapses and the publisher forgets it; from then on
/// broadcasts are accepted again and reach the surviving member, each exactly once.
#[tokio::test]
async fn broadcasts_are_refused_not_lost_until_a_dead_subscriber_is_forgotten() {
    let redis = RedisServer::start().await;
    let mut gws = nodes(&redis, 2, "").await;
    let (mut survivor, survivor_id) = gws[0].connect_with_id().await;
    let (_victim_ws, victim_id) = gws[1].connect_with_id().await;
    for id in [&survivor_id, &victim_id] {
        let (status, _) = gws[0].join("room", id).await;
        assert_eq!(status, 204);
    }
    assert_eq!(redis_subscribers(&redis, "room"), 2);
    gws[1].sigkill().await;
    let killed = Instant::now();

    let mut statuses = Vec::new();
    let mut n = 0;
    loop {
        let (status, _) = gws[0].to_group("room", &format!("b{n}")).await;
        statuses.push((n, status));
        n += 1;
        if status == 202 || killed.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = statuses.iter().filter(|(_, s)| *s == 503).count();
    assert!(
        refused > 0,
        "a broadcast right after the kill is refused: {statuses:?}"
    );
    let (last, status) = *statuses.last().unwrap();
    assert_eq!(
        status, 202,
        "accepted again once the lease lapsed: {statuses:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_millis(1500 * 4 + 2000),
        "forgotten within the lease TTL and Redis's uptime rule"
    );
    // Only the accepted one arrives.
    assert_eq!(next_text(&mut survivor).await, format!("b{last}"));
    expect_silence(&mut survivor, Duration::from_millis(300)).await;
}

/// What a node remembers of the others does not grow with the cluster: five nodes with two
/// connections each; every node remembers three others (its ring successors' watch), so six
/// connections — not eight — and every node is remembered by exactly three.
#[tokio::test]
async fn each_node_is_remembered_by_three_watchers_not_by_everyone() {
    let redis = RedisServer::start().await;
    let gws = nodes(&redis, 5, "").await;
    let mut sockets = Vec::new();
    for gw in &gws {
        for _ in 0..2 {
            sockets.push(gw.connect_with_id().await);
        }
    }
    for gw in &gws {
        eventually(
            "each node remembers three others and their six connections",
            Duration::from_secs(10),
            || async {
                let text = gw.metrics().await;
                let nodes = sample(&text, "switchboard_backplane_remembered_nodes", &[]);
                let conns = sample(&text, "switchboard_backplane_remembered_connections", &[]);
                (nodes == 3.0 && conns == 6.0).then_some(())
            },
        )
        .await;
    }
}
