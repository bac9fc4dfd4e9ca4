//! One login queue across nodes: each node holds some of a queue's slots as a lease in the
//! store, so that the backend never sees more than `concurrency` logins in flight from all nodes
//! together, and the slots are shared among the nodes with people waiting in proportion to the
//! schools (tenants) waiting on each, as the deficit round robin of one node shares them among
//! its schools.
//!
//! The store keeps per queue `PREFIX:queue:NAME:held` (node, slots held) and
//! `PREFIX:queue:NAME:want` (node, `weight:desired`). A node's slots count as long as its
//! heartbeat lease does (three beats): a node that dies frees its slots within one lease. Each
//! node asks again whenever its line is blocked for want of a slot, whenever it holds more than
//! it uses, and every [`TICK`] while people wait (the shares move as lines grow and shrink). A
//! freed slot goes to the next person in this node's line at once, without a round trip, while
//! this node is within its share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use once_cell::sync::Lazy;
use pingora::server::ShutdownWatch;

use super::Cluster;
use crate::queue::admission::SharedDemand;
use crate::runtime::Runtime;

/// How often a node with people waiting asks for its share again.
pub const TICK: Duration = Duration::from_millis(50);

/// KEYS: the node set, the queue's held and want hashes. ARGV: node, in flight, desired (in
/// flight plus waiting, within the node's own limit), weight (tenants waiting), capacity.
/// Returns {allowed, held}: the node admits while its in-flight count is under `allowed`;
/// `held` is what the store counts for it (never less than what it has in flight).
static SLOTS: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local in_flight = tonumber(ARGV[2])
local desired = tonumber(ARGV[3])
local weight = tonumber(ARGV[4])
local capacity = tonumber(ARGV[5])
local others = 0
local short = false
local weights = weight
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local node = held[i]
  if node ~= me then
    local lease = tonumber(redis.call('ZSCORE', KEYS[1], node) or 0)
    if lease < now then
      redis.call('HDEL', KEYS[2], node)
      redis.call('HDEL', KEYS[3], node)
    else
      local h = tonumber(held[i + 1]) or 0
      others = others + h
      local want = redis.call('HGET', KEYS[3], node)
      local sep = want and string.find(want, ':', 1, true)
      if sep then
        local w = tonumber(string.sub(want, 1, sep - 1)) or 0
        local d = tonumber(string.sub(want, sep + 1)) or 0
        if d > h and w > 0 then
          short = true
          weights = weights + w
        end
      end
    end
  end
end
local allowed = math.min(desired, capacity - others)
if short and weight > 0 then
  local share = math.max(1, math.floor(capacity * weight / weights))
  allowed = math.min(allowed, share)
elseif short then
  allowed = math.min(allowed, in_flight)
end
if allowed < 0 then allowed = 0 end
local counted = math.max(allowed, in_flight)
redis.call('HSET', KEYS[2], me, counted)
redis.call('HSET', KEYS[3], me, weight .. ':' .. desired)
return {allowed, counted}
",
    )
});

/// Claim a ticket's place for this node. KEYS[1]: the ticket's key. ARGV: node, ms the claim
/// lasts (the ticket's life). 1: the place is this node's (now or already), 0: another node
/// holds it (in line there, or admitted there: spent).
static CLAIM: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then return 1 end
return 0
",
    )
});

/// Give a ticket's place back (its bearer left the line unadmitted). KEYS[1]: the ticket's key.
/// ARGV: node.
static UNCLAIM: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// What the store last said of each queue on this node, for `/status`.
#[derive(Default)]
pub struct Slots {
    last: Mutex<HashMap<String, (usize, usize)>>,
    pub(crate) wake: tokio::sync::Notify,
}

impl Slots {
    pub fn status(&self) -> serde_json::Value {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = last.keys().collect();
        names.sort();
        serde_json::Value::Object(
            names
                .into_iter()
                .map(|name| {
                    let (allowed, held) = last[name];
                    (
                        name.clone(),
                        serde_json::json!({ "allowed": allowed, "held": held }),
                    )
                })
                .collect(),
        )
    }
}

impl Cluster {
    /// Ask the store for this node's slots of one queue: Some(allowed), None when it is away.
    pub(crate) async fn ask_slots(&self, queue: &str, demand: &SharedDemand) -> Option<usize> {
        let mut conn = self.connection()?;
        let mut call = SLOTS.prepare_invoke();
        call.key(&self.keys.nodes)
            .key(format!("{}{queue}:held", self.keys.queue))
            .key(format!("{}{queue}:want", self.keys.queue))
            .arg(&self.settings.node_id)
            .arg(demand.in_flight as u64)
            .arg(demand.desired as u64)
            .arg(demand.weight as u64)
            .arg(demand.capacity as u64);
        let answer: Vec<u64> = self
            .call(
                "slots",
                self.background_timeout(),
                call.invoke_async(&mut conn),
            )
            .await?;
        let (allowed, held) = match answer.as_slice() {
            [allowed, held] => (*allowed as usize, *held as usize),
            _ => {
                self.went_away("slots", "the slots script answered something else".into());
                return None;
            }
        };
        self.slots
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_string(), (allowed, held));
        Some(allowed)
    }

    /// A waiting-room ticket brought to this node: may its bearer take the early place it
    /// carries? Some(false): another node has that place (its bearer in line there, or admitted
    /// there: the ticket is spent), so the bearer is a newcomer here. None: the store is away
    /// (this node's own rules decide).
    pub async fn claim_ticket(&self, queue: &str, seq: u64, life: Duration) -> Option<bool> {
        let mut conn = self.connection()?;
        let mut call = CLAIM.prepare_invoke();
        call.key(format!("{}{queue}:ticket:{seq}", self.keys.queue))
            .arg(&self.settings.node_id)
            .arg(life.as_millis().max(1) as u64);
        let held: i64 = self
            .call(
                "ticket",
                self.settings.timeout,
                call.invoke_async(&mut conn),
            )
            .await?;
        Some(held == 1)
    }

    /// A ticket's bearer left this node's line unadmitted (its hold ran out, or it went away):
    /// the place may be taken on any node again. In the background.
    pub fn unclaim_ticket(self: &Arc<Self>, queue: &str, seq: u64) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let key = format!("{}{queue}:ticket:{seq}", self.keys.queue);
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut call = UNCLAIM.prepare_invoke();
            call.key(key).arg(&cluster.settings.node_id);
            let _ = cluster
                .call(
                    "ticket",
                    cluster.background_timeout(),
                    call.invoke_async::<i64>(&mut conn),
                )
                .await;
        });
    }

    /// A queue's line is blocked for want of a slot, or it holds slots it does not use: ask now.
    pub fn slots_wanted(&self) {
        self.slots.wake.notify_one();
    }
}

/// Keep every queue's slots: ask for the queues that need it, when woken or every tick.
pub(crate) async fn run(runtime: Arc<Runtime>, cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = cluster.slots.wake.notified() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
        if !cluster.is_up() {
            continue;
        }
        for core in runtime.queues.cores() {
            let demand = core.shared_demand();
            if !demand.needs_asking() {
                continue;
            }
            core.begin_asking(&demand);
            let allowed = cluster.ask_slots(&core.name, &demand).await;
            core.set_shared(allowed, &demand);
        }
    }
}
