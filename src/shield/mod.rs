//! The abuse shield: connection caps and CIDR lists, the header deadline, rate limits
//! (governor), bans, and the memory bounds that keep all of it small under attack.

use crate::config::Config;
use crate::telemetry::Metrics;

/// The shield as one configuration generation defines it.
pub struct Shield {}

impl Shield {
    pub fn compile(_config: &Config, _metrics: &Metrics) -> Self {
        Shield {}
    }
}

/// What the shield remembers about one request.
#[derive(Default)]
pub struct RequestState {}
