//! The inode table: inode number ↔ path, kind, size, mtime, etag, kernel lookup count,
//! and what we know about each directory's listing, each with a metadata TTL.
//!
//! Inode numbers are stable while the kernel holds a reference: a (parent, name, kind) keeps
//! its number as long as the kernel's lookup count of it is above 0, or it is open, being
//! written or kept for upload. Once the kernel forgets it (FUSE `forget` brings the count to
//! 0) and nothing uses it, the entry goes ([`Inodes::evict`]), with the entries below it
//! that only a listing brought in, so the table follows the kernel's cache instead of
//! growing with every name ever seen (`find` over a million names). Numbers are never
//! reused; a name looked up again after it was forgotten gets a new one. A name that
//! changes kind (file `a` replaced by directory `a/`) gets a new number too, because the
//! kernel treats a kind change under one nodeid as corruption.
//!
//! The negative-lookup cache (names known absent, for the TTL) is bounded too:
//! [`MAX_NEGATIVE`] entries; past it, expired ones go, then all.
//!
//! What a name is and what the kernel is told about it (`Kind`, `Found`, `Attr`) and the
//! mapping rules (what is a directory, what is hidden: [`build_listing`], [`valid_name`])
//! are in `entries.rs`; docs/SEMANTICS.md states the rules in prose. The table's parts by
//! job: the listings it keeps per directory (`listings.rs`), the kernel's references and
//! eviction (`references.rs`), a directory's times not yet stored (`times.rs`), a listing
//! handed out page by page (`stream.rs`), names this mount removes or moves (`renames.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use super::asked::Asked;
use super::asked::RecentWrites;
use super::meta::Meta;

mod entries;
mod listings;
mod references;
mod renames;
mod stream;
mod times;
pub use entries::{Attr, Defaults, DirEntry, Found, Kind, NodeInfo, build_listing, valid_name};
pub use stream::{ListingStream, key_order};

pub const ROOT_INO: u64 = 1;

/// Names remembered as absent, at most.
pub const MAX_NEGATIVE: usize = 65_536;

/// This mount's latest writes remembered per node, at most ([`State::written`]).
const WRITES_KEPT: usize = 4096;

struct Node {
    parent: u64,
    name: String,
    rel: String,
    found: Found,
    expires: Instant,
    lookups: u64,
    listing: Option<(Arc<Vec<DirEntry>>, Instant)>,
    // What only some nodes have is boxed: the table holds a node for every name the kernel
    // knows (100,000 after an `ls -l` of as many), most of them plain files.
    /// A symlink's target, for the version (etag) it was read from.
    link: Option<Box<(String, bytes::Bytes)>>,
    /// A directory's times moved by a change of its entries, not yet stored.
    pending_times: Option<Box<PendingTimes>>,
    /// The entries linked by name below this one (`State::children` of this parent).
    #[allow(clippy::box_collection)] // 8 bytes in every node, the set's 48 in directories'
    kids: Option<Box<HashSet<u64>>>,
    /// Moved aside by a conflict ([`Inodes::move_aside`]) and not looked up since: the
    /// kernel knows it only by the name it left, whose entry may not be invalidated yet.
    aside: bool,
}

/// A directory's mtime and ctime moved to `at` by a change of its entries and not yet
/// stored: what S3 says about the directory does not take them back.
struct PendingTimes {
    at: SystemTime,
    /// The mtime and ctime the marker holds (what is kept on disk for a later mount, which
    /// will not write the pending ones).
    stored: (Option<SystemTime>, Option<SystemTime>),
}

impl Node {
    fn new(parent: u64, name: String, rel: String, found: Found, expires: Instant) -> Box<Node> {
        Box::new(Node {
            parent,
            name,
            rel,
            found,
            expires,
            lookups: 0,
            listing: None,
            link: None,
            pending_times: None,
            kids: None,
            aside: false,
        })
    }

    fn set_found(&mut self, found: Found) {
        self.found = found;
        if let Some(p) = &mut self.pending_times {
            p.stored = (self.found.meta.mtime, self.found.meta.ctime);
            (self.found.meta.mtime, self.found.meta.ctime) = (Some(p.at), Some(p.at));
        }
    }

    fn kids(&self) -> impl Iterator<Item = u64> + '_ {
        self.kids.iter().flat_map(|k| k.iter().copied())
    }

    fn forget_kid(&mut self, ino: u64) {
        if let Some(k) = &mut self.kids {
            k.remove(&ino);
        }
    }
}

struct State {
    // Boxed: a map's slots are allocated ahead (up to twice the entries), a box each only
    // per entry.
    nodes: HashMap<u64, Box<Node>>,
    children: HashMap<(u64, String), u64>,
    negative: HashMap<(u64, String), Instant>,
    next_ino: u64,
    /// Directories whose entries changed since their listing was last kept on disk.
    dirty: std::collections::HashSet<u64>,
    /// Directories whose entries this mount changed (wrote, removed, renamed) since this
    /// was last asked: their listing indexes are due.
    changed_here: std::collections::HashSet<u64>,
    /// The nodes this mount wrote lately (what S3 holds of them, or asked to hear it
    /// again): answers asked before are not recorded over them.
    written: RecentWrites<u64>,
    /// The directories whose entries this mount changed lately (made, wrote, removed or
    /// renamed one): a listing asked before is older than the table.
    entries_written: RecentWrites<u64>,
}

impl State {
    /// This mount just changed `dir`'s entries (S3 holds the change).
    fn entries_changed(&mut self, dir: u64) {
        self.changed_here.insert(dir);
        self.entries_written.wrote(dir);
    }

    /// `parent/name` is `ino` from now on.
    fn link(&mut self, parent: u64, name: &str, ino: u64) {
        if let Some(old) = self.children.insert((parent, name.to_owned()), ino)
            && old != ino
            && let Some(p) = self.nodes.get_mut(&parent)
        {
            p.forget_kid(old);
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.kids.get_or_insert_default().insert(ino);
        }
    }

    /// `parent/name` no longer names anything; returns what it named.
    fn unlink(&mut self, parent: u64, name: &str) -> Option<u64> {
        let ino = self.children.remove(&(parent, name.to_owned()))?;
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.forget_kid(ino);
        }
        Some(ino)
    }

    /// Remembers `parent/name` as absent until `until`, within [`MAX_NEGATIVE`] entries.
    fn set_negative(&mut self, parent: u64, name: &str, until: Instant) {
        if self.negative.len() >= MAX_NEGATIVE {
            let now = Instant::now();
            self.negative.retain(|_, t| *t > now);
            if self.negative.len() >= MAX_NEGATIVE {
                self.negative.clear();
            }
        }
        self.negative.insert((parent, name.to_owned()), until);
    }

    /// Removes `ino` — and below it, every entry the kernel holds no reference to and
    /// nothing uses — unless it is referenced, in use (`busy`) or has times to store.
    /// Returns whether it went; what went is added to `gone`.
    fn evict_tree(&mut self, ino: u64, busy: &dyn Fn(u64) -> bool, gone: &mut Vec<u64>) -> bool {
        let Some(node) = self.nodes.get(&ino) else {
            return true;
        };
        if ino == ROOT_INO || node.lookups > 0 || node.pending_times.is_some() || busy(ino) {
            return false;
        }
        let kids: Vec<u64> = node.kids().collect();
        let mut all = true;
        for kid in kids {
            all &= self.evict_tree(kid, busy, gone);
        }
        // A directory whose changed listing is not on disk yet stays until it is.
        if !all || self.dirty.contains(&ino) {
            return false;
        }
        // Its parent's listing may still name its number: whoever hands a listing's entry
        // to the kernel asks `Inodes::listed_ino` for the number the table has now.
        let node = self.nodes.remove(&ino).expect("present above");
        if self.children.get(&(node.parent, node.name.clone())) == Some(&ino) {
            self.unlink(node.parent, &node.name);
        }
        if let Some(p) = self.nodes.get_mut(&node.parent) {
            p.forget_kid(ino);
        }
        gone.push(ino);
        true
    }
}

pub struct Inodes {
    ttl: Duration,
    defaults: Defaults,
    mount_time: SystemTime,
    state: Mutex<State>,
    /// Told of every file whose new version a lookup, listing or HEAD brought in.
    replaced: std::sync::OnceLock<super::KernelSink>,
}

impl Inodes {
    pub fn new(ttl: Duration, defaults: Defaults) -> Self {
        let mut nodes = HashMap::new();
        // The root's marker (the prefix's own key) is read at the first getattr.
        let mut root = Node::new(
            ROOT_INO,
            String::new(),
            String::new(),
            Found::dir(),
            Instant::now(),
        );
        root.lookups = 1;
        nodes.insert(ROOT_INO, root);
        Inodes {
            ttl,
            defaults,
            mount_time: SystemTime::now(),
            state: Mutex::new(State {
                nodes,
                children: HashMap::new(),
                negative: HashMap::new(),
                next_ino: ROOT_INO + 1,
                dirty: Default::default(),
                changed_here: Default::default(),
                written: RecentWrites::new(WRITES_KEPT),
                entries_written: RecentWrites::new(WRITES_KEPT),
            }),
            replaced: Default::default(),
        }
    }

    /// Files found replaced by another client are reported to `sink` from now on.
    pub(super) fn report_replaced(&self, sink: super::KernelSink) {
        let _ = self.replaced.set(sink);
    }

    /// `ino`'s object went from version `old` to `new` (what S3 now says): the kernel's
    /// pages of the old one must go.
    fn learnt(&self, ino: u64, old: &Found, new: &Found) {
        if old.kind != Kind::Dir
            && !old.etag.is_empty()
            && !new.etag.is_empty()
            && old.etag != new.etag
            && let Some(sink) = self.replaced.get()
        {
            sink.send(super::Invalidate::Inode(ino));
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The attributes shown for `found`: what is stored, else the mount's defaults. Without
    /// a stored mtime an object (or a directory's marker) shows its Last-Modified, as s3fs
    /// does; a directory without a marker, the mount time (stable).
    pub fn attr(&self, ino: u64, found: &Found) -> Attr {
        let m = &found.meta;
        let d = &self.defaults;
        let mtime = m.mtime.unwrap_or(match found.kind {
            // No marker, no time: the mount time is a stable stand-in.
            Kind::Dir if found.last_modified == SystemTime::UNIX_EPOCH => self.mount_time,
            _ => found.last_modified,
        });
        let perm = match (found.kind, m.perm()) {
            // Symlinks are always 0777 (Linux ignores their mode).
            (Kind::Symlink, _) => 0o777,
            (_, Some(p)) => p,
            (Kind::Dir, None) => u32::from(d.dir_mode),
            (_, None) => u32::from(d.file_mode),
        };
        Attr {
            ino,
            kind: found.kind,
            size: found.size,
            perm: perm as u16,
            uid: m.uid.unwrap_or(d.uid),
            gid: m.gid.unwrap_or(d.gid),
            mtime,
            atime: m.atime.unwrap_or(mtime),
            ctime: m.ctime.unwrap_or(mtime),
            rdev: m.rdev.unwrap_or(0),
            nlink: if found.kind == Kind::Dir { 2 } else { 1 },
            meta_known: found.meta_known,
        }
    }

    fn info(&self, ino: u64, node: &Node, now: Instant) -> NodeInfo {
        NodeInfo {
            ino,
            parent: node.parent,
            kind: node.found.kind,
            found: node.found.clone(),
            rel: node.rel.clone(),
            etag: node.found.etag.clone(),
            attr: self.attr(ino, &node.found),
            fresh: now < node.expires,
        }
    }

    pub fn get(&self, ino: u64) -> Option<NodeInfo> {
        let state = self.state.lock().unwrap();
        let node = state.nodes.get(&ino)?;
        let mut info = self.info(ino, node, Instant::now());
        let linked =
            ino == ROOT_INO || state.children.get(&(node.parent, node.name.clone())) == Some(&ino);
        if !linked {
            info.attr.nlink = 0;
        }
        Some(info)
    }

    /// The child's node if we have one, fresh or not.
    pub fn child(&self, parent: u64, name: &str) -> Option<NodeInfo> {
        let state = self.state.lock().unwrap();
        let ino = *state.children.get(&(parent, name.to_owned()))?;
        state
            .nodes
            .get(&ino)
            .map(|n| self.info(ino, n, Instant::now()))
    }

    /// Records what this mount knows of `parent/name` (it made it); returns its attributes.
    /// `count_lookup` when the reply hands the kernel a reference (lookup, readdirplus).
    pub fn upsert(&self, parent: u64, name: &str, found: Found, count_lookup: bool) -> Attr {
        self.upsert_answer(parent, name, found, count_lookup, None)
    }

    /// Records what S3 said about `parent/name` to a request sent at `asked` (`None`: what
    /// this mount knows itself) — unless this mount wrote that name's node since — and
    /// returns its attributes. `count_lookup` as for [`Inodes::upsert`].
    pub fn upsert_answer(
        &self,
        parent: u64,
        name: &str,
        found: Found,
        count_lookup: bool,
        asked: Option<Asked>,
    ) -> Attr {
        let mut state = self.state.lock().unwrap();
        let ino = self.upsert_locked_until(
            &mut state,
            parent,
            name,
            found,
            Instant::now() + self.ttl,
            asked,
        );
        let node = state.nodes.get_mut(&ino).expect("just inserted");
        if count_lookup {
            node.lookups += 1;
        }
        self.attr(ino, &node.found)
    }

    fn upsert_locked(&self, state: &mut State, parent: u64, name: &str, found: Found) -> u64 {
        self.upsert_locked_until(state, parent, name, found, Instant::now() + self.ttl, None)
    }

    /// [`Inodes::upsert_locked`], the result trusted until `expires` (now: stale at once),
    /// an answer to a request sent at `asked` ([`Inodes::upsert_answer`]).
    fn upsert_locked_until(
        &self,
        state: &mut State,
        parent: u64,
        name: &str,
        mut found: Found,
        expires: Instant,
        asked: Option<Asked>,
    ) -> u64 {
        let key = (parent, name.to_owned());
        let linked = state.children.get(&key).copied();
        if let (Some(asked), Some(ino)) = (asked, linked)
            && state.written.stale(&ino, asked)
        {
            // This mount wrote it after the question went out: what the node shows is newer.
            return ino;
        }
        state.negative.remove(&key);
        // A listing does not know an object's kind (it needs the metadata): there, only a
        // change between directory and object counts as a change of kind.
        let same_kind = |old: &Found, new: &Found| {
            old.kind == new.kind
                || (!new.meta_known && (old.kind == Kind::Dir) == (new.kind == Kind::Dir))
        };
        if let Some(ino) = linked
            && let Some(node) = state.nodes.get_mut(&ino)
            && same_kind(&node.found, &found)
        {
            // A listing has no user metadata; keep the HEAD's while the object is unchanged.
            // (A listing shows a directory as a bare prefix, without its marker's etag.)
            let bare_prefix = found.kind == Kind::Dir && found.etag.is_empty();
            if !found.meta_known
                && node.found.meta_known
                && (found.etag == node.found.etag || bare_prefix)
            {
                found.kind = node.found.kind;
                found.meta = node.found.meta.clone();
                found.etag = node.found.etag.clone();
                found.meta_known = true;
            }
            self.learnt(ino, &node.found, &found);
            if node.found != found {
                state.dirty.insert(parent);
            }
            node.set_found(found);
            node.expires = expires;
            return ino;
        }
        let parent_rel = state
            .nodes
            .get(&parent)
            .map(|p| p.rel.clone())
            .unwrap_or_default();
        let rel = match found.kind {
            Kind::Dir => format!("{parent_rel}{name}/"),
            _ => format!("{parent_rel}{name}"),
        };
        let ino = state.next_ino;
        state.next_ino += 1;
        state
            .nodes
            .insert(ino, Node::new(parent, name.to_owned(), rel, found, expires));
        state.link(parent, name, ino);
        state.dirty.insert(parent);
        ino
    }

    /// [`Inodes::upsert`] of something seen some time ago (offline): shown, stale at once,
    /// no kernel reference counted.
    pub fn upsert_old(&self, parent: u64, name: &str, found: Found) -> Attr {
        let mut state = self.state.lock().unwrap();
        let ino = self.upsert_locked_until(&mut state, parent, name, found, Instant::now(), None);
        self.attr(ino, &state.nodes[&ino].found)
    }

    /// The node at `rel` (`a/b`, or `a/b/` for a directory), if this mount knows it.
    pub fn find(&self, rel: &str) -> Option<u64> {
        let state = self.state.lock().unwrap();
        let mut ino = ROOT_INO;
        for name in rel
            .trim_end_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
        {
            ino = *state.children.get(&(ino, name.to_owned()))?;
        }
        Some(ino)
    }

    /// What this mount shows of `ino`'s metadata is not what S3 holds (a change made
    /// offline was just replayed onto another version): asked for again when next needed.
    pub fn forget_meta(&self, ino: u64) {
        let mut state = self.state.lock().unwrap();
        // Answers already asked for predate the change that made it unknown.
        state.written.wrote(ino);
        if let Some(n) = state.nodes.get_mut(&ino) {
            n.found.meta_known = false;
            n.expires = Instant::now();
        }
    }

    /// Everything known is stale from now on (back online: S3 may hold something else).
    pub fn expire_all(&self) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        for n in state.nodes.values_mut() {
            n.expires = now;
            if let Some((_, until)) = &mut n.listing {
                *until = now;
            }
        }
        state.negative.clear();
    }

    /// Updates a node from a HEAD of its own key sent at `asked` (not if this mount wrote
    /// the node since: it shows the newer).
    pub fn refresh(&self, ino: u64, found: Found, asked: Asked) -> Option<Attr> {
        let mut state = self.state.lock().unwrap();
        let stale = state.written.stale(&ino, asked);
        let node = state.nodes.get_mut(&ino)?;
        if stale {
            return Some(self.attr(ino, &node.found));
        }
        if node.found.kind != found.kind {
            return None;
        }
        self.learnt(ino, &node.found, &found);
        node.set_found(found);
        node.expires = Instant::now() + self.ttl;
        Some(self.attr(ino, &node.found))
    }

    /// Forces the next use of this node to ask S3 again (e.g. after "object changed").
    pub fn invalidate(&self, ino: u64) {
        let mut state = self.state.lock().unwrap();
        if let Some(n) = state.nodes.get_mut(&ino) {
            n.expires = Instant::now();
            let parent = n.parent;
            Self::expire_listing(&mut state, parent);
        }
    }

    /// Records what this mount just wrote to a node's key, and drops the parent's listing
    /// so the next readdir shows it.
    pub fn set_written(&self, ino: u64, found: Found) -> Option<Attr> {
        let mut state = self.state.lock().unwrap();
        state.written.wrote(ino);
        let node = state.nodes.get_mut(&ino)?;
        node.found = found;
        node.pending_times = None;
        node.expires = Instant::now() + self.ttl;
        let (parent, name) = (node.parent, node.name.clone());
        let attr = self.attr(ino, &node.found);
        state.negative.remove(&(parent, name.clone()));
        state.dirty.insert(parent);
        state.entries_changed(parent);
        Self::put_in_listing(&mut state, parent, &name, &attr);
        Some(attr)
    }

    /// The directories whose entries this mount changed since this was last asked.
    pub fn take_changed_here(&self) -> Vec<u64> {
        self.state.lock().unwrap().changed_here.drain().collect()
    }

    /// The directories whose entries changed since this was last asked.
    pub fn take_dirty(&self) -> Vec<u64> {
        self.state.lock().unwrap().dirty.drain().collect()
    }

    pub fn set_negative(&self, parent: u64, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.set_negative(parent, name, Instant::now() + self.ttl);
    }

    /// How many names are remembered as absent (diagnostics, tests).
    pub fn negative_len(&self) -> usize {
        self.state.lock().unwrap().negative.len()
    }

    /// How many entries the table holds (diagnostics, tests).
    pub fn entries(&self) -> usize {
        self.state.lock().unwrap().nodes.len()
    }

    pub fn is_negative(&self, parent: u64, name: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        let key = (parent, name.to_owned());
        match state.negative.get(&key) {
            Some(&until) if Instant::now() < until => true,
            Some(_) => {
                state.negative.remove(&key);
                false
            }
            None => false,
        }
    }

    /// A symlink's target as read before, if the node is still that version.
    pub fn link_target(&self, ino: u64, etag: &str) -> Option<bytes::Bytes> {
        let state = self.state.lock().unwrap();
        match state.nodes.get(&ino)?.link.as_deref() {
            Some((e, target)) if e == etag => Some(target.clone()),
            _ => None,
        }
    }

    pub fn set_link_target(&self, ino: u64, etag: &str, target: bytes::Bytes) {
        if let Some(n) = self.state.lock().unwrap().nodes.get_mut(&ino) {
            n.link = Some(Box::new((etag.to_owned(), target)));
        }
    }

    /// The name a node was found under.
    pub fn name(&self, ino: u64) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .nodes
            .get(&ino)
            .map(|n| n.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ListPage, ObjectInfo};

    const DEFAULTS: Defaults = Defaults {
        uid: 1000,
        gid: 1000,
        file_mode: 0o644,
        dir_mode: 0o755,
    };

    fn obj(name: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size,
            etag: format!("\"{name}\""),
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            meta: None,
        }
    }

    #[test]
    fn listing_rules() {
        let pages = vec![
            ListPage {
                files: vec![
                    obj("b", 1),
                    obj("a", 2),
                    obj("", 0),
                    obj(&"x".repeat(256), 1),
                ],
                dirs: vec!["a".into(), "".into(), ".".into(), "..".into()],
                next: Some("t".into()),
            },
            ListPage {
                files: vec![obj("c\0", 1), obj("0", 3)],
                dirs: vec!["z".into()],
                next: None,
            },
        ];
        let l = build_listing(&pages);
        let names: Vec<_> = l.iter().map(|(n, f)| (n.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("0", Kind::File),
                ("a", Kind::Dir), // the directory hides object `a`
                ("b", Kind::File),
                ("z", Kind::Dir),
            ]
        );
    }

    /// The model found it: a HEAD of a directory's marker read just before the times written
    /// behind replaced it, and its answer, recorded after, took the times back.
    #[test]
    fn an_answer_asked_before_this_mount_s_write_does_not_take_the_write_back() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let old = Found {
            meta: Meta {
                mode: Some(libc::S_IFREG | 0o644),
                ..Meta::default()
            },
            meta_known: true,
            ..Found::object(&obj("f", 1))
        };
        let f = t.upsert(ROOT_INO, "f", old.clone(), true);
        let tick = || std::thread::sleep(Duration::from_millis(1));
        let asked_before = Asked::now();
        tick();
        let mut new = old.clone();
        new.meta.mode = Some(libc::S_IFREG | 0o600);
        t.set_written(f.ino, new).unwrap();
        tick();
        let asked_after = Asked::now();
        // HEAD, listing and lookup answers asked before the write: the write stays.
        assert_eq!(
            t.refresh(f.ino, old.clone(), asked_before).unwrap().perm,
            0o600
        );
        let listed = t.set_listing(ROOT_INO, vec![("f".into(), old.clone())], asked_before);
        assert_eq!(listed[0].attr.perm, 0o600);
        let looked = t.upsert_answer(ROOT_INO, "f", old.clone(), false, Some(asked_before));
        assert_eq!(looked.perm, 0o600);
        // One asked after it is S3's word (another client's chmod, say).
        assert_eq!(
            t.refresh(f.ino, old.clone(), asked_after).unwrap().perm,
            0o644
        );

        // A directory's times written behind, likewise.
        let d = t.upsert(ROOT_INO, "d", Found::dir(), true);
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let marker = |secs| Found {
            meta: Meta {
                mtime: Some(at(secs)),
                ..Meta::default()
            },
            meta_known: true,
            ..Found::dir()
        };
        let asked_before = Asked::now();
        tick();
        t.set_dir_meta(d.ino, marker(2000).meta, String::new());
        assert_eq!(
            t.refresh(d.ino, marker(1000), asked_before).unwrap().mtime,
            at(2000)
        );
    }

    /// A listing asked before this mount removed a name (or made one) is shown without
    /// the removed name, and not trusted: the next readdir lists again.
    #[test]
    fn a_listing_asked_before_this_mount_changed_the_directory_is_not_trusted() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let listed = |names: &[&str]| -> Vec<(String, Found)> {
            names
                .iter()
                .map(|n| (n.to_string(), Found::object(&obj(n, 1))))
                .collect()
        };
        t.set_listing(ROOT_INO, listed(&["a", "b"]), Asked::now());
        let asked = Asked::now();
        std::thread::sleep(Duration::from_millis(1));
        t.remove(ROOT_INO, "a");
        let shown = t.set_listing(ROOT_INO, listed(&["a", "b"]), asked);
        let names: Vec<&str> = shown.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b"], "a removed name is not brought back");
        assert!(t.child(ROOT_INO, "a").is_none());
        assert!(t.is_negative(ROOT_INO, "a"));
        assert!(
            t.fresh_listing(ROOT_INO).is_none(),
            "listed again next time"
        );
        // One asked after the change is trusted.
        let shown = t.set_listing(ROOT_INO, listed(&["b"]), Asked::now());
        assert_eq!(shown.len(), 1);
        assert!(t.fresh_listing(ROOT_INO).is_some());
    }

    #[test]
    fn inode_numbers_are_stable_and_kind_changes_renumber() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let f = Found::object(&obj("f", 1));
        let a1 = t.upsert(ROOT_INO, "f", f.clone(), true);
        t.forget(a1.ino, 1);
        assert_eq!(t.lookups(a1.ino), 0);
        let a2 = t.upsert(ROOT_INO, "f", Found::object(&obj("f", 9)), true);
        assert_eq!(a1.ino, a2.ino);
        assert_eq!(a2.size, 9);
        let d = t.upsert(ROOT_INO, "f", Found::dir(), true);
        assert_ne!(d.ino, a1.ino);
        assert_eq!(t.get(d.ino).unwrap().rel, "f/");
        let c = t.upsert(d.ino, "g", f, false);
        assert_eq!(t.get(c.ino).unwrap().rel, "f/g");
    }

    #[test]
    fn a_new_name_joins_the_listing_and_a_held_snapshot_stays_as_it_was() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let listed = |l: &[DirEntry]| l.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        let held = t.set_listing(
            ROOT_INO,
            vec![("b".into(), Found::object(&obj("b", 1)))],
            Asked::now(),
        );
        for name in ["c", "a"] {
            t.upsert(ROOT_INO, name, Found::object(&obj(name, 1)), true);
            t.add_to_listing(ROOT_INO, name);
        }
        let now = t.fresh_listing(ROOT_INO).unwrap();
        assert_eq!(
            listed(&now),
            ["a", "b", "c"],
            "sorted, as readdir returns them"
        );
        assert_eq!(
            listed(&held),
            ["b"],
            "an open readdir's snapshot is not changed"
        );
        drop(held);
        t.upsert(ROOT_INO, "d", Found::object(&obj("d", 1)), true);
        t.add_to_listing(ROOT_INO, "d");
        assert_eq!(listed(&now), ["a", "b", "c"]);
        assert_eq!(
            listed(&t.fresh_listing(ROOT_INO).unwrap()),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn head_mtime_survives_a_listing_of_the_same_version() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let mut o = obj("f", 1);
        let m = SystemTime::UNIX_EPOCH + Duration::new(42, 7);
        let meta = crate::fs::meta::Meta {
            mtime: Some(m),
            ..Default::default()
        };
        o.meta = Some(meta.to_user());
        t.upsert(ROOT_INO, "f", Found::object(&o), true);
        // As `build_listing` makes them: no user metadata.
        let listed = Found::object;
        let l = t.set_listing(
            ROOT_INO,
            vec![("f".into(), listed(&obj("f", 1)))],
            Asked::now(),
        );
        assert_eq!(l[0].attr.mtime, m);
        assert!(l[0].attr.meta_known);
        let mut changed = obj("f", 1);
        changed.etag = "\"other\"".into();
        let l = t.set_listing(ROOT_INO, vec![("f".into(), listed(&changed))], Asked::now());
        assert_eq!(l[0].attr.mtime, changed.last_modified);
        assert!(!l[0].attr.meta_known, "a new version's metadata is unknown");
    }

    #[test]
    fn rename_moves_subtrees_and_keeps_numbers() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let d = t.upsert(ROOT_INO, "d", Found::dir(), true);
        let f = t.upsert(d.ino, "f", Found::object(&obj("f", 1)), true);
        let old = t.upsert(ROOT_INO, "e", Found::object(&obj("e", 1)), true);
        t.rename(ROOT_INO, "d", ROOT_INO, "e");
        assert_eq!(t.child(ROOT_INO, "e").unwrap().ino, d.ino);
        assert!(t.child(ROOT_INO, "d").is_none());
        assert!(t.is_negative(ROOT_INO, "d"));
        assert_eq!(t.get(f.ino).unwrap().rel, "e/f");
        assert_eq!(t.get(d.ino).unwrap().rel, "e/");
        assert_ne!(old.ino, d.ino);
        t.remove(d.ino, "f");
        assert!(t.child(d.ino, "f").is_none());
    }

    #[test]
    fn forgotten_entries_go_and_referenced_ones_keep_their_numbers() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let idle = |_: u64| false;
        let d = t.upsert(ROOT_INO, "d", Found::dir(), true);
        let f = t.upsert(d.ino, "f", Found::object(&obj("f", 1)), true);
        // Two references: one forget keeps it, under the same number.
        assert_eq!(
            t.upsert(d.ino, "f", Found::object(&obj("f", 1)), true).ino,
            f.ino
        );
        assert_eq!(t.forget(f.ino, 1), 1);
        assert!(t.evict(f.ino, &idle).is_empty());
        assert_eq!(t.child(d.ino, "f").unwrap().ino, f.ino);
        // A listing brings names the kernel was never handed.
        let listed: Vec<(String, Found)> = (0..100)
            .map(|i| (format!("n{i}"), Found::object(&obj("n", 1))))
            .collect();
        t.set_listing(d.ino, listed, Asked::now());
        assert_eq!(
            t.entries(),
            1 + 1 + 1 + 100,
            "root, d, f and the listed names"
        );
        // The directory is forgotten while `f` is still referenced: it stays (a child
        // holds it), the unreferenced listed names go, and so does its listing.
        assert_eq!(t.forget(d.ino, 1), 0);
        let gone = t.evict(d.ino, &idle);
        assert_eq!(gone.len(), 100, "n0..n99, not f");
        assert!(t.get(d.ino).is_some());
        // Its listing stays (what is shown offline); its entries' numbers are asked anew.
        let listed = t.fresh_listing(d.ino).unwrap();
        let n0 = listed.iter().find(|e| e.name == "n0").unwrap();
        assert!(t.get(n0.ino).is_none());
        assert_ne!(t.listed_ino(d.ino, n0), n0.ino);
        t.take_dirty();
        // In use (open, being written): kept while busy.
        assert_eq!(t.forget(f.ino, 1), 0);
        assert!(t.evict(f.ino, &|i| i == f.ino).is_empty());
        assert_eq!(t.get(f.ino).unwrap().rel, "d/f");
        // Released: it goes, and its forgotten parent with it.
        let gone = t.evict(f.ino, &idle);
        assert!(gone.contains(&f.ino) && gone.contains(&d.ino), "{gone:?}");
        assert_eq!(t.entries(), 1, "only the root");
        // Looked up again: a new number, never an old one reused.
        let again = t.upsert(ROOT_INO, "d", Found::dir(), true);
        assert!(again.ino > f.ino);
        // The root never goes.
        assert!(t.evict(ROOT_INO, &idle).is_empty());
    }

    #[test]
    fn a_directory_with_pending_times_or_an_unlinked_file_held_open_stays() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let d = t.upsert(ROOT_INO, "d", Found::dir(), false);
        t.touch_dir(d.ino, SystemTime::now());
        assert!(
            t.evict(d.ino, &|_| false).is_empty(),
            "times still to store"
        );
        let f = t.upsert(ROOT_INO, "f", Found::object(&obj("f", 1)), true);
        t.remove(ROOT_INO, "f");
        assert!(t.evict(f.ino, &|_| false).is_empty(), "the kernel holds it");
        t.forget(f.ino, 1);
        assert_eq!(t.evict(f.ino, &|_| false), vec![f.ino]);
    }

    #[test]
    fn an_entry_forgotten_after_its_listing_was_taken_is_handed_over_anew() {
        let t = Inodes::new(Duration::from_secs(5), DEFAULTS);
        let snapshot = t.set_listing(
            ROOT_INO,
            vec![("a".into(), Found::object(&obj("a", 3)))],
            Asked::now(),
        );
        let a = snapshot[0].clone();
        assert_eq!(t.listed_ino(ROOT_INO, &a), a.ino);
        t.add_lookup(a.ino);
        t.forget(a.ino, 1);
        assert_eq!(t.evict(a.ino, &|_| false), vec![a.ino]);
        let now = t.listed_ino(ROOT_INO, &a);
        assert_ne!(now, a.ino);
        let node = t.get(now).unwrap();
        assert_eq!(
            (node.rel.as_str(), node.attr.size, node.fresh),
            ("a", 3, false)
        );
        assert_eq!(t.listed_ino(ROOT_INO, &a), now, "the name's entry now");
    }

    #[test]
    fn the_negative_cache_is_bounded() {
        let t = Inodes::new(Duration::from_secs(60), DEFAULTS);
        for i in 0..MAX_NEGATIVE + 10 {
            t.set_negative(ROOT_INO, &format!("x{i}"));
        }
        assert!(t.negative_len() <= MAX_NEGATIVE, "{}", t.negative_len());
        assert!(t.is_negative(ROOT_INO, &format!("x{}", MAX_NEGATIVE + 9)));
    }

    #[test]
    fn negative_entries_expire() {
        // Kept for the TTL (an hour cannot pass during the test)...
        let t = Inodes::new(Duration::from_secs(3600), DEFAULTS);
        t.set_negative(ROOT_INO, "x");
        assert!(t.is_negative(ROOT_INO, "x"));
        // ... and gone after it: waiting past a 1 ms TTL is a bound, not a race.
        let t = Inodes::new(Duration::from_millis(1), DEFAULTS);
        t.set_negative(ROOT_INO, "x");
        std::thread::sleep(Duration::from_millis(2));
        assert!(!t.is_negative(ROOT_INO, "x"));
    }
}
