//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lodestone"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run lodestone")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/lodestone sits two levels below the root")
        .to_owned()
}

/// Is a real peer client available? Under CI=true a missing client is a
/// failure (the CI script installs them); elsewhere the test is skipped
/// with a loud message.
pub fn require(client: &str, probe: &mut Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("interop peer '{client}' is missing under CI=true; .ci/run must install it");
    }
    eprintln!("\n!!!! SKIPPED: interop peer '{client}' is not installed on this machine !!!!\n");
    false
}

pub fn require_libtorrent() -> bool {
    require(
        "python3-libtorrent",
        Command::new("/usr/bin/python3").args(["-c", "import libtorrent"]),
    )
}
