//! PLACEHOLDER
pub mod live;
