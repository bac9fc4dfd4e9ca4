//! Value syntax of the configuration file: durations, rates, sizes, shares, addresses, CIDRs.
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::model::Rate;

pub fn parse_duration(s: &str) -> Result<Duration, String> { let _ = s; todo!() }
pub fn parse_rate(s: &str) -> Result<Rate, String> { let _ = s; todo!() }
pub fn parse_size(s: &str) -> Result<u64, String> { let _ = s; todo!() }
pub fn parse_share(s: &str) -> Result<f64, String> { let _ = s; todo!() }
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> { let _ = s; todo!() }
pub fn parse_cidr(s: &str) -> Result<IpNet, String> { let _ = s; todo!() }
