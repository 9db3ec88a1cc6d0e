//! The Merkle core against an independent recomputation: a naive recursive MTH, PATH
//! and SUBPROOF written here from RFC 9162 section 2.1 (memoised per leaf range), for
//! every tree size 1..=300, every leaf index and every pair of sizes, plus the RFC 6962
//! test vectors of the transparency-dev project re-derived into `tests/data`.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use casebus_tlog::merkle::{
    Frontier, Hash, ProofError, consistency_proof, empty_root, inclusion_proof, leaf_hash,
    stored_hash_count, tree_hash, verify_consistency, verify_inclusion,
};

const MAX: u64 = 300;

/// The RFC's definitions, computed from the entries alone with none of the crate's code.
struct Naive {
    entries: Vec<Vec<u8>>,
    memo: HashMap<(u64, u64), Hash>,
}

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash(h.finalize().into())
}

fn k_of(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Naive {
    fn new(n: u64) -> Self {
        let entries = (0..n).map(|i| format!("entry {i}").into_bytes()).collect();
        Self {
            entries,
            memo: HashMap::new(),
        }
    }

    /// MTH(D[lo:hi]).
    fn mth(&mut self, lo: u64, hi: u64) -> Hash {
        if let Some(h) = self.memo.get(&(lo, hi)) {
            return *h;
        }
        let h = match hi - lo {
            0 => sha(&[]),
            1 => sha(&[&[0u8], &self.entries[lo as usize]]),
            n => {
                let k = k_of(n);
                let (l, r) = (self.mth(lo, lo + k), self.mth(lo + k, hi));
                sha(&[&[1u8], &l.0, &r.0])
            }
        };
        self.memo.insert((lo, hi), h);
        h
    }

    /// PATH(m, D[lo:hi]).
    fn path(&mut self, m: u64, lo: u64, hi: u64) -> Vec<Hash> {
        let n = hi - lo;
        if n <= 1 {
            return Vec::new();
        }
        let k = k_of(n);
        if m - lo < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// SUBPROOF(m, D[lo:hi], b).
    fn subproof(&mut self, m: u64, lo: u64, hi: u64, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b {
                Vec::new()
            } else {
                vec![self.mth(lo, hi)]
            };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

/// The stored hashes of a log of the naive entries, appended one leaf at a time.
fn stored(naive: &Naive) -> (Vec<Hash>, Vec<Frontier>) {
    let mut frontier = Frontier::new();
    let mut hashes = Vec::new();
    let mut frontiers = vec![frontier.clone()];
    for e in &naive.entries {
        hashes.extend(frontier.push(leaf_hash(e)));
        frontiers.push(frontier.clone());
    }
    (hashes, frontiers)
}

fn flipped(h: &Hash) -> Hash {
    let mut out = *h;
    out.0[0] ^= 1;
    out
}

#[test]
fn tree_heads_of_every_size_up_to_300_equal_the_rfc_definition() {
    let mut naive = Naive::new(MAX);
    let (hashes, frontiers) = stored(&naive);
    assert_eq!(hashes.len() as u64, stored_hash_count(MAX));
    assert_eq!(tree_hash(0, &hashes), Ok(empty_root()));
    for size in 1..=MAX {
        let want = naive.mth(0, size);
        assert_eq!(
            tree_hash(size, &hashes),
            Ok(want),
            "tree_hash at size {size}"
        );
        assert_eq!(
            frontiers[size as usize].root(),
            want,
            "frontier at size {size}"
        );
        let prefix = &hashes[..stored_hash_count(size) as usize];
        assert_eq!(
            Frontier::load(size, prefix).as_ref(),
            Ok(&frontiers[size as usize]),
            "frontier loaded from storage at size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_for_every_index_of_every_size_up_to_300_equal_path_and_verify() {
    let mut naive = Naive::new(MAX);
    let (hashes, _) = stored(&naive);
    for size in 1..=MAX {
        let root = naive.mth(0, size);
        for index in 0..size {
            let want = naive.path(index, 0, size);
            let got = inclusion_proof(index, size, &hashes).expect("proof");
            assert_eq!(got, want, "inclusion proof of {index} in {size}");
            let leaf = naive.mth(index, index + 1);
            assert_eq!(verify_inclusion(index, size, &leaf, &got, &root), Ok(()));
            // Any change is caught: another leaf, another root, a changed or dropped
            // hash, an extra hash.
            assert!(verify_inclusion(index, size, &flipped(&leaf), &got, &root).is_err());
            assert!(verify_inclusion(index, size, &leaf, &got, &flipped(&root)).is_err());
            if let Some(first) = got.first() {
                let mut bad = got.clone();
                bad[0] = flipped(first);
                assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
                assert!(verify_inclusion(index, size, &leaf, &got[1..], &root).is_err());
            }
            let mut longer = got.clone();
            longer.push(root);
            assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());
        }
    }
}

#[test]
fn consistency_proofs_for_every_pair_of_sizes_up_to_300_equal_subproof_and_verify() {
    let mut naive = Naive::new(MAX);
    let (hashes, _) = stored(&naive);
    for second in 1..=MAX {
        let second_root = naive.mth(0, second);
        for first in 1..=second {
            let first_root = naive.mth(0, first);
            let want = naive.subproof(first, 0, second, true);
            let got = consistency_proof(first, second, &hashes).expect("proof");
            assert_eq!(got, want, "consistency proof {first} -> {second}");
            assert_eq!(
                verify_consistency(first, second, &first_root, &second_root, &got),
                Ok(()),
                "verify {first} -> {second}"
            );
            assert!(
                verify_consistency(first, second, &flipped(&first_root), &second_root, &got)
                    .is_err()
            );
            assert!(
                verify_consistency(first, second, &first_root, &flipped(&second_root), &got)
                    .is_err()
            );
            if let Some(last) = got.last() {
                let mut bad = got.clone();
                *bad.last_mut().expect("non-empty") = flipped(last);
                assert!(
                    verify_consistency(first, second, &first_root, &second_root, &bad).is_err()
                );
            }
        }
    }
}

#[test]
fn impossible_requests_are_refused_with_their_reason() {
    let naive = Naive::new(8);
    let (hashes, _) = stored(&naive);
    assert!(matches!(
        inclusion_proof(8, 8, &hashes),
        Err(casebus_tlog::merkle::InclusionError::Proof(
            ProofError::IndexOutOfRange { index: 8, size: 8 }
        ))
    ));
    assert!(matches!(
        consistency_proof(5, 4, &hashes),
        Err(casebus_tlog::merkle::InclusionError::Proof(
            ProofError::SizesOutOfOrder {
                first: 5,
                second: 4
            }
        ))
    ));
    let root = tree_hash(8, &hashes).expect("root");
    assert_eq!(
        verify_inclusion(9, 8, &root, &[], &root),
        Err(ProofError::IndexOutOfRange { index: 9, size: 8 })
    );
    // From the empty tree: empty proof, and the first root must be the empty root.
    assert_eq!(verify_consistency(0, 8, &empty_root(), &root, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 8, &root, &root, &[]),
        Err(ProofError::FirstRootMismatch)
    );
    // Equal sizes: empty proof and equal roots.
    assert_eq!(verify_consistency(8, 8, &root, &root, &[]), Ok(()));
    assert_eq!(
        verify_consistency(8, 8, &root, &flipped(&root), &[]),
        Err(ProofError::SecondRootMismatch)
    );
}

fn hex_hash(s: &serde_json::Value) -> Hash {
    let bytes = hex::decode(s.as_str().expect("hex string")).expect("hex");
    Hash::from_slice(&bytes).expect("32 bytes")
}

#[test]
fn the_rfc6962_test_vectors_are_reproduced() {
    let data: serde_json::Value =
        serde_json::from_str(include_str!("data/rfc6962_vectors.json")).expect("vectors");
    let leaves: Vec<Vec<u8>> = data["leaves"]
        .as_array()
        .expect("leaves")
        .iter()
        .map(|l| hex::decode(l.as_str().expect("hex")).expect("hex"))
        .collect();
    let mut frontier = Frontier::new();
    let mut hashes = Vec::new();
    for l in &leaves {
        hashes.extend(frontier.push(leaf_hash(l)));
    }
    // The well-known root of the 8-leaf tree, stated here as well as in the data.
    assert_eq!(
        frontier.root().to_hex(),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
    let mut roots = HashMap::new();
    for r in data["roots"].as_array().expect("roots") {
        let size = r["size"].as_u64().expect("size");
        let root = hex_hash(&r["root"]);
        assert_eq!(tree_hash(size, &hashes), Ok(root), "root of size {size}");
        roots.insert(size, root);
    }
    let inclusion = data["inclusion"].as_array().expect("inclusion");
    assert_eq!(inclusion.len(), 36);
    for v in inclusion {
        let (size, index) = (
            v["size"].as_u64().expect("size"),
            v["index"].as_u64().expect("index"),
        );
        let want: Vec<Hash> = v["proof"]
            .as_array()
            .expect("proof")
            .iter()
            .map(hex_hash)
            .collect();
        assert_eq!(inclusion_proof(index, size, &hashes).expect("proof"), want);
        let leaf = leaf_hash(&leaves[index as usize]);
        assert_eq!(
            verify_inclusion(index, size, &leaf, &want, &roots[&size]),
            Ok(())
        );
    }
    let consistency = data["consistency"].as_array().expect("consistency");
    assert_eq!(consistency.len(), 36);
    for v in consistency {
        let (m, n) = (
            v["size1"].as_u64().expect("m"),
            v["size2"].as_u64().expect("n"),
        );
        let want: Vec<Hash> = v["proof"]
            .as_array()
            .expect("proof")
            .iter()
            .map(hex_hash)
            .collect();
        assert_eq!(
            consistency_proof(m, n, &hashes).expect("proof"),
            want,
            "{m} -> {n}"
        );
        assert_eq!(
            verify_consistency(m, n, &roots[&m], &roots[&n], &want),
            Ok(())
        );
    }
}
