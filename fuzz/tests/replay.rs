//! Every fuzz target's corpus and found crashes, replayed on stable Rust
//! without libFuzzer: each file in `corpus/<target>/` and
//! `regressions/<target>/` goes through the target's function, and a panic
//! fails the test with the file's name. A target without a corpus (or a
//! corpus without a target) fails too, so a new target cannot be forgotten.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use lodestone_fuzz::{seeds::seeds, TARGETS};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The inputs in `dir`, sorted; dot files (`.gitkeep`) are not inputs.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

/// The names of the subdirectories (or, with `ext`, the files) in `dir`.
fn names(dir: &Path, ext: Option<&str>) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| match ext {
            Some(ext) => p.extension().is_some_and(|e| e == ext),
            None => p.is_dir(),
        })
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect()
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

#[test]
fn every_target_has_a_corpus_and_a_bin() {
    let root = root();
    let listed: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let files = names(&root.join("fuzz_targets"), Some("rs"));
    assert_eq!(
        files, listed,
        "fuzz_targets/*.rs and lodestone_fuzz::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let mut problems = Vec::new();
    for name in &listed {
        let src = std::fs::read_to_string(root.join(format!("fuzz_targets/{name}.rs")))
            .expect("the target's file");
        if !src.contains(&format!("lodestone_fuzz::{name}(")) {
            problems.push(format!(
                "fuzz_targets/{name}.rs does not call lodestone_fuzz::{name}"
            ));
        }
        if !manifest.contains(&format!("name = \"{name}\"")) {
            problems.push(format!("Cargo.toml has no [[bin]] named {name}"));
        }
        let corpus = root.join("corpus").join(name);
        if !corpus.is_dir() {
            problems.push(format!("corpus/{name}/ is missing"));
        } else if inputs(&corpus).is_empty() {
            problems.push(format!("corpus/{name}/ is empty"));
        }
        if !root.join("regressions").join(name).is_dir() {
            problems.push(format!(
                "regressions/{name}/ is missing (a .gitkeep will do)"
            ));
        }
    }
    for dir in ["corpus", "regressions"] {
        for extra in names(&root.join(dir), None).difference(&listed) {
            problems.push(format!("{dir}/{extra}/ belongs to no target"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_input_replays() {
    let root = root();
    let mut failed = Vec::new();
    for (name, run) in TARGETS {
        let start = Instant::now();
        let mut runs = 0;
        let mut files = Vec::new();
        for dir in ["corpus", "regressions"] {
            let d = root.join(dir).join(name);
            if d.is_dir() {
                files.extend(inputs(&d));
            }
        }
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            runs += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let shown = f.strip_prefix(&root).unwrap_or(f).display().to_string();
                failed.push(format!("fuzz/{shown}: {}", panic_text(&*e)));
            }
        }
        for (seed, data) in seeds(name) {
            runs += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                failed.push(format!("{name} seed {seed}: {}", panic_text(&*e)));
            }
        }
        println!("{name}: {runs} inputs in {:.2?}", start.elapsed());
    }
    assert!(
        failed.is_empty(),
        "inputs that fail:\n{}",
        failed.join("\n")
    );
}

/// Writes `seeds()` into the corpora (run by hand after changing them).
#[test]
#[ignore = "writes files: run by hand after changing the seeds"]
fn write_seeds() {
    for (name, _) in TARGETS {
        for (seed, data) in seeds(name) {
            let dir = root().join("corpus").join(name);
            std::fs::create_dir_all(&dir).expect("the corpus directory");
            std::fs::write(dir.join(format!("seed-{seed}")), data).expect("a seed file");
        }
    }
}
