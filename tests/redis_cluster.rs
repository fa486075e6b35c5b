//! Cluster mode on a real Redis Cluster (three masters, three replicas on loopback) with
//! three real gateway processes:
//!
//! - cross-node POST, GET and DELETE, groups, broadcasts and listings work as on one
//!   `redis-server`, over sharded pub/sub (Redis counts the nodes' shard subscriptions), on a
//!   cluster that requires a password;
//! - a master killed mid-traffic: its replica is promoted and cross-node requests and group
//!   broadcasts resume without a gateway restart;
//! - a slot moved to another master mid-traffic (the node's inbox and the group's channel):
//!   subscriptions follow it.
//!
//! Under both faults every POST answered 200 arrives exactly once, every broadcast answered
//! 202 reaches every member once and a refused one (503) reaches none, nothing arrives twice
//! or out of order, and a live connection is never answered 410.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::sync::Mutex;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Waits until `gw` lists exactly `want` from `path`'s `field` (record writes are
/// asynchronous).
async fn wait_listed(gw: &Gateway, path: &str, field: &str, want: &[String]) {
    let want = sorted(want.to_vec());
    eventually(
        &format!("{path} lists {want:?}"),
        Duration::from_secs(5),
        || async { (sorted(list_pages(&[gw], path, field).await.concat()) == want).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn cross_node_operations_groups_broadcasts_and_listings() {
    // Password-protected, as production clusters are: the seeds carry it.
    let cluster = RedisCluster::start_with_password("s3cret-pw").await;
    let gws = cluster_nodes(&cluster, 3, "").await;
    let mut clients = Vec::new(); // (ws, id, node index)
    for (i, gw) in gws.iter().enumerate() {
        for _ in 0..2 {
            let (ws, id) = gw.connect_with_id().await;
            clients.push((ws, id, i));
        }
    }
    let all_ids: Vec<String> = clients.iter().map(|c| c.1.clone()).collect();

    // POST and GET through another node.
    let id0 = clients[0].1.clone();
    let (status, body) = gws[1].post(&id0, "via node 1").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(next_text(&mut clients[0].0).await, "via node 1");
    let (status, v) = gws[2].get_connection(&id0).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");

    // Member k is client 2k (on node k), joined through node k+1.
    let members: Vec<String> = (0..3).map(|k| clients[2 * k].1.clone()).collect();
    for (k, id) in members.iter().enumerate() {
        let (status, body) = gws[(k + 1) % 3].join("room", id).await;
        assert_eq!((status, body), (204, Value::Null), "remote join of {id}");
    }
    // Each node holds a member: Redis counts three shard subscribers on the group's channel
    // (on the master owning its slot), and three on the broadcast channel.
    let group_channel = "sb:{g.room}:bcast";
    let owner = cluster.owner_of(cluster.keyslot(group_channel));
    assert_eq!(cluster.shard_subscribers(owner, group_channel), 3);
    let owner = cluster.owner_of(cluster.keyslot("sb:{all}:bcast"));
    assert_eq!(cluster.shard_subscribers(owner, "sb:{all}:bcast"), 3);

    let (status, _) = gws[0].to_group("room", "hello room").await;
    assert_eq!(status, 202);
    let (status, _) = gws[1].broadcast("hello all").await;
    assert_eq!(status, 202);
    for (idx, (ws, id, node)) in clients.iter_mut().enumerate() {
        if idx % 2 == 0 {
            assert_eq!(next_text(ws).await, "hello room", "member {id} on {node}");
        }
        assert_eq!(next_text(ws).await, "hello all", "{id} on node {node}");
    }

    // Listings, paged through every node.
    for gw in &gws {
        wait_listed(gw, "/@connections?limit=1000", "connections", &all_ids).await;
        wait_listed(gw, "/@groups/room/members?limit=1000", "members", &members).await;
    }
    let refs: Vec<&Gateway> = gws.iter().collect();
    let pages = list_pages(&refs, "/@connections?limit=2", "connections").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    assert_eq!(sorted(pages.concat()), sorted(all_ids.clone()));

    // DELETE through another node closes it on its owner; then 410 everywhere.
    let (status, _) = gws[2].delete_connection(&id0).await;
    assert_eq!(status, 204);
    let close = expect_close(&mut clients[0].0, Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1000);
    for gw in &gws {
        let (status, _) = gw.post(&id0, "late").await;
        assert_eq!(status, 410);
    }
}

/// What a fault test sends and what its statuses were.
#[derive(Default)]
struct Sent {
    /// POST number → status.
    posts: Vec<(u32, u16)>,
    /// Group broadcast number → status.
    broadcasts: Vec<(u32, u16)>,
}

/// The setup of a fault test: three gateways; a target connection on node 1 (the POSTs'
/// target, and a member), another member on node 2; the group's name chosen so its channel
/// lives on the same master as node 1's inbox, so one fault hits both.
struct Traffic {
    gws: Vec<Gateway>,
    target: (Client, String),
    member: (Client, String),
    group: String,
    /// Node 1's inbox channel.
    inbox: String,
}

/// `choose_group(slot, inbox slot)` picks the group's name by the slot of its channel.
async fn traffic_setup(cluster: &RedisCluster, choose_group: impl Fn(u16, u16) -> bool) -> Traffic {
    let config = redis_cluster_config(cluster, WHOAMI);
    let mut gws = Vec::new();
    let mut tags = Vec::new();
    for _ in 0..3 {
        let gw = Gateway::start(&config).await;
        tags.push(gw.wait_backplane_ready().await);
        gws.push(gw);
    }
    let inbox = format!("sb:{{n.{}}}:inbox", tags[1]);
    assert_eq!(
        slot_of(&inbox),
        cluster.keyslot(&inbox),
        "slots computed as Redis does"
    );
    let group = (0..)
        .map(|i| format!("g{i}"))
        .find(|g| choose_group(slot_of(&format!("sb:{{g.{g}}}:bcast")), slot_of(&inbox)))
        .unwrap();
    let target = gws[1].connect_with_id().await;
    let member = gws[2].connect_with_id().await;
    for id in [&target.1, &member.1] {
        let (status, _) = gws[0].join(&group, id).await;
        assert_eq!(status, 204);
    }
    Traffic {
        gws,
        target,
        member,
        group,
        inbox,
    }
}

/// From node 0: numbered POSTs to the target every 20 ms and numbered group broadcasts every
/// 50 ms, for `length`; `fault` runs `fault_after` in. Returns what was sent.
async fn run_traffic(
    t: &Traffic,
    length: Duration,
    fault_after: Duration,
    fault: impl std::future::Future<Output = ()>,
) -> Sent {
    let sent = Arc::new(Mutex::new(Sent::default()));
    let started = Instant::now();
    let posts = async {
        let mut n = 0;
        while started.elapsed() < length {
            let (status, _) = t.gws[0].post(&t.target.1, format!("p{n}")).await;
            sent.lock().await.posts.push((n, status));
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let broadcasts = async {
        let mut n = 0;
        while started.elapsed() < length {
            let (status, _) = t.gws[0].to_group(&t.group, &format!("b{n}")).await;
            sent.lock().await.broadcasts.push((n, status));
            n += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let faulting = async {
        tokio::time::sleep(fault_after).await;
        fault.await;
    };
    tokio::join!(posts, broadcasts, faulting);
    Arc::try_unwrap(sent).ok().unwrap().into_inner()
}

/// Everything `ws` receives until it has been silent for a second: the numbers of each kind
/// (`p…` and `b…`), in arrival order.
async fn drain(ws: &mut Client) -> (Vec<u32>, Vec<u32>) {
    let (mut posts, mut broadcasts) = (Vec::new(), Vec::new());
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(1), futures_util::StreamExt::next(ws)).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let (kind, n) = text.split_at(1);
            let n: u32 = n
                .parse()
                .unwrap_or_else(|_| panic!("unexpected frame {text}"));
            match kind {
                "p" => posts.push(n),
                "b" => broadcasts.push(n),
                _ => panic!("unexpected frame {text}"),
            }
        }
    }
    (posts, broadcasts)
}

/// The fault tests' common verdict: POSTs answered 200 arrived exactly once; nothing arrived
/// twice or out of order; no live connection was declared gone (410); and the traffic's last
/// `recovered_for` was all answered 200 and delivered (it recovered by itself).
fn check_delivery(sent: &Sent, target: (&[u32], &[u32]), member_broadcasts: &[u32], tail: usize) {
    let (posts, broadcasts) = target;
    for (what, received) in [
        ("posts at the target", posts),
        ("broadcasts at the target", broadcasts),
        ("broadcasts at the other member", member_broadcasts),
    ] {
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "{what}: a message twice or out of order: {received:?}"
        );
    }
    let statuses: HashMap<u16, usize> =
        sent.posts
            .iter()
            .chain(&sent.broadcasts)
            .fold(HashMap::new(), |mut m, (_, s)| {
                *m.entry(*s).or_default() += 1;
                m
            });
    assert!(
        statuses.keys().all(|s| matches!(s, 200 | 202 | 503)),
        "only 200/202 or 503 while Redis recovers: {statuses:?}"
    );
    for (n, status) in &sent.posts {
        if *status == 200 {
            assert!(
                posts.contains(n),
                "POST p{n} answered 200 but never arrived"
            );
        }
    }
    // A broadcast is accepted only while every listed node is subscribed, so an accepted
    // one reached both members; a refused one reached nobody (safe to retry).
    for (n, status) in &sent.broadcasts {
        let at = (broadcasts.contains(n), member_broadcasts.contains(n));
        match status {
            202 => assert_eq!(
                at,
                (true, true),
                "broadcast b{n} answered 202: (target, member)"
            ),
            _ => assert_eq!(at, (false, false), "broadcast b{n} answered {status}"),
        }
    }
    // It recovered by itself: the last `tail` of each kind were accepted and delivered.
    let last_posts = &sent.posts[sent.posts.len() - tail..];
    let last_broadcasts = &sent.broadcasts[sent.broadcasts.len() - tail / 2..];
    for (n, status) in last_posts {
        assert_eq!(*status, 200, "POST p{n} after recovery: {statuses:?}");
    }
    for (n, status) in last_broadcasts {
        assert_eq!(*status, 202, "broadcast b{n} after recovery");
        assert!(
            broadcasts.contains(n),
            "broadcast b{n} after recovery missed the target"
        );
        assert!(
            member_broadcasts.contains(n),
            "broadcast b{n} after recovery missed the other member"
        );
    }
    eprintln!(
        "statuses {statuses:?}; posts sent {} delivered {}; broadcasts sent {} delivered {}/{}",
        sent.posts.len(),
        posts.len(),
        sent.broadcasts.len(),
        broadcasts.len(),
        member_broadcasts.len()
    );
}

/// Kill the master that owns node 1's inbox and the group's channel while traffic flows:
/// its replica takes over after the cluster's node timeout, and the gateways follow.
#[tokio::test]
async fn a_master_killed_mid_traffic_fails_over() {
    let mut cluster = RedisCluster::start().await;
    let same_master = |group: u16, inbox: u16| cluster.owner_of(group) == cluster.owner_of(inbox);
    let mut t = traffic_setup(&cluster, same_master).await;
    let victim = cluster.owner_of(cluster.keyslot(&t.inbox));
    // Traffic for the failover time plus ten seconds; the last two seconds must be clean.
    let length = Duration::from_millis(NODE_TIMEOUT_MS) + Duration::from_secs(10);
    let sent = run_traffic(&t, length, Duration::from_secs(1), async {
        cluster.kill(victim);
    })
    .await;
    cluster.wait_ok().await;
    assert_ne!(
        cluster.owner_of(cluster.keyslot(&t.inbox)),
        victim,
        "a replica took over"
    );
    let target = drain(&mut t.target.0).await;
    let member = drain(&mut t.member.0).await;
    check_delivery(&sent, (&target.0, &target.1), &member.1, 100);
}

/// Move the slot of node 1's inbox (by hand, with the steps `redis-cli --cluster reshard`
/// takes) and the slot of the group's channel (with `redis-cli --cluster reshard` itself)
/// to other masters while traffic flows: Redis drops the shard subscriptions there
/// (`sunsubscribe`), and the gateways subscribe again on the new owners.
#[tokio::test]
async fn a_slot_moved_mid_traffic_is_followed() {
    let cluster = RedisCluster::start().await;
    let ranges = cluster.ranges();
    // The group's slot is among the first 20 of its master's range, and that master is not
    // the inbox's: `reshard … --cluster-slots 20` moves a master's lowest slots.
    let reshardable = |group: u16, inbox: u16| {
        ranges.iter().any(|(first, last, port)| {
            (*first..first + 20).contains(&group)
                && !(*first..=*last).contains(&inbox)
                && *port != 0
        })
    };
    let mut t = traffic_setup(&cluster, reshardable).await;
    let inbox_slot = cluster.keyslot(&t.inbox);
    let group_channel = format!("sb:{{g.{}}}:bcast", t.group);
    let group_slot = cluster.keyslot(&group_channel);
    let (inbox_from, group_from) = (cluster.owner_of(inbox_slot), cluster.owner_of(group_slot));
    let masters: Vec<u16> = cluster.masters().into_iter().map(|(p, _)| p).collect();
    // The inbox's slot goes to the third master (not the one the reshard takes slots
    // from: a lone migrated slot would be among its lowest), the group's to the inbox's.
    let inbox_to = *masters
        .iter()
        .find(|&&p| p != inbox_from && p != group_from)
        .unwrap();
    let group_to = inbox_from;
    let sent = run_traffic(&t, Duration::from_secs(8), Duration::from_secs(2), async {
        cluster.migrate_slot(inbox_slot, inbox_to).await;
        cluster.reshard(group_from, group_to, 20).await;
    })
    .await;
    assert_eq!(cluster.owner_of(inbox_slot), inbox_to);
    assert_eq!(
        cluster.owner_of(group_slot),
        group_to,
        "reshard moved the group's slot"
    );
    // The two members' nodes are subscribed on the new owners.
    assert_eq!(cluster.shard_subscribers(group_to, &group_channel), 2);
    assert_eq!(cluster.shard_subscribers(inbox_to, &t.inbox), 1);
    let target = drain(&mut t.target.0).await;
    let member = drain(&mut t.member.0).await;
    check_delivery(&sent, (&target.0, &target.1), &member.1, 100);
}

#[tokio::test]
async fn a_resumable_session_moves_between_live_nodes_on_a_redis_cluster() {
    // The cuts travel on sharded channels, the session's keys on their own slot.
    let cluster = RedisCluster::start().await;
    let backend = Backend::start().await;
    let gws = cluster_nodes(&cluster, 3, &resume_events_config(&backend, 10)).await;
    assert_a_session_moves_between_live_nodes(&gws, &backend).await;
}
