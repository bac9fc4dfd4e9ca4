//! Retry rules of SPEC section 4 and the retry budget. A request that never reached a server is
//! always retried (on a server it has not tried); one that reached a server is retried only when
//! it is safe to send again (idempotent method or `Idempotency-Key`, body still in the replay
//! buffer, nothing sent to the client yet), within `retries.attempts` and the budget.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, Method};

use crate::config::Resend;

/// Bytes of request body pingora keeps to send again on a retry (its `BODY_BUF_LIMIT`).
pub const REPLAY_BUFFER_BYTES: usize = 64 * 1024;

/// Why a try is retried, for `rempart_retries_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// Never reached the server: connect refused or timed out.
    Connect,
    /// Reset or broken exchange after the request was sent.
    Error,
    /// No answer in time (`timeouts.per_try` or `timeouts.response`).
    Timeout,
    /// The server answered 502, 503 or 504.
    Status,
}

impl RetryKind {
    pub const ALL: [RetryKind; 4] = [
        RetryKind::Connect,
        RetryKind::Error,
        RetryKind::Timeout,
        RetryKind::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryKind::Connect => "connect",
            RetryKind::Error => "error",
            RetryKind::Timeout => "timeout",
            RetryKind::Status => "status",
        }
    }
}

/// Whether sending this request again cannot change the outcome on the server: an idempotent
/// method (GET, HEAD, OPTIONS, PUT, DELETE); an `Idempotency-Key` header only on a route whose
/// backend honours it (`retries.idempotency_key`, else any client could make any POST
/// resendable); a POST on a route that declares its POSTs harmless to replay
/// (`retries.resend_post`).
pub fn safe_to_resend(method: &Method, headers: &HeaderMap, resend: Resend) -> bool {
    safe_to_resend_keyed(method, headers.contains_key("idempotency-key"), resend)
}

/// [`safe_to_resend`], told whether the request has an `Idempotency-Key` header.
pub fn safe_to_resend_keyed(method: &Method, idempotency_key: bool, resend: Resend) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || (resend.idempotency_key && idempotency_key)
        || (resend.post && *method == Method::POST)
}

/// What the proxy knows about the request when a try failed.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub kind: RetryKind,
    /// `safe_to_resend` of the request.
    pub safe: bool,
    /// The request body sent so far is still whole in the replay buffer.
    pub body_replayable: bool,
    /// Some of the response already went to the client.
    pub response_started: bool,
    /// Retries already made for this request after the server was reached.
    pub reached_retries: u32,
    /// `retries.attempts`.
    pub attempts: u32,
    /// A server this request has not tried can take it.
    pub another_server: bool,
}

/// The retries one request made, and the decision for its next failed try.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Every retry made (for the access log).
    pub retries: u32,
    /// Retries after a try that reached a server (bounded by `retries.attempts`).
    pub reached: u32,
}

/// What the request is, for the decision on a retry.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// `safe_to_resend` of the request.
    pub safe: bool,
    /// The request body sent so far is still whole in the replay buffer.
    pub body_replayable: bool,
    /// Some of the response already went to the client.
    pub response_started: bool,
}

impl Tally {
    /// Whether the try that just failed is retried on `upstream` (its rules and budget), and
    /// count it if so.
    pub fn retry(
        &mut self,
        upstream: &super::Upstream,
        kind: RetryKind,
        replay: Replay,
        tried: &[std::net::SocketAddr],
    ) -> bool {
        let now = upstream.now_ms();
        let attempt = Attempt {
            kind,
            safe: replay.safe,
            body_replayable: replay.body_replayable,
            response_started: replay.response_started,
            reached_retries: self.reached,
            attempts: upstream.config.retries.attempts,
            another_server: upstream.has_another(tried, now),
        };
        if upstream.decide_retry(&attempt, now).is_err() {
            return false;
        }
        self.retries += 1;
        if kind != RetryKind::Connect {
            self.reached += 1;
        }
        true
    }
}

/// Why a failed try is not retried (for tests and debugging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRetry {
    NoOtherServer,
    ResponseStarted,
    NotSafe,
    BodyNotReplayable,
    AttemptsUsed,
    Budget,
}

/// The decision for one failed try. Connect failures are retried without counting against
/// `attempts` or the budget: nothing reached a server, so the retry adds no load anywhere but
/// on the one server that finally takes the request.
pub fn decide(
    attempt: &Attempt,
    budget: &RetryBudget,
    now_ms: u64,
    ratio: f64,
) -> Result<(), NoRetry> {
    if !attempt.another_server {
        return Err(NoRetry::NoOtherServer);
    }
    if attempt.response_started {
        return Err(NoRetry::ResponseStarted);
    }
    if attempt.kind == RetryKind::Connect {
        return Ok(());
    }
    if !attempt.safe {
        return Err(NoRetry::NotSafe);
    }
    if !attempt.body_replayable {
        return Err(NoRetry::BodyNotReplayable);
    }
    if attempt.reached_retries >= attempt.attempts {
        return Err(NoRetry::AttemptsUsed);
    }
    if !budget.try_spend(now_ms, ratio) {
        return Err(NoRetry::Budget);
    }
    Ok(())
}

/// Seconds of history the budget looks at.
const WINDOW_SECS: u64 = 10;
/// Retries always allowed per second, whatever the request rate.
pub const MIN_RETRIES_PER_SEC: u64 = 5;

struct Bucket {
    /// The second (of the clock) this bucket counts; reset when the ring comes round.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }
}

/// Retries allowed: `ratio` of the requests of the last 10 s, and at least 5 per second. A ring
/// of one-second buckets of atomic counters: no lock, a few atomic operations per request.
/// A bucket reset racing with an increment may lose that one count; the budget is a bound,
/// not an account.
#[derive(Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    fn bucket(&self, now_ms: u64) -> &Bucket {
        let second = now_ms / 1000;
        let bucket = &self.buckets[(second % WINDOW_SECS) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Count a new request (its first try).
    pub fn record_request(&self, now_ms: u64) {
        self.bucket(now_ms).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests and retries of the last 10 s.
    pub fn window(&self, now_ms: u64) -> (u64, u64) {
        let second = now_ms / 1000;
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.second.load(Ordering::Acquire);
                s != u64::MAX && s <= second && second - s < WINDOW_SECS
            })
            .fold((0, 0), |(req, ret), b| {
                (
                    req + b.requests.load(Ordering::Relaxed),
                    ret + b.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// Take one retry from the budget; false when the budget is spent.
    pub fn try_spend(&self, now_ms: u64, ratio: f64) -> bool {
        let (requests, retries) = self.window(now_ms);
        let allowed = ((requests as f64 * ratio) as u64).max(MIN_RETRIES_PER_SEC * WINDOW_SECS);
        if retries >= allowed {
            return false;
        }
        self.bucket(now_ms).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::state::Clock;
    use std::time::Duration;

    fn attempt(kind: RetryKind) -> Attempt {
        Attempt {
            kind,
            safe: true,
            body_replayable: true,
            response_started: false,
            reached_retries: 0,
            attempts: 2,
            another_server: true,
        }
    }

    #[test]
    fn rules_of_spec_section_4() {
        let budget = RetryBudget::default();
        let now = 1;
        // Connect failures: any method, any body, even with attempts used.
        let mut a = attempt(RetryKind::Connect);
        a.safe = false;
        a.body_replayable = false;
        a.reached_retries = 9;
        assert_eq!(decide(&a, &budget, now, 0.2), Ok(()));
        a.another_server = false;
        assert_eq!(decide(&a, &budget, now, 0.2), Err(NoRetry::NoOtherServer));

        for kind in [RetryKind::Error, RetryKind::Timeout, RetryKind::Status] {
            assert_eq!(decide(&attempt(kind), &budget, now, 0.2), Ok(()));
            let mut a = attempt(kind);
            a.safe = false;
            assert_eq!(decide(&a, &budget, now, 0.2), Err(NoRetry::NotSafe));
            let mut a = attempt(kind);
            a.body_replayable = false;
            assert_eq!(
                decide(&a, &budget, now, 0.2),
                Err(NoRetry::BodyNotReplayable)
            );
            let mut a = attempt(kind);
            a.response_started = true;
            assert_eq!(decide(&a, &budget, now, 0.2), Err(NoRetry::ResponseStarted));
            let mut a = attempt(kind);
            a.reached_retries = 2;
            assert_eq!(decide(&a, &budget, now, 0.2), Err(NoRetry::AttemptsUsed));
        }
    }

    #[test]
    fn idempotency() {
        let empty = HeaderMap::new();
        let default = Resend::default();
        assert!(safe_to_resend(&Method::GET, &empty, default));
        assert!(safe_to_resend(&Method::PUT, &empty, default));
        assert!(safe_to_resend(&Method::DELETE, &empty, default));
        assert!(!safe_to_resend(&Method::POST, &empty, default));
        assert!(!safe_to_resend(&Method::PATCH, &empty, default));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().unwrap());
        assert!(
            !safe_to_resend(&Method::POST, &keyed, default),
            "a client's Idempotency-Key means nothing unless the route says the backend honours it"
        );
        let honoured = Resend {
            idempotency_key: true,
            post: false,
        };
        assert!(safe_to_resend(&Method::POST, &keyed, honoured));
        assert!(!safe_to_resend(&Method::POST, &empty, honoured));
        let replayable = Resend {
            idempotency_key: false,
            post: true,
        };
        assert!(safe_to_resend(&Method::POST, &empty, replayable));
        assert!(!safe_to_resend(&Method::PATCH, &empty, replayable));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_is_a_share_of_the_last_ten_seconds_with_a_floor() {
        let clock = Clock::new();
        let budget = RetryBudget::default();
        // Few requests: the floor (5/s over 10 s = 50) applies.
        for _ in 0..10 {
            budget.record_request(clock.now_ms());
        }
        let granted = (0..100)
            .filter(|_| budget.try_spend(clock.now_ms(), 0.2))
            .count();
        assert_eq!(granted, 50);

        // Ten seconds later the window has moved on: 1000 requests allow 200 retries.
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..1000 {
            budget.record_request(clock.now_ms());
        }
        let granted = (0..500)
            .filter(|_| budget.try_spend(clock.now_ms(), 0.2))
            .count();
        assert_eq!(granted, 200);

        // Spread over the window: buckets older than 10 s no longer count.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(budget.window(clock.now_ms()), (1000, 200));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(budget.window(clock.now_ms()), (0, 0));
        assert!(budget.try_spend(clock.now_ms(), 0.2));
    }
}
