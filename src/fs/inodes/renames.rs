//! Names this mount removes or moves: the node keeps its number (the kernel's inode), its
//! old name becomes known-absent, the listings follow in place.

use std::sync::Arc;
use std::time::Instant;

use super::{Inodes, Kind};

impl Inodes {
    /// `parent/name` no longer exists (unlink, rmdir). The node keeps its number for the
    /// kernel's sake but can no longer be found by name.
    pub fn remove(&self, parent: u64, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.unlink(parent, name);
        state.set_negative(parent, name, Instant::now() + self.ttl);
        state.dirty.insert(parent);
        state.entries_changed(parent);
        // Out of the listing in place (a copy only while an open readdir holds it).
        if let Some(p) = state.nodes.get_mut(&parent)
            && let Some((listing, _)) = &mut p.listing
            && let Ok(i) = listing.binary_search_by(|e| e.name.as_str().cmp(name))
        {
            Arc::make_mut(listing).remove(i);
        }
    }

    /// Moves a node (and, for a directory, every node below it) to a new name, keeping its
    /// number: the kernel keeps the same inode across a rename. Whatever was at the target
    /// name is unlinked.
    pub fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let Some(ino) = state.unlink(parent, name) else {
            return;
        };
        state.set_negative(parent, name, now + self.ttl);
        state.negative.remove(&(new_parent, new_name.to_owned()));
        state.unlink(new_parent, new_name);
        let parent_rel = state
            .nodes
            .get(&new_parent)
            .map(|p| p.rel.clone())
            .unwrap_or_default();
        let Some(node) = state.nodes.get_mut(&ino) else {
            return;
        };
        let old_rel = node.rel.clone();
        let new_rel = match node.found.kind {
            Kind::Dir => format!("{parent_rel}{new_name}/"),
            _ => format!("{parent_rel}{new_name}"),
        };
        node.parent = new_parent;
        node.name = new_name.to_owned();
        node.rel = new_rel.clone();
        node.listing = None;
        if node.found.kind == Kind::Dir {
            for n in state.nodes.values_mut() {
                if let Some(rest) = n.rel.strip_prefix(&old_rel)
                    && !rest.is_empty()
                {
                    n.rel = format!("{new_rel}{rest}");
                }
            }
        }
        state.link(new_parent, new_name, ino);
        // The listings follow in place: what is shown offline, and kept on disk.
        if let Some(p) = state.nodes.get_mut(&parent)
            && let Some((listing, _)) = &mut p.listing
            && let Ok(i) = listing.binary_search_by(|e| e.name.as_str().cmp(name))
        {
            Arc::make_mut(listing).remove(i);
        }
        let attr = self.attr(ino, &state.nodes[&ino].found);
        Self::put_in_listing(&mut state, new_parent, new_name, &attr);
        state.dirty.insert(parent);
        state.dirty.insert(new_parent);
        state.entries_changed(parent);
        state.entries_changed(new_parent);
    }

    /// Moves `ino` to `new_name` in its own directory (its data was put there: a conflict
    /// copy), leaving its old name free to be looked up again: nothing of S3's is known
    /// about it now.
    pub fn move_aside(&self, ino: u64, new_name: &str) {
        let Some((parent, name)) = ({
            let state = self.state.lock().unwrap();
            state.nodes.get(&ino).map(|n| (n.parent, n.name.clone()))
        }) else {
            return;
        };
        self.rename(parent, &name, parent, new_name);
        self.state.lock().unwrap().negative.remove(&(parent, name));
        self.set_aside(ino);
    }

    /// `ino` went beside the name the kernel knows it by (a conflict): until the kernel
    /// looks it up by its new name, opens of it come through the old one.
    pub fn set_aside(&self, ino: u64) {
        if let Some(n) = self.state.lock().unwrap().nodes.get_mut(&ino) {
            n.aside = true;
        }
    }

    /// Whether `ino` was moved aside and the kernel has not looked it up since: a new open
    /// of it can only come through the name it left (a stale entry).
    pub fn is_aside(&self, ino: u64) -> bool {
        self.state
            .lock()
            .unwrap()
            .nodes
            .get(&ino)
            .is_some_and(|n| n.aside)
    }
}
