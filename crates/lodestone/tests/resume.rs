//! Resume after `kill -9`, where it trusts its resume file: a multi-file
//! torrent downloaded in order under a download limit, so that some files
//! are finished long (more than 2 s) before each kill and their recorded
//! modification times are trusted on restart. Four kills in a row: during
//! the first hash of what was on disk, mid-download once files are
//! vouched for, during a resume save, and mid-download again (after
//! someone edited a trusted file in place); then a run to the end. After each kill the test hashes every piece on disk itself
//! (against the torrent's piece hashes) and reads the resume file itself;
//! each restart must claim exactly the pieces that verify, hash again
//! exactly the files whose size or time changed (`changed_files`), not
//! read the trusted files at all, and the last run fetches only what was
//! missing.
mod check;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use check::{count, Run};
use common::{assert_same_tree, bin, create_torrent, spawn_seeder};
use lodestone::payload;
use lodestone_core::Metainfo;

const PIECE: u64 = 256 << 10;
/// Twelve small files fetched under the limit, then one big file that is on
/// disk (complete, an hour old) before the first run.
const SMALL: usize = 12;
const BIG: u64 = 128 << 20;
const LIMIT: &str = "1M";

fn layout() -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = (0..SMALL)
        // 2 MiB give or take: file ends fall inside pieces.
        .map(|i| (format!("f{i}.bin"), (2 << 20) + 1000 * i as u64 - 500))
        .collect();
    files.push(("z_big.bin".to_owned(), BIG));
    files
}

fn get(torrent: &Path, peer: &str, out: &Path) -> Command {
    get_with(bin(), LIMIT, torrent, peer, out)
}

/// [`get`] through `c` (the binary, or `nice` running it) at `limit`.
fn get_with(mut c: Command, limit: &str, torrent: &Path, peer: &str, out: &Path) -> Command {
    c.args(["get", "--json", "--sequential", "--no-pex"])
        .args(["--download-limit", limit, "--peer", peer, "-o"])
        .arg(out)
        .arg(torrent);
    c
}

/// What the test knows before a restart, from the disk and the resume
/// file alone.
struct Before {
    verified: Vec<bool>,
    changed: Vec<usize>,
}

fn before_restart(meta: &Metainfo, out: &Path) -> Before {
    let before = before_restart_edited(meta, out);
    // After a kill (nobody else touched the files), the resume file claims
    // nothing that is not on disk.
    if let Some(claims) = check::resume_claims(meta, out) {
        check::claims_hold(&claims, &before.verified);
    }
    before
}

/// [`before_restart`] where someone may have edited a file since.
fn before_restart_edited(meta: &Metainfo, out: &Path) -> Before {
    let verified = check::verified(meta, out);
    let changed = check::resume_claims(meta, out)
        .map(|claims| check::changed_files(&claims, &check::disk_stamps(meta, out)))
        .unwrap_or_default();
    Before { verified, changed }
}

/// The restart's `started` event against what the disk says: exactly the
/// pieces that verify, exactly the files that changed hashed again, and
/// the trusted big file not read at all.
fn check_started(run: &mut Run, before: &Before, resume: &str) -> serde_json::Value {
    let started = run.wait_event("started", Duration::from_secs(60));
    let read = check::bytes_read(run.pid()).unwrap_or(u64::MAX);
    assert_eq!(started["resume"], resume, "{started}");
    assert_eq!(
        started["have_pieces"].as_u64(),
        Some(count(&before.verified) as u64),
        "the restart claims other pieces than the {} that verify on disk: {started}",
        count(&before.verified)
    );
    if resume == "resumed" {
        assert_eq!(
            started["changed_files"].as_u64(),
            Some(before.changed.len() as u64),
            "files changed since the save: {:?}; {started}",
            before.changed
        );
        // The big file is trusted: it is not hashed again.
        assert!(
            !before.changed.contains(&SMALL) && read < BIG / 2,
            "a resumed start read {read} bytes (the trusted big file is {BIG})"
        );
    }
    started
}

/// Wait until the resume file vouches for files 0..=`upto` (all their
/// pieces claimed, their times recorded), then `kill -9`.
fn kill_once_vouched(mut run: Run, meta: &Metainfo, out: &Path, upto: usize) -> Vec<bool> {
    run.until(
        &format!("resume file vouching for files 0..={upto}"),
        Duration::from_secs(60),
        |r| {
            assert!(r.find("completed").is_none(), "finished before the kill");
            check::resume_claims(meta, out).is_some_and(|c| {
                (0..=upto).all(|i| check::file_claimed(meta, &c, i) && c.stamps[i].1.is_some())
            })
        },
    );
    let claims = check::resume_claims(meta, out).expect("resume file");
    run.kill9();
    claims.have
}

/// A resume save is under way: its temporary file exists.
fn saving(state: &Path) -> bool {
    std::fs::read_dir(state).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
    })
}

#[test]
fn kill_9_again_and_again_resumes_from_trusted_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (rel, size) in layout() {
        payload::write_file(&src.join("r").join(&rel), &rel, size, "resume").unwrap();
    }
    let torrent = dir.path().join("r.torrent");
    create_torrent(&src.join("r"), &torrent, &["--piece-size", "256K"]);
    let meta = check::load(&torrent);
    let pieces = meta.info.num_pieces() as usize;
    let (_seeder, peer) = spawn_seeder(&torrent, &src, &["--no-pex"]);
    let out = dir.path().join("dl");
    let log = |n: u32| dir.path().join(format!("get{n}.stderr"));

    // The big file is there already, an hour old (copied from elsewhere).
    std::fs::create_dir_all(out.join("r")).unwrap();
    let big = out.join("r/z_big.bin");
    std::fs::copy(src.join("r/z_big.bin"), &big).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let set_mtime = |p: &Path, t: SystemTime| {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    };
    set_mtime(&big, hour_ago);

    // Kill 0, during the first hash of what is on disk: once the process
    // has read a sixteenth of the big file and not yet started.
    // At the lowest priority: on a busy machine the hash slows down
    // rather than the test's watch (nice execs it: the same pid).
    let mut niced = Command::new("nice");
    niced
        .args(["-n", "19", env!("CARGO_BIN_EXE_lodestone")])
        .env(common::LOCAL_ONLY.0, common::LOCAL_ONLY.1);
    let mut run = Run::spawn(&mut get_with(niced, LIMIT, &torrent, &peer, &out), &log(0));
    run.until("the first run hashing", Duration::from_secs(60), |r| {
        assert!(
            r.find("started").is_none(),
            "hashing ended before the kill (make the big file bigger)"
        );
        check::bytes_read(r.pid()).is_some_and(|n| n >= BIG / 16)
    });
    let read = check::bytes_read(run.pid()).unwrap_or(0);
    run.kill9();
    assert!(
        read < BIG,
        "the kill came after the hash ({read} bytes read)"
    );
    assert!(
        check::resume_claims(&meta, &out).is_none(),
        "a resume file was written during the first hash"
    );
    eprintln!("kill 0: during the first hash, {} MiB read", read >> 20);

    // Run 1 hashes everything again (no resume file yet), fetches in
    // order, and is killed once files 0 and 1 are vouched for.
    let before = before_restart(&meta, &out);
    let mut run = Run::spawn(&mut get(&torrent, &peer, &out), &log(1));
    check_started(
        &mut run,
        &before,
        "rechecked: files exist but there is no resume data",
    );
    let claimed = kill_once_vouched(run, &meta, &out, 1);
    eprintln!(
        "kill 1: mid-download, the resume file claims {}/{pieces}",
        count(&claimed)
    );

    // Run 2 resumes: the files vouched for (and the big one) are trusted,
    // the one being written is hashed again. Killed during a resume save:
    // as soon as the save's temporary file exists.
    let before = before_restart(&meta, &out);
    assert!(
        !before.changed.iter().any(|&i| i < 2 || i == SMALL),
        "files 0, 1 and the big one were vouched for, yet changed: {:?}",
        before.changed
    );
    let mut run = Run::spawn(&mut get(&torrent, &peer, &out), &log(2));
    check_started(&mut run, &before, "resumed");
    // The temporary file lives a few ms (its fsync): a watch can miss it.
    // Up to three saves are watched; on a file system whose fsync takes no
    // time (tmpfs) it may never be seen, and the kill follows the third
    // save at once.
    let state = out.join(".lodestone");
    let resume = check::resume_path(&meta, &out);
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last_save = stamp(&resume);
    let mut saves = 0;
    run.until("a resume save", Duration::from_secs(60), |r| {
        assert!(r.find("completed").is_none(), "finished before the kill");
        if saving(&state) {
            return true;
        }
        if stamp(&resume) != last_save {
            last_save = stamp(&resume);
            saves += 1;
        }
        saves == 3
    });
    let during = saving(&state);
    run.kill9();
    eprintln!(
        "kill 2: {} a resume save (its temporary file left behind: {})",
        if during { "during" } else { "just after" },
        saving(&state)
    );

    // Someone edits a finished, trusted file in place (same size, new
    // time): the next start must hash it and drop the damaged piece.
    let edited = out.join("r/f0.bin");
    let mut bytes = std::fs::read(&edited).unwrap();
    bytes[PIECE as usize + 7] ^= 0x55;
    std::fs::write(&edited, &bytes).unwrap();

    // Run 3 resumes from whichever file the save left; killed once the
    // next file after those vouched for so far is vouched for too.
    let before = before_restart_edited(&meta, &out);
    assert!(before.changed.contains(&0), "{:?}", before.changed);
    assert!(!before.verified[1], "piece 1 still verifies after the edit");
    let claims = check::resume_claims(&meta, &out).expect("resume file");
    let next = (0..SMALL)
        .find(|&i| !(check::file_claimed(&meta, &claims, i) && claims.stamps[i].1.is_some()))
        .unwrap_or(SMALL);
    assert!(
        next + 1 < SMALL,
        "too little left for kill 3: files 0..{next} done"
    );
    let mut run = Run::spawn(&mut get(&torrent, &peer, &out), &log(3));
    check_started(&mut run, &before, "resumed");
    let claimed = kill_once_vouched(run, &meta, &out, next);
    eprintln!(
        "kill 3: mid-download, the resume file claims {}/{pieces}",
        count(&claimed)
    );

    // Run 4 resumes and finishes (no limit now): every piece verifies,
    // every file is the original, and only what was missing came down.
    let before = before_restart(&meta, &out);
    let missing = check::missing_bytes(&meta, &before.verified);
    let mut run = Run::spawn(&mut get_with(bin(), "0", &torrent, &peer, &out), &log(4));
    let started = check_started(&mut run, &before, "resumed");
    let (status, summary) = run.finish(Duration::from_secs(120));
    assert!(status.success(), "{summary}");
    assert_eq!(summary["complete"], true, "{summary}");
    let downloaded = summary["downloaded_bytes"].as_u64().unwrap();
    eprintln!(
        "run 4: started with {}/{pieces} pieces, {} files hashed again; fetched {downloaded} bytes for {missing} missing",
        started["have_pieces"], started["changed_files"]
    );
    assert!(
        downloaded >= missing && downloaded <= missing + 4 * PIECE,
        "fetched {downloaded} bytes for {missing} missing"
    );
    let all = check::verified(&meta, &out);
    assert_eq!(count(&all), pieces, "pieces that verify at the end");
    assert_same_tree(&src.join("r"), &out.join("r"));
}
