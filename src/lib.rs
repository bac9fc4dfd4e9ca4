//! Rempart: a resilient edge reverse proxy for school digital workspaces (ENT).
//!
//! The configuration (`config`) is compiled into a snapshot (`runtime`) that the request
//! pipeline (`proxy`) reads once per request; `upstream` chooses servers, `tls` certificates,
//! `telemetry` counts and logs, `schedule` swaps in the overlays of the hour, `admin` exposes it
//! all, and `launch` starts the whole; `cluster` shares limits, bans and login queues with other
//! nodes through a Redis or Valkey store; `upgrade` passes the listening sockets to a new binary,
//! `systemd` tells the service manager; `ctl` is the operator's client of the admin API.

pub mod admin;
pub mod answer;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod forwarded;
pub mod history;
pub mod launch;
pub mod pages;
pub mod path;
pub mod proxy;
pub mod queue;
pub mod reload;
pub mod runtime;
pub mod runtime_dir;
pub mod schedule;
pub mod shield;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod upstream;
