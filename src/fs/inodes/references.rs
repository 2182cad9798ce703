//! The kernel's references: a node keeps its number while the kernel's lookup count of it is
//! above 0 (or something uses it); once the kernel forgets it, it goes, with what only a
//! listing brought in below it.

use super::Inodes;

impl Inodes {
    /// The kernel took a reference without a lookup (readdirplus).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(node) = self.state.lock().unwrap().nodes.get_mut(&ino) {
            node.lookups += 1;
            node.aside = false;
        }
    }

    /// The kernel dropped `n` references; returns how many it still holds.
    pub fn forget(&self, ino: u64, n: u64) -> u64 {
        match self.state.lock().unwrap().nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups
            }
            None => 0,
        }
    }

    /// Removes `ino` if the kernel holds no reference to it and `busy` (open, being written,
    /// kept) says nothing else uses it, with the entries below it that only a listing
    /// brought in; then its parent too if that is left unused and forgotten. Returns the
    /// numbers removed.
    pub fn evict(&self, ino: u64, busy: &dyn Fn(u64) -> bool) -> Vec<u64> {
        let mut state = self.state.lock().unwrap();
        let mut gone = Vec::new();
        let mut parent = state.nodes.get(&ino).map(|n| n.parent);
        if !state.evict_tree(ino, busy, &mut gone) {
            return gone;
        }
        // A parent the kernel forgot while this kept it.
        while let Some(p) = parent {
            let Some(node) = state.nodes.get(&p) else {
                break;
            };
            // (While the kernel holds any child, it holds the parent: this is cheap then.)
            if node.lookups > 0 {
                break;
            }
            parent = Some(node.parent);
            if !state.evict_tree(p, busy, &mut gone) {
                break;
            }
        }
        gone
    }

    /// The kernel's reference count, for tests and diagnostics.
    pub fn lookups(&self, ino: u64) -> u64 {
        self.state
            .lock()
            .unwrap()
            .nodes
            .get(&ino)
            .map_or(0, |n| n.lookups)
    }
}
