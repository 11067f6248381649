//! Lua scripting support.

pub mod sandbox;
