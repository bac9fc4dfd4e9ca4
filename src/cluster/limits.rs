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
/// interval times the burst), in µs, and the tokens asked (a lease; one if the lease does not
/// fit). Returns per key the tokens granted and, when none, the µs until one would be; nothing is
/// charged unless every key gets at least one.
static GCRA: Lazy<redis::Script> = Lazy::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local waits = {}
local refused = false
local granted = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local asked = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  local n = asked
  if tat + interval * n - now - tolerance > 0 then n = 1 end
  local over = tat + interval * n - now - tolerance
  if over > 0 then
    granted[i] = 0
    waits[i] = over
    refused = true
  else
    granted[i] = n
    waits[i] = 0
    tats[i] = tat + interval * n
  end
end
if not refused then
  for i = 1, #KEYS do
    local ttl = math.ceil((tats[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', string.format('%.0f', ttl))
  end
end
local out = {}
for i = 1, #KEYS do
  out[2 * i - 1] = granted[i]
  out[2 * i] = waits[i]
end
return out
",
    )
});

/// One cluster limit's charge for a request.
pub struct Charge<'a> {
    pub limit: &'a str,
    pub key: u64,
    pub rate: Rate,
    pub burst: u32,
    /// Tokens to take at once (1: this request's only).
    pub lease: u32,
}

/// The store's answer for one charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// This many tokens were charged (this request's and `n - 1` ahead).
    Tokens(u32),
    /// Refused; a token is there again after this long.
    Refused(Duration),
}

/// The emission interval of a rate in µs (at least 1).
pub fn interval_micros(rate: Rate) -> u64 {
    let micros = rate.per.as_micros() / u128::from(rate.count.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX).max(1)
}

impl Cluster {
    /// Charge a request to its cluster limits in one round trip: per charge, the tokens taken,
    /// or how long until one would be there (and then nothing was charged). None: the store is
    /// away; the caller decides alone with its share.
    pub async fn charge(&self, charges: &[Charge<'_>]) -> Option<Vec<Granted>> {
        let mut conn = self.connection()?;
        let mut call = GCRA.prepare_invoke();
        for charge in charges {
            let interval = interval_micros(charge.rate);
            call.key(format!(
                "{}{}:{:016x}",
                self.keys.limit, charge.limit, charge.key
            ))
            .arg(interval)
            .arg(interval.saturating_mul(u64::from(charge.burst.max(1))))
            .arg(charge.lease.clamp(1, charge.burst.max(1)));
        }
        let answer: Vec<u64> = self
            .call("limit", self.settings.timeout, call.invoke_async(&mut conn))
            .await?;
        if answer.len() != charges.len() * 2 {
            self.went_away("limit", "the limit script answered something else".into());
            return None;
        }
        Some(
            answer
                .chunks_exact(2)
                .map(|pair| match pair[0] {
                    0 => Granted::Refused(Duration::from_micros(pair[1])),
                    n => Granted::Tokens(u32::try_from(n).unwrap_or(u32::MAX)),
                })
                .collect(),
        )
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
