//! What this hub has told the registry, and what it still must, without I/O.
//!
//! The driver hands [`Publisher::plan`] the entries this hub should have (its own record, its
//! nodes, its sessions) and writes the operations it returns under the hub's lease. After a
//! lease is lost (etcd was away longer than the TTL, and the entries expired) nothing counts as
//! written ([`Publisher::forget`]), so the next plan writes everything again: that is the
//! reconciliation when etcd returns.

use std::collections::BTreeMap;

/// A write to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put this value under the hub's lease.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete the key.
    Delete {
        /// The key.
        key: String,
    },
}

/// The entries written so far.
#[derive(Debug, Default)]
pub struct Publisher {
    written: BTreeMap<String, String>,
}

impl Publisher {
    /// The operations that turn what was written into `desired`. They count as written once
    /// [`Publisher::done`] confirms them.
    pub fn plan(&self, desired: &BTreeMap<String, String>) -> Vec<Op> {
        let mut ops: Vec<Op> = desired
            .iter()
            .filter(|(k, v)| self.written.get(*k) != Some(*v))
            .map(|(k, v)| Op::Put { key: k.clone(), value: v.clone() })
            .collect();
        ops.extend(self.written.keys().filter(|k| !desired.contains_key(*k)).map(|k| Op::Delete { key: k.clone() }));
        ops
    }

    /// `op` reached the registry.
    pub fn done(&mut self, op: Op) {
        match op {
            Op::Put { key, value } => {
                self.written.insert(key, value);
            }
            Op::Delete { key } => {
                self.written.remove(&key);
            }
        }
    }

    /// The lease is gone, and everything written under it.
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Entries written.
    pub fn len(&self) -> usize {
        self.written.len()
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn writes_only_changes_and_everything_after_the_lease_is_lost() {
        let mut p = Publisher::default();
        let first = map(&[("a", "1"), ("b", "1")]);
        let ops = p.plan(&first);
        assert_eq!(ops.len(), 2);
        // One write fails: it is planned again next time.
        p.done(ops[0].clone());
        assert_eq!(p.plan(&first), vec![Op::Put { key: "b".into(), value: "1".into() }]);
        p.done(ops[1].clone());
        assert_eq!(p.plan(&first), vec![]);
        // A value changes, a key goes, one comes.
        let second = map(&[("a", "2"), ("c", "1")]);
        let ops = p.plan(&second);
        assert_eq!(
            ops,
            vec![
                Op::Put { key: "a".into(), value: "2".into() },
                Op::Put { key: "c".into(), value: "1".into() },
                Op::Delete { key: "b".into() }
            ]
        );
        ops.into_iter().for_each(|o| p.done(o));
        assert_eq!(p.len(), 2);
        p.forget();
        assert_eq!(p.plan(&second).len(), 2, "all written again under the new lease");
    }
}
