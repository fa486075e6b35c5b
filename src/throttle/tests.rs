//! Unit tests of the throttles, on paused time.

use std::collections::BTreeMap;

use super::*;

fn rate(rate: f64, burst: u32) -> Rate {
    Rate { rate, burst }
}

fn limits(settings: LimitsSettings) -> Arc<Limits> {
    Arc::new(Limits::new(&settings))
}

fn api_key(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", key.parse().unwrap());
    headers
}

#[tokio::test(start_paused = true)]
async fn a_rate_makes_a_bucket_of_its_capacity() {
    // (rate, tokens granted at once, then after 400 ms).
    let cases = [
        (rate(10.0, 5), 5, 4),
        // Burst 0 means the rate rounded up…
        (rate(2.5, 0), 3, 1),
        // …and at least one.
        (rate(0.1, 0), 1, 0),
    ];
    for (r, at_once, later) in cases {
        let mut bucket = bucket_for(r, Instant::now());
        assert!(made_for(&bucket, r));
        let mut granted = |now| (0..10).filter(|_| bucket.try_take(now)).count();
        assert_eq!(granted(Instant::now()), at_once, "{r:?}");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(granted(Instant::now()), later, "{r:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn message_limits_table() {
    use Verdict::{Abusive as A, Pass as P, Throttled as T};
    struct Case {
        name: &'static str,
        settings: LimitsSettings,
        /// (connection index, route, expected verdict), all at the same instant.
        messages: Vec<(usize, Option<&'static str>, Verdict)>,
    }
    let base = LimitsSettings {
        close_after_throttled: 0,
        ..LimitsSettings::default()
    };
    let cases = vec![
        Case {
            name: "everything off",
            settings: base.clone(),
            messages: (0..50).map(|_| (0, Some("a"), P)).collect(),
        },
        Case {
            name: "per connection",
            settings: LimitsSettings {
                connection_messages: rate(1.0, 2),
                ..base.clone()
            },
            messages: vec![
                (0, None, P),
                (0, Some("a"), P),
                (0, Some("a"), T),
                (1, Some("a"), P),
                (1, None, P),
                (1, None, T),
            ],
        },
        Case {
            name: "gateway-wide",
            settings: LimitsSettings {
                messages: rate(1.0, 3),
                ..base.clone()
            },
            messages: vec![
                (0, None, P),
                (1, None, P),
                (2, Some("a"), P),
                (0, None, T),
                (3, None, T),
            ],
        },
        Case {
            name: "per route, named and default",
            settings: LimitsSettings {
                route_messages: rate(1.0, 1),
                routes: BTreeMap::from([("b".to_owned(), rate(1.0, 2))]),
                ..base.clone()
            },
            messages: vec![
                (0, Some("a"), P),
                (1, Some("a"), T),
                (0, Some("b"), P),
                (1, Some("b"), P),
                (2, Some("b"), T),
                (0, Some("c"), P),
                (0, None, P),
            ],
        },
        Case {
            name: "a named route may be unlimited",
            settings: LimitsSettings {
                route_messages: rate(1.0, 1),
                routes: BTreeMap::from([("free".to_owned(), rate(0.0, 0))]),
                ..base.clone()
            },
            messages: (0..10).map(|i| (i % 3, Some("free"), P)).collect(),
        },
        Case {
            name: "per API key (connections 0 and 1 share key k1)",
            settings: LimitsSettings {
                api_key_messages: rate(1.0, 2),
                ..base.clone()
            },
            messages: vec![
                (0, None, P),
                (1, None, P),
                (0, None, T),
                (2, None, P),
                (3, None, P),
                (3, None, P),
            ],
        },
        Case {
            name: "sustained abuse closes",
            settings: LimitsSettings {
                connection_messages: rate(1.0, 1),
                close_after_throttled: 3,
                ..base.clone()
            },
            messages: vec![
                (0, None, P),
                (0, None, T),
                (0, None, T),
                (0, None, A),
                (1, None, P),
            ],
        },
    ];
    // Connections 0 and 1 send x-api-key k1, 2 sends k2, 3 sends none.
    let keys = [Some("k1"), Some("k1"), Some("k2"), None];
    for case in cases {
        let limits = limits(case.settings);
        let mut conns: Vec<ConnLimits> = keys
            .iter()
            .map(|k| limits.admit(&k.map(api_key).unwrap_or_default()).unwrap())
            .collect();
        for (i, (conn, route, want)) in case.messages.iter().enumerate() {
            let got = conns[*conn].check_message(*route);
            assert_eq!(got, *want, "{}: message {i}", case.name);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn buckets_refill_with_time() {
    let limits = limits(LimitsSettings {
        connection_messages: rate(2.0, 2),
        ..LimitsSettings::default()
    });
    let mut conn = limits.admit(&HeaderMap::new()).unwrap();
    assert_eq!(conn.check_message(None), Verdict::Pass);
    assert_eq!(conn.check_message(None), Verdict::Pass);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(conn.check_message(None), Verdict::Pass);
}

#[tokio::test(start_paused = true)]
async fn abuse_streak_resets_after_the_window_or_a_pass() {
    let limits = limits(LimitsSettings {
        connection_messages: rate(1.0, 1),
        close_after_throttled: 3,
        throttled_window_ms: 1000,
        ..LimitsSettings::default()
    });
    let mut conn = limits.admit(&HeaderMap::new()).unwrap();
    assert_eq!(conn.check_message(None), Verdict::Pass);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    // The window passes (and a token refills: the streak ends with a pass).
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(conn.check_message(None), Verdict::Pass);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    assert_eq!(conn.check_message(None), Verdict::Abusive);

    // A streak older than the window starts again even without a pass.
    let limits = self::limits(LimitsSettings {
        connection_messages: rate(0.1, 1),
        close_after_throttled: 3,
        throttled_window_ms: 1000,
        ..LimitsSettings::default()
    });
    let mut conn = limits.admit(&HeaderMap::new()).unwrap();
    assert_eq!(conn.check_message(None), Verdict::Pass);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    assert_eq!(conn.check_message(None), Verdict::Throttled);
    assert_eq!(conn.check_message(None), Verdict::Abusive);
}

#[tokio::test(start_paused = true)]
async fn connection_admission() {
    let limits = limits(LimitsSettings {
        max_connections: 2,
        new_connections: rate(2.0, 3),
        ..LimitsSettings::default()
    });
    let none = HeaderMap::new();
    let a = limits.admit(&none).unwrap();
    let b = limits.admit(&none).unwrap();
    assert_eq!(limits.admit(&none).unwrap_err(), Refused::MaxConnections);
    assert_eq!(limits.free_connection_slots(), Some(0));
    drop(a);
    assert_eq!(limits.free_connection_slots(), Some(1));
    // The permit is checked first, so the attempt refused at the cap spent no token.
    let c = limits.admit(&none).unwrap();
    drop((b, c));
    assert_eq!(limits.admit(&none).unwrap_err(), Refused::NewConnections);
    assert_eq!(limits.free_connection_slots(), Some(2));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(limits.admit(&none).is_ok());
    assert_eq!(Refused::NewConnections.setting(), "limits.new_connections");
}

#[tokio::test(start_paused = true)]
async fn api_key_comes_from_the_header() {
    let limits = limits(LimitsSettings::default());
    let long = "k".repeat(300);
    let conn = limits.admit(&api_key(&long)).unwrap();
    assert_eq!(conn.api_key.as_deref().map(str::len), Some(MAX_API_KEY_LEN));
    let conn = limits.admit(&api_key("")).unwrap();
    assert_eq!(conn.api_key, None);
}

#[tokio::test(start_paused = true)]
async fn management_callers_have_their_own_buckets() {
    let limits = limits(LimitsSettings {
        management_requests: rate(1.0, 2),
        ..LimitsSettings::default()
    });
    let a = limits.token_caller("token-a-0123456789");
    let b = limits.token_caller("token-b-0123456789");
    assert_ne!(a, b);
    assert_eq!(a, limits.token_caller("token-a-0123456789"));
    let ip = Caller::Peer("10.0.0.1".parse().unwrap());
    for caller in [&a, &b, &ip] {
        let granted = (0..5).filter(|_| limits.management_call(caller)).count();
        assert_eq!(granted, 2, "{caller:?}");
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(limits.management_call(&a));
    assert!(!limits.management_call(&a));
}

#[tokio::test(start_paused = true)]
async fn call_gate_parks_at_the_node_cap() {
    let limits = limits(LimitsSettings {
        max_inflight_per_node: 2,
        ..LimitsSettings::default()
    });
    let (release_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut set = JoinSet::new();
    let mut gate = limits.call_gate::<u32>();
    for n in 0..2 {
        let mut release = release_tx.subscribe();
        gate.start(&mut set, async move {
            let _ = release.recv().await;
            n
        });
        assert!(!gate.is_parked());
    }
    assert_eq!(limits.free_call_slots(), Some(0));
    gate.start(&mut set, async { 7 });
    assert!(gate.is_parked());
    // Nothing frees a permit: `ready` stays pending (and dropping it keeps the call parked).
    assert!(
        tokio::time::timeout(Duration::from_secs(1), gate.ready())
            .await
            .is_err()
    );
    assert!(gate.is_parked());
    release_tx.send(()).unwrap();
    let mut done: Vec<u32> = Vec::new();
    done.push(set.join_next().await.unwrap().unwrap());
    let call = tokio::time::timeout(Duration::from_secs(1), gate.ready())
        .await
        .expect("a permit was freed");
    assert!(!gate.is_parked());
    set.spawn(call);
    while let Some(n) = set.join_next().await {
        done.push(n.unwrap());
    }
    done.sort_unstable();
    assert_eq!(done, [0, 1, 7]);
    assert_eq!(limits.free_call_slots(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn call_gate_without_a_cap_never_parks() {
    let limits = limits(LimitsSettings::default());
    let mut set = JoinSet::new();
    let mut gate = limits.call_gate::<usize>();
    for n in 0..100 {
        gate.start(&mut set, async move { n });
    }
    assert!(!gate.is_parked());
    assert_eq!(limits.free_call_slots(), None);
    let mut count = 0;
    while set.join_next().await.is_some() {
        count += 1;
    }
    assert_eq!(count, 100);
}
