//! Shared bans. A ban made on this node is written to the store with its end (on the store's
//! clock) and published; every node applies what the others publish, and loads every ban in
//! force when it subscribes and whenever the link comes back, so that checking a request stays
//! a look-up in this node's memory. `DELETE /bans/{ip}` on any node lifts the ban everywhere.
//!
//! The store keeps `PREFIX:bans` (a sorted set: client key in hex, scored by the ban's end in
//! ms) and `PREFIX:bans:clients` (a hash: client key, the address for people); changes go on
//! the channel `PREFIX:bans:changes` as `ban NODE KEY TTL_MS CLIENT` or `lift NODE KEY`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use once_cell::sync::Lazy;
use pingora::server::ShutdownWatch;
use tokio::sync::{mpsc, Notify};

use super::link::PROBE_EVERY;
use super::Cluster;
use crate::runtime::Runtime;

/// Ban changes waiting to be written at most; beyond, a change holds on this node only (and is
/// counted in `rempart_cluster_bans_unshared_total`).
const OUTBOX: usize = 4096;

/// Bans loaded from the store at most when the node's own configuration sets no bound.
const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// A change of the ban list, to share.
#[derive(Debug)]
pub(crate) enum Change {
    Ban {
        key: u64,
        client: String,
        ttl: Duration,
    },
    Lift {
        key: u64,
    },
}

/// The bans this node still has to write, and the signal to load them all again.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Change>,
    rx: Mutex<Option<mpsc::Receiver<Change>>>,
    pub(crate) reload: Notify,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(OUTBOX);
        Outbox {
            tx,
            rx: Mutex::new(Some(rx)),
            reload: Notify::new(),
        }
    }
}

static BAN: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = now + tonumber(ARGV[2])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or 0)
if old < ends then
  redis.call('ZADD', KEYS[1], string.format('%.0f', ends), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('PUBLISH', KEYS[3], 'ban ' .. ARGV[4] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return 1
",
    )
});

static LIFT: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], 'lift ' .. ARGV[2] .. ' ' .. ARGV[1])
return 1
",
    )
});

/// Every ban in force, the longest first: key, ms left, client, flat.
static LOAD: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local items = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. string.format('%.0f', now), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i = 1, #items, 2 do
  out[#out + 1] = items[i]
  out[#out + 1] = string.format('%.0f', tonumber(items[i + 1]) - now)
  out[#out + 1] = redis.call('HGET', KEYS[2], items[i]) or ''
end
return out
",
    )
});

impl Cluster {
    /// A ban this node made: shared with the others (in the background).
    pub fn ban_made(&self, key: u64, client: String, ttl: Duration) {
        if self
            .bans
            .tx
            .try_send(Change::Ban { key, client, ttl })
            .is_err()
        {
            self.metrics.bans_unshared.inc();
        }
    }

    /// A ban lifted on this node (`DELETE /bans/{ip}`): lifted everywhere.
    pub fn ban_lifted(&self, key: u64) {
        if self.bans.tx.try_send(Change::Lift { key }).is_err() {
            self.metrics.bans_unshared.inc();
        }
    }

    async fn send_change(&self, change: &Change) -> bool {
        let Some(mut conn) = self.connection() else {
            return false;
        };
        let keys = [
            &self.keys.bans,
            &self.keys.ban_clients,
            &self.keys.ban_channel,
        ];
        let mut call = match change {
            Change::Ban { key, client, ttl } => {
                let mut call = BAN.prepare_invoke();
                call.arg(format!("{key:016x}"))
                    .arg(ttl.as_millis().max(1) as u64)
                    .arg(client)
                    .arg(&self.settings.node_id);
                call
            }
            Change::Lift { key } => {
                let mut call = LIFT.prepare_invoke();
                call.arg(format!("{key:016x}")).arg(&self.settings.node_id);
                call
            }
        };
        for key in keys {
            call.key(key);
        }
        self.call(
            "ban",
            self.background_timeout(),
            call.invoke_async::<i64>(&mut conn),
        )
        .await
        .is_some()
    }

    /// Every ban in force in the store: (key, time left, client).
    async fn load_bans(&self, max: usize) -> Option<Vec<(u64, Duration, String)>> {
        let mut conn = self.connection()?;
        let mut call = LOAD.prepare_invoke();
        call.key(&self.keys.bans)
            .key(&self.keys.ban_clients)
            .arg(max as u64);
        let flat: Vec<String> = self
            .call(
                "ban",
                self.background_timeout(),
                call.invoke_async(&mut conn),
            )
            .await?;
        Some(
            flat.chunks_exact(3)
                .filter_map(|item| {
                    let key = u64::from_str_radix(&item[0], 16).ok()?;
                    let left = item[1].parse::<u64>().ok()?;
                    Some((key, Duration::from_millis(left), clip(&item[2])))
                })
                .collect(),
        )
    }
}

/// A change published by a node, as read from the channel: None when it is this node's own,
/// or not understood.
fn parse(message: &str, own: &str) -> Option<Change> {
    let mut words = message.splitn(5, ' ');
    let verb = words.next()?;
    let node = words.next()?;
    if node == own {
        return None;
    }
    let key = u64::from_str_radix(words.next()?, 16).ok()?;
    match verb {
        "ban" => {
            let ttl = Duration::from_millis(words.next()?.parse().ok()?);
            let client = clip(words.next().unwrap_or(""));
            Some(Change::Ban { key, client, ttl })
        }
        "lift" => Some(Change::Lift { key }),
        _ => None,
    }
}

/// The longest address text kept for a ban read from the store (an IPv6 prefix is 43 bytes).
const MAX_CLIENT_TEXT: usize = 64;

/// A ban's address text as kept in memory: at most [`MAX_CLIENT_TEXT`] bytes.
fn clip(text: &str) -> String {
    crate::telemetry::clip(text, MAX_CLIENT_TEXT).into_owned()
}

/// The bound of the ban list in this node's configuration.
fn max_entries(runtime: &Runtime) -> usize {
    runtime
        .load()
        .config
        .shield
        .ban
        .as_ref()
        .map_or(DEFAULT_MAX_ENTRIES, |b| b.max_entries)
}

fn apply(runtime: &Runtime, change: Change) {
    let bans = &runtime.shield_state.bans;
    match change {
        Change::Ban { key, client, ttl } => {
            if !ttl.is_zero() {
                bans.ban(key, client, ttl, max_entries(runtime));
            }
        }
        Change::Lift { key } => {
            bans.lift(key);
        }
    }
}

async fn load_all(runtime: &Runtime, cluster: &Cluster) {
    let max = max_entries(runtime);
    if let Some(all) = cluster.load_bans(max).await {
        let count = all.len();
        for (key, ttl, client) in all {
            if runtime.shield_state.bans.banned(key).is_none() {
                apply(runtime, Change::Ban { key, client, ttl });
            }
        }
        tracing::info!(bans = count, "cluster: bans in force loaded from the store");
    }
}

/// Follow the other nodes' ban changes: subscribe, load every ban in force, then apply each
/// change as it comes; subscribe again whenever the subscription breaks.
pub(crate) async fn follow(
    runtime: Arc<Runtime>,
    cluster: Arc<Cluster>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let subscribed = async {
            let mut pubsub = cluster.client.get_async_pubsub().await.ok()?;
            pubsub.subscribe(&cluster.keys.ban_channel).await.ok()?;
            Some(pubsub)
        };
        if let Ok(Some(mut pubsub)) = tokio::time::timeout(Duration::from_secs(2), subscribed).await
        {
            load_all(&runtime, &cluster).await;
            let own = cluster.settings.node_id.clone();
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        let text = String::from_utf8_lossy(message.get_payload_bytes());
                        if let Some(change) = parse(&text, &own) {
                            apply(&runtime, change);
                        }
                    }
                    _ = cluster.bans.reload.notified() => load_all(&runtime, &cluster).await,
                    _ = shutdown.changed() => {
                        if *shutdown.borrow() {
                            return;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Write this node's ban changes, in order; a change waits while the store is away, and is
/// given up once the ban it makes would have ended anyway.
pub(crate) async fn write(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let rx = cluster
        .bans
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut rx) = rx else {
        return;
    };
    loop {
        let change = tokio::select! {
            change = rx.recv() => match change {
                Some(change) => change,
                None => return,
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        let queued = tokio::time::Instant::now();
        loop {
            if cluster.send_change(&change).await {
                break;
            }
            let outlived = match &change {
                Change::Ban { ttl, .. } => queued.elapsed() >= *ttl,
                Change::Lift { .. } => queued.elapsed() >= Duration::from_secs(3600),
            };
            if outlived || *shutdown.borrow() {
                break;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_of_other_nodes_are_read_and_own_ones_skipped() {
        match parse("ban b 00000000c0a80001 60000 192.168.0.1", "a") {
            Some(Change::Ban { key, client, ttl }) => {
                assert_eq!(key, 0xc0a8_0001);
                assert_eq!(client, "192.168.0.1");
                assert_eq!(ttl, Duration::from_secs(60));
            }
            other => panic!("not a ban: {other:?}"),
        }
        assert!(matches!(
            parse("lift b 00000000c0a80001", "a"),
            Some(Change::Lift { key: 0xc0a8_0001 })
        ));
        assert!(parse("ban a 00000000c0a80001 60000 x", "a").is_none());
        assert!(parse("ban b zz 60000 x", "a").is_none());
        assert!(parse("nonsense", "a").is_none());
        assert!(parse("ban b 1 notanumber x", "a").is_none());
        // An address text longer than any address is clipped.
        let long = format!("ban b 1 1000 {}", "é".repeat(100));
        match parse(&long, "a") {
            Some(Change::Ban { client, .. }) => assert!(client.len() <= MAX_CLIENT_TEXT),
            other => panic!("not a ban: {other:?}"),
        }
    }
}
