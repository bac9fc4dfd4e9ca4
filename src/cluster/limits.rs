//! `scope: cluster` limits: GCRA in the store, on the store's clock (`TIME`, so that the nodes'
//! clocks do not matter), every cluster limit of a request in one script call, all or nothing
//! as the local limits are.
//!
//! A bucket is one key, `PREFIX:limit:NAME:KEY` (the client key in hex, computed alike on every
//! node), holding its theoretical arrival time in µs and expiring when it is full again.

use std::time::Duration;

use once_cell::sync::Lazy;

use super::Cluster;
use crate::config::Rate;

/// KEYS: one bucket per limit and key. ARGV: per key, its emission interval and tolerance (the
/// interval times the burst), in µs. Returns per key 0 when it passes, else the µs until it
/// would; nothing is charged unless every key passes.
static GCRA: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local waits = {}
local refused = false
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local over = next_tat - now - tolerance
  if over > 0 then
    waits[i] = over
    refused = true
  else
    waits[i] = 0
    tats[i] = next_tat
  end
end
if not refused then
  for i = 1, #KEYS do
    local ttl = math.ceil((tats[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', string.format('%.0f', ttl))
  end
end
return waits
",
    )
});

/// One cluster limit's charge for a request.
pub struct Charge<'a> {
    pub limit: &'a str,
    pub key: u64,
    pub rate: Rate,
    pub burst: u32,
}

/// The emission interval of a rate in µs (at least 1).
pub fn interval_micros(rate: Rate) -> u64 {
    let micros = rate.per.as_micros() / u128::from(rate.count.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX).max(1)
}

impl Cluster {
    /// Charge a request to its cluster limits in one round trip: per charge, zero when it
    /// passed, else how long until it would (and then nothing was charged). None: the store
    /// is away; the caller decides alone with its share.
    pub async fn charge(&self, charges: &[Charge<'_>]) -> Option<Vec<Duration>> {
        let mut conn = self.connection()?;
        let mut call = GCRA.prepare_invoke();
        for charge in charges {
            let interval = interval_micros(charge.rate);
            call.key(format!(
                "{}{}:{:016x}",
                self.keys.limit, charge.limit, charge.key
            ))
            .arg(interval)
            .arg(interval.saturating_mul(u64::from(charge.burst.max(1))));
        }
        let waits: Vec<u64> = self
            .call("limit", self.settings.timeout, call.invoke_async(&mut conn))
            .await?;
        if waits.len() != charges.len() {
            self.went_away("limit", "the limit script answered something else".into());
            return None;
        }
        Some(waits.into_iter().map(Duration::from_micros).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_of_rates() {
        let rate = |count, secs| Rate {
            count,
            per: Duration::from_secs(secs),
        };
        assert_eq!(interval_micros(rate(10, 1)), 100_000);
        assert_eq!(interval_micros(rate(1, 60)), 60_000_000);
        assert_eq!(interval_micros(rate(u32::MAX, 1)), 1);
    }
}
