//! The link's background service: connect to the store, beat every `cluster.heartbeat` (this
//! node alive for three beats, the others counted), probe a store that went away every
//! [`PROBE_EVERY`] and reconnect by itself, then leave the node set at shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use once_cell::sync::Lazy;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::AsyncConnectionConfig;

use super::{bans, slots, Cluster};
use crate::runtime::Runtime;

/// How often a store that went away is tried again: the node is back in cluster mode within
/// this much (and one round trip) of the store's return.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Timeouts in a row after which the connection is dropped and made again (a store that was
/// replaced leaves a connection that never answers).
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// Refresh this node's lease in the node set, drop the nodes whose lease ended, and name the
/// nodes alive. KEYS[1]: the node set (a sorted set scored by lease end, in ms on the store's
/// clock). ARGV: this node, the lease in ms.
static HEARTBEAT: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZRANGE', KEYS[1], 0, 255)
",
    )
});

/// The background service that keeps the link.
pub struct Link {
    pub runtime: Arc<Runtime>,
    pub cluster: Arc<Cluster>,
}

impl Cluster {
    /// How long a node's heartbeat counts: three beats.
    pub fn lease(&self) -> Duration {
        self.settings.heartbeat * 3
    }

    /// How long a background call (heartbeat, ban writes) waits for the store.
    pub(crate) fn background_timeout(&self) -> Duration {
        (self.settings.heartbeat / 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connection not made within 2 s".to_string()),
        }
    }

    /// One beat: connect when needed, then refresh the lease. Returns whether the store
    /// answered; `timeouts` counts the beats in a row that got no answer.
    async fn beat(&self, timeouts: &mut u32) -> bool {
        let mut conn = match self.conn.load_full() {
            Some(conn) => (*conn).clone(),
            None => match self.connect().await {
                Ok(conn) => {
                    self.conn.store(Some(Arc::new(conn.clone())));
                    conn
                }
                Err(why) => {
                    self.went_away("heartbeat", why);
                    return false;
                }
            },
        };
        let mut call = HEARTBEAT.prepare_invoke();
        call.key(&self.keys.nodes)
            .arg(&self.settings.node_id)
            .arg(self.lease().as_millis() as u64);
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            self.background_timeout(),
            call.invoke_async::<Vec<String>>(&mut conn),
        )
        .await;
        self.metrics
            .round_trip
            .with_label_values(&["heartbeat"])
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(nodes)) => {
                *timeouts = 0;
                self.set_nodes(nodes);
                self.came_back();
                true
            }
            Ok(Err(e)) => {
                // A broken connection is made again at the next beat.
                self.conn.store(None);
                self.went_away("heartbeat", e.to_string());
                false
            }
            Err(_) => {
                *timeouts += 1;
                if *timeouts >= TIMEOUTS_BEFORE_RECONNECT {
                    *timeouts = 0;
                    self.conn.store(None);
                }
                self.went_away(
                    "heartbeat",
                    format!(
                        "no answer to the heartbeat within {} ms",
                        self.background_timeout().as_millis()
                    ),
                );
                false
            }
        }
    }

    /// Leave the node set (a clean shutdown frees this node's share at once).
    async fn leave(&self) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&self.keys.nodes).arg(&self.settings.node_id);
        let _ = tokio::time::timeout(self.background_timeout(), cmd.query_async::<i64>(&mut conn))
            .await;
    }
}

#[async_trait]
impl BackgroundService for Link {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let cluster = self.cluster.clone();
        tokio::spawn(bans::follow(
            self.runtime.clone(),
            cluster.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(bans::write(cluster.clone(), shutdown.clone()));
        tokio::spawn(slots::run(
            self.runtime.clone(),
            cluster.clone(),
            shutdown.clone(),
        ));
        let mut timeouts = 0;
        loop {
            let was_up = cluster.is_up();
            let up = cluster.beat(&mut timeouts).await;
            if up && !was_up {
                // Back: bans made elsewhere meanwhile are loaded again.
                cluster.bans.reload.notify_one();
            }
            let wait = if up {
                cluster.settings.heartbeat
            } else {
                PROBE_EVERY
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cluster.probe.notified(), if up => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        cluster.leave().await;
                        return;
                    }
                }
            }
        }
    }
}
