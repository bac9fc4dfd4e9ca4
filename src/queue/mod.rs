//! The fair login queue: admission (static or adaptive concurrency), the tenant-fair
//! scheduler, tickets and passes, and the waiting room.

use crate::config::Config;
use crate::telemetry::Metrics;

/// One login queue as a configuration generation defines it.
pub struct LoginQueue {
    pub name: String,
}

impl LoginQueue {
    pub fn compile_all(config: &Config, _metrics: &Metrics) -> Vec<LoginQueue> {
        config
            .login_queues
            .iter()
            .map(|q| LoginQueue {
                name: q.name.clone(),
            })
            .collect()
    }
}

/// What the queue remembers about one request (its admission permit, its ticket).
#[derive(Default)]
pub struct RequestState {}
