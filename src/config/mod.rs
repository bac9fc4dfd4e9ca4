//! Configuration: the YAML file, its value syntax, validation with key paths and lines.
pub mod model;
pub use model::*;
