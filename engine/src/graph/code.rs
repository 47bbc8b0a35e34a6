//! Code identity of stage kinds: the fingerprints `build.rs` makes from the
//! sources each kind depends on, the kernels, Cargo.lock and the compiler.
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

#[cfg(test)]
mod tests {
    use super::*;

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
