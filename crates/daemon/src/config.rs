//! The daemon's configuration file (TOML).
