//! Code identity of stage kinds: the fingerprints `build.rs` makes from the
//! sources each kind depends on, the kernels, the Cargo.lock entries of the
//! crates those sources use, and the compiler.
//! They enter the stage hash, so new code never reuses an old result.

include!(concat!(env!("OUT_DIR"), "/code_fingerprints.rs"));

/// The code fingerprint of a kind (the whole crate's for a kind the build
/// script has no table entry for, such as the test kinds).
pub fn fingerprint(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(name, _)| *name == kind)
        .map_or(WHOLE, |(_, code)| code)
}

/// build.rs's reading of Cargo.lock, compiled here for its test.
#[cfg(test)]
#[path = "../../build/lock_entries.rs"]
mod lock_entries;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LOCK: &str = r#"version = 4

[[package]]
name = "gemm"
version = "0.19.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = [
 "pulp",
]

[[package]]
name = "indicatif"
version = "0.18.6"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "poker-pipe"
version = "0.1.0"
dependencies = [
 "gemm",
 "indicatif",
 "serde_json",
]

[[package]]
name = "pulp"
version = "0.22.3"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "serde_json"
version = "1.0.154"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

    /// The lock entries a kind's source pulls in, as build.rs takes them.
    fn entries(lock: &str, source: &str) -> Vec<String> {
        let lock = lock_entries::Lock::parse(lock);
        let named = lock_entries::named_in(&lock.dependencies_of("poker-pipe"), source);
        lock.closure(&named).into_iter().map(String::from).collect()
    }

    #[test]
    fn a_kind_hashes_the_lock_entries_of_the_crates_it_uses() {
        let source = "use gemm::gemm;\nlet v = serde_json::json!({});\n// my_gemm::x is not gemm\n";
        let used = entries(LOCK, source);
        assert_eq!(used.len(), 3, "{used:?}");
        assert!(
            used.iter().any(|e| e.contains("name = \"pulp\"")),
            "gemm's own dependency"
        );
        assert!(!used.iter().any(|e| e.contains("indicatif")));
        // A new version of a crate the kind does not use changes nothing; of
        // one it uses, directly or through another, changes its entries.
        let bumped = |from: &str, to: &str| entries(&LOCK.replace(from, to), source);
        assert_eq!(bumped("0.18.6", "0.18.7"), used);
        assert_ne!(bumped("1.0.154", "1.0.155"), used);
        assert_ne!(bumped("0.22.3", "0.22.4"), used);
        assert!(entries(LOCK, "fn f() {}").is_empty());
    }

    #[test]
    fn every_kind_has_its_own_fingerprint() {
        let mut seen: Vec<&str> = crate::stages::builtin().names().map(fingerprint).collect();
        assert!(seen.iter().all(|f| f.len() == 64 && *f != WHOLE));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), KINDS.len());
        assert_eq!(fingerprint("no-such-kind"), WHOLE);
    }
}
