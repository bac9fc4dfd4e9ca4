//! Scheduled policies: named overlays of limits and login-queue settings, in force at the times
//! their windows give in one time zone.
//!
//! - [`calendar`]: when (pure functions of an instant: in force at `t`, the next change);
//! - [`overlay`]: what (the fields an overlay sets, applied to the base file).

pub mod calendar;
pub mod overlay;
