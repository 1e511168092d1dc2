//! The shipped systemd unit is one systemd accepts (`systemd-analyze
//! verify`, with ExecStart pointed at the binary under test).
mod common;

#[test]
fn the_unit_verifies() {
    if !common::require(
        "systemd-analyze",
        std::process::Command::new("systemd-analyze").arg("--version"),
    ) {
        return;
    }
    let unit = std::fs::read_to_string(common::repo_root().join("dist/lodestone.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/lodestone daemon"));
    let bin = common::bin_path();
    let here = unit.replace("/usr/bin/lodestone", bin.to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lodestone.service");
    std::fs::write(&path, here).unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // Only complaints about this unit count (the host's own units may
    // have theirs).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("lodestone.service"))
        .collect();
    assert!(o.status.success() && ours.is_empty(), "{err}");
}
