//! Rempart: a resilient edge reverse proxy for school digital workspaces (ENT).

pub mod config;
