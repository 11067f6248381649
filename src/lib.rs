//! walua
